"""A float64 numpy oracle for the trajectory statistics (independent of lens_stats)."""

from __future__ import annotations

import numpy as np

# The tiny tokenizer's vocabulary (conftest.tiny_tokenizer): GPT-2 style markers (Ġ = leading
# space, Ċ = newline) and one long token.
TINY_VOCAB = [
    "<unk>",
    "Ġthe",
    "Ġcat",
    "Ċ",
    "ThisIsALongToken",
    "a",
    "b",
    "Ġsat",
    "Ġon",
    "Ġmat",
    ".",
    "!",
]


def _p(lp: np.ndarray) -> np.ndarray:
    return np.exp(lp.astype(np.float64))


def entropy(lp: np.ndarray) -> np.ndarray:
    lp = lp.astype(np.float64)
    p = np.exp(lp)
    return -np.where(p > 0, p * lp, 0.0).sum(-1)


def target_log_prob(lp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``lp`` (*B, R, T, V), ``targets`` (*B, T) -> (*B, R, T)."""
    idx = np.broadcast_to(targets[..., None, :], lp.shape[:-1])[..., None]
    return np.take_along_axis(lp.astype(np.float64), idx, axis=-1)[..., 0]


def rank(lp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    at = target_log_prob(lp, targets)
    return 1 + (lp.astype(np.float64) > at[..., None]).sum(-1)


def kl(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    lp, lq = lp.astype(np.float64), lq.astype(np.float64)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        return np.where(p > 0, p * (lp - lq), 0.0).sum(-1)


def forward_kl(lp: np.ndarray) -> np.ndarray:
    """KL(model row ‖ every row)."""
    model = np.broadcast_to(lp[..., -1:, :, :], lp.shape)
    return kl(model, lp)


def js(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    p, q = _p(lp), _p(lq)
    log_m = np.log((p + q) / 2)
    return 0.5 * kl(lp, log_m) + 0.5 * kl(lq, log_m)


def symmetric_kl(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    return 0.5 * kl(lp, lq) + 0.5 * kl(lq, lp)


def total_variation(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(_p(lp) - _p(lq)).sum(-1)


def max_abs_diff(lp: np.ndarray, lq: np.ndarray) -> np.ndarray:
    return np.abs(_p(lp) - _p(lq)).max(-1)


def max_probability(lp: np.ndarray) -> np.ndarray:
    return np.exp(lp.astype(np.float64).max(-1))


def top_k(lp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Descending probability, ties to the lower id."""
    order = np.argsort(-lp.astype(np.float64), axis=-1, kind="stable")[..., :k]
    return order, np.take_along_axis(_p(lp), order, axis=-1)


def top_k_delta(lp: np.ndarray, lq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    delta = _p(lq) - _p(lp)
    order = np.argsort(-np.abs(delta), axis=-1, kind="stable")[..., :k]
    return order, np.take_along_axis(delta, order, axis=-1)


def batch_mean(cells: np.ndarray, n_batch_axes: int) -> np.ndarray:
    return cells.mean(axis=tuple(range(n_batch_axes))) if n_batch_axes else cells


def random_log_probs(
    rng: np.random.Generator, shape: tuple[int, ...], *, scale: float = 2.0
) -> np.ndarray:
    """Normalised float32 log-probabilities of random logits (normalised in float64)."""
    logits = rng.normal(scale=scale, size=shape)
    logits -= logits.max(-1, keepdims=True)
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return lp.astype(np.float32)


def log_probs_from_probs(probs: list | np.ndarray) -> np.ndarray:
    """float32 log-probabilities of explicit probability rows (zeros give -inf)."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)
