"""Divergences from logits: true Jensen–Shannon, its metric square root, and KL."""

import math

import pytest
import torch
from torch.distributions import Categorical
from torch.distributions import kl_divergence as dist_kl
from tuned_lens.stats import js_distance, js_divergence, kl_divergence, sqrtmh


def _reference_js(logit_p: torch.Tensor, logit_q: torch.Tensor) -> torch.Tensor:
    p = Categorical(logits=logit_p)
    q = Categorical(logits=logit_q)
    m = Categorical(probs=0.5 * (p.probs + q.probs))
    return 0.5 * (dist_kl(p, m) + dist_kl(q, m))


def test_js_matches_torch_distributions_and_is_symmetric():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 10, generator=gen, dtype=torch.float64) * 3
    b = torch.randn(500, 10, generator=gen, dtype=torch.float64) * 3
    js_ab = js_divergence(a, b)
    torch.testing.assert_close(js_ab, _reference_js(a, b), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(js_ab, js_divergence(b, a), rtol=0, atol=1e-14)


def test_js_is_bounded_by_ln2_even_for_disjoint_supports():
    a = torch.tensor([[100.0, -100.0], [0.0, 0.0]])
    b = torch.tensor([[-100.0, 100.0], [0.0, 0.0]])
    js = js_divergence(a, b)
    assert js[0].item() == pytest.approx(math.log(2), abs=1e-6)
    assert js[1].item() == pytest.approx(0.0, abs=1e-7)
    gen = torch.Generator().manual_seed(1)
    many = js_divergence(
        torch.randn(2000, 5, generator=gen) * 20, torch.randn(2000, 5, generator=gen) * 20
    )
    assert bool((many >= 0).all()) and bool((many <= math.log(2)).all())


def test_js_distance_triangle_inequality_on_random_triples():
    gen = torch.Generator().manual_seed(2)
    p, q, r = (torch.randn(1000, 3, generator=gen, dtype=torch.float64) * 2 for _ in range(3))
    lhs = js_distance(p, r)
    rhs = js_distance(p, q) + js_distance(q, r)
    assert bool((lhs <= rhs + 1e-12).all())


def test_kl_matches_torch_distributions_and_handles_zero_mass():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(100, 7, generator=gen, dtype=torch.float64)
    b = torch.randn(100, 7, generator=gen, dtype=torch.float64)
    expected = dist_kl(Categorical(logits=a), Categorical(logits=b))
    torch.testing.assert_close(kl_divergence(a, b), expected, rtol=1e-10, atol=1e-12)
    # P puts no mass on the last outcome: that term is 0, not NaN.
    p = torch.tensor([0.0, 0.0, -math.inf])
    q = torch.tensor([0.0, 1.0, 2.0])
    value = kl_divergence(p, q)
    assert torch.isfinite(value)
    assert kl_divergence(q, p).item() == math.inf


def test_half_precision_inputs_are_computed_in_float32_with_finite_gradients():
    gen = torch.Generator().manual_seed(4)
    a32 = torch.randn(8, 50, generator=gen) * 4
    b32 = torch.randn(8, 50, generator=gen) * 4
    a = a32.to(torch.bfloat16).requires_grad_(True)
    b = b32.to(torch.bfloat16)
    js = js_divergence(a, b)
    assert js.dtype == torch.float32
    torch.testing.assert_close(js, js_divergence(a32.to(torch.bfloat16).float(), b.float()))
    js.sum().backward()
    assert a.grad is not None and bool(torch.isfinite(a.grad.float()).all())
    assert kl_divergence(a.detach().half(), b.half()).dtype == torch.float32


def test_dim_argument_and_shape_validation():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(4, 6, 3, generator=gen)
    b = torch.randn(4, 6, 3, generator=gen)
    torch.testing.assert_close(
        js_divergence(a, b, dim=1), js_divergence(a.transpose(1, 2), b.transpose(1, 2))
    )
    with pytest.raises(ValueError, match="same shape"):
        kl_divergence(a, b[:, :, :2])
    with pytest.raises(TypeError):
        js_divergence(torch.ones(3, dtype=torch.int64), torch.ones(3, dtype=torch.int64))


def test_sqrtmh_squares_back_and_clamps_negative_eigenvalues():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(5, 20, generator=gen)
    psd = x.T @ x  # rank 5: many eigenvalues round to tiny negatives
    root = sqrtmh(psd)
    assert root.dtype == torch.float32
    torch.testing.assert_close(root @ root, psd, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(root, root.T)
    with pytest.raises(ValueError):
        sqrtmh(torch.ones(3, 4))
