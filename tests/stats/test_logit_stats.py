"""LogitStats: float64 streaming sums through the Rust core, merging, serialisation, Dirichlet MLE."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.distributions import Dirichlet, kl_divergence
from tuned_lens.stats import LogitStats
from tuned_lens.stats.logit_stats import _torch_marginal_sums


def _numpy_oracle(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Column sums of p and log p computed in float64 numpy."""
    x = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return np.exp(log_probs).sum(axis=0), log_probs.sum(axis=0), x.shape[0]


def _log_dirichlet_samples(concentration, n, seed):
    rng = np.random.default_rng(seed)
    samples = rng.dirichlet(np.asarray(concentration, dtype=np.float64), size=n)
    log_samples = np.log(np.maximum(samples, 1e-300))
    # A random constant per row: the statistics must not depend on the logits' offset.
    return torch.from_numpy(log_samples + rng.standard_normal((n, 1)) * 5)


@pytest.mark.parametrize(
    "concentration",
    [[1.0, 1.0, 1.0], [0.5, 2.0, 4.0, 1.0], [30.0, 60.0, 90.0]],
    ids=["uniform", "skewed", "concentrated"],
)
def test_mle_recovers_a_known_dirichlet(concentration):
    stats = LogitStats()
    for seed in (0, 1):  # two batches of 10,000, as in the original test
        stats.update(_log_dirichlet_samples(concentration, 10_000, seed).float().numpy())
    assert stats.n == 20_000
    fit = stats.mle()
    truth = Dirichlet(torch.tensor(concentration, dtype=torch.float64))
    assert kl_divergence(truth, fit).item() < 1e-3
    torch.testing.assert_close(fit.concentration, truth.concentration, rtol=0.05, atol=0.0)


def test_mle_reaches_a_stationary_point_of_the_likelihood():
    stats = LogitStats()
    stats.update(_log_dirichlet_samples([0.05] * 200, 4000, 3).float())
    alpha = stats.mle(tol=1e-10).concentration
    gradient = torch.digamma(alpha.sum()) - torch.digamma(alpha) + stats.sufficient_stats
    assert gradient.abs().max().item() < 1e-6


def test_rust_path_matches_float64_numpy_oracle():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((3, 7, 300)) * 4).astype(np.float32)
    stats = LogitStats()
    stats.update(logits)
    sum_probs, sum_log_probs, n = _numpy_oracle(logits)
    assert stats.n == n == 21
    np.testing.assert_allclose(stats.sum_probs.numpy(), sum_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.sum_log_probs.numpy(), sum_log_probs, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(stats.marginal_probs.sum().item(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_cpu_tensors_of_every_float_dtype(dtype):
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(5, 4, 64, generator=gen) * 3).to(dtype)
    stats = LogitStats()
    stats.update(logits)
    sum_probs, sum_log_probs, _ = _numpy_oracle(logits.double().numpy())
    np.testing.assert_allclose(stats.sum_probs.numpy(), sum_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.sum_log_probs.numpy(), sum_log_probs, rtol=1e-5, atol=1e-4)


def test_assume_normalized_and_reused_buffer():
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((40, 32)) * 2).astype(np.float32)
    log_probs = torch.log_softmax(torch.from_numpy(logits).double(), -1).float()
    from_logits, from_log_probs = LogitStats(), LogitStats()
    from_logits.update(logits[:30])
    from_logits.update(logits[30:])  # smaller batch: the buffer from the first call is reused
    from_log_probs.update(log_probs, assume_normalized=True)
    torch.testing.assert_close(
        from_logits.sum_probs, from_log_probs.sum_probs, rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        from_logits.sum_log_probs, from_log_probs.sum_log_probs, rtol=1e-5, atol=1e-4
    )


def test_torch_path_matches_rust_path():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 10, 100, generator=gen) * 3
    rust = LogitStats()
    rust.update(logits)
    sum_probs, sum_log_probs = _torch_marginal_sums(logits, assume_normalized=False)
    torch.testing.assert_close(sum_probs, rust.sum_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sum_log_probs, rust.sum_log_probs, rtol=1e-5, atol=1e-4)
    # What a CUDA batch runs: the torch twin, here on the CPU.
    from tuned_lens.lens_stats import _torch as twin

    twin_probs, twin_log_probs, _ = twin.marginal_sums(twin.log_softmax(logits))
    torch.testing.assert_close(twin_probs, rust.sum_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(twin_log_probs, rust.sum_log_probs, rtol=1e-5, atol=1e-4)


def test_merging_partial_statistics_equals_one_pass():
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal((300, 50)) * 3).astype(np.float32)
    whole = LogitStats()
    whole.update(logits)
    parts = [LogitStats() for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(logits, [17, 200])):
        part.update(chunk)
    merged = parts[0] + parts[1] + parts[2]
    assert merged.n == whole.n == 300
    torch.testing.assert_close(merged.sum_probs, whole.sum_probs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.sum_log_probs, whole.sum_log_probs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(merged.mle().concentration, whole.mle().concentration)
    # Merging with empty statistics changes nothing; in-place merging works too.
    empty = LogitStats()
    assert (empty + whole).n == 300
    empty += whole
    torch.testing.assert_close(empty.marginal_probs, whole.marginal_probs)


def test_constructor_honours_n_when_merging():
    probs = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    logs = probs.log()
    ten = LogitStats(n=10, marginal_probs=probs, sufficient_stats=logs)
    one = LogitStats(n=30, marginal_probs=torch.tensor([0.1, 0.1, 0.8]), sufficient_stats=logs)
    merged = ten.merge(one)
    assert merged.n == 40
    expected = (10 * probs + 30 * torch.tensor([0.1, 0.1, 0.8], dtype=torch.float64)) / 40
    torch.testing.assert_close(merged.marginal_probs, expected)
    with pytest.raises(ValueError, match="n must be a positive"):
        LogitStats(marginal_probs=probs, sufficient_stats=logs)
    with pytest.raises(ValueError, match="together"):
        LogitStats(n=3, marginal_probs=probs)


def test_serialisation_round_trips_through_json_and_safetensors(tmp_path):
    rng = np.random.default_rng(5)
    stats = LogitStats()
    stats.update((rng.standard_normal((20, 9)) * 2).astype(np.float32))
    restored = LogitStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert restored.n == stats.n
    assert torch.equal(restored.sum_probs, stats.sum_probs)
    assert torch.equal(restored.sum_log_probs, stats.sum_log_probs)
    save_file(stats.state_dict(), tmp_path / "stats.safetensors")
    loaded = LogitStats.from_state_dict(load_file(tmp_path / "stats.safetensors"))
    assert loaded.n == stats.n and torch.equal(loaded.sum_probs, stats.sum_probs)
    assert LogitStats.from_state_dict(LogitStats().state_dict()).n == 0


def test_validation_errors():
    stats = LogitStats()
    with pytest.raises(ValueError, match="empty"):
        stats.mle()
    stats.update(np.zeros((2, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="vocabulary of 6"):
        stats.update(np.zeros((2, 6), dtype=np.float32))
    with pytest.raises(TypeError):
        stats.update(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="vocabulary"):
        stats.merge(
            LogitStats(n=1, marginal_probs=torch.ones(4) / 4, sufficient_stats=torch.zeros(4))
        )
    zero_mass = LogitStats()
    zero_mass.update(torch.tensor([[0.0, -torch.inf]]), assume_normalized=True)
    with pytest.raises(ValueError, match="non-finite"):
        zero_mass.mle()
