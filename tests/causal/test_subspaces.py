"""Subspace ablation and derangements."""

import pytest
import torch
from tuned_lens.causal import derange, remove_subspace, sample_derangement

_SIZES = [(d, k) for d in (1, 101, 301, 601) for k in (1, 11, 41) if k <= d]


@pytest.mark.parametrize(("d", "k"), _SIZES)
def test_zero_and_mean_ablation_properties_in_float64(d, k):
    gen = torch.Generator().manual_seed(d * 1000 + k)
    u = torch.randn(64, d, generator=gen, dtype=torch.float64)
    A = torch.randn(d, k, generator=gen, dtype=torch.float64)

    zeroed = remove_subspace(u, A, mode="zero")
    torch.testing.assert_close(
        zeroed @ A, torch.zeros(64, k, dtype=torch.float64), atol=1e-9, rtol=0
    )

    meaned = remove_subspace(u, A, mode="mean")
    expected = (u @ A).mean(dim=0, keepdim=True).expand(64, k)
    torch.testing.assert_close(meaned @ A, expected, atol=1e-9, rtol=1e-9)

    # The orthogonal complement is untouched.
    q, _ = torch.linalg.qr(A)
    rest = torch.eye(d, dtype=torch.float64) - q @ q.T
    torch.testing.assert_close(zeroed @ rest, u @ rest, atol=1e-9, rtol=1e-9)


def test_orthonormal_flag_and_rank_deficient_subspace():
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(10, 30, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(30, 4, generator=gen, dtype=torch.float64))
    torch.testing.assert_close(
        remove_subspace(u, q, "zero", orthonormal=True), remove_subspace(u, q, "zero")
    )
    duplicated = torch.cat([q, q[:, :1] * 2.0], dim=1)  # 5 columns spanning 4 dimensions
    torch.testing.assert_close(
        remove_subspace(u, duplicated, "zero"), remove_subspace(u, q, "zero")
    )


def test_resample_ablation_takes_components_from_other_rows():
    gen = torch.Generator().manual_seed(8)
    u = torch.randn(2, 3, 16, generator=gen, dtype=torch.float64)  # leading axes flattened
    A = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    out = remove_subspace(u, A, mode="resample", generator=torch.Generator().manual_seed(0))
    assert out.shape == u.shape
    before = (u.reshape(-1, 16) @ A).numpy().round(9).tolist()
    after = (out.reshape(-1, 16) @ A).numpy().round(9).tolist()
    assert sorted(before) == sorted(after)
    assert all(a != b for a, b in zip(before, after))


def test_remove_subspace_validation():
    with pytest.raises(ValueError, match="mode"):
        remove_subspace(torch.ones(3, 4), torch.ones(4, 1), mode="median")
    with pytest.raises(ValueError, match="same d"):
        remove_subspace(torch.ones(3, 4), torch.ones(5, 1))


@pytest.mark.parametrize("n", [2, 3, 5, 50])
def test_derangements_have_no_fixed_points(n):
    gen = torch.Generator().manual_seed(n)
    for _ in range(50):
        perm = sample_derangement(n, generator=gen)
        assert sorted(perm.tolist()) == list(range(n))
        assert bool((perm != torch.arange(n)).all())


def test_derange_moves_every_row_and_rejects_tiny_inputs():
    batch = torch.arange(20.0).reshape(10, 2)
    shuffled = derange(batch, generator=torch.Generator().manual_seed(0))
    assert sorted(shuffled[:, 0].tolist()) == batch[:, 0].tolist()
    assert bool((shuffled[:, 0] != batch[:, 0]).all())
    for bad in (0, 1):
        with pytest.raises(ValueError, match="n >= 2"):
            sample_derangement(bad)
    with pytest.raises(ValueError):
        derange(torch.ones(1, 3))
