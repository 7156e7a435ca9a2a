"""A plain float64 numpy oracle for every function of the ``tuned_lens.lens_stats`` contract.

Written directly from the definitions, with full-size temporaries and no tricks, so that it is
easy to trust. Every function takes float64 arrays (callers de-quantise float16/bfloat16 inputs
first) whose last axis is the vocabulary V; every other axis is a row axis.

Conventions shared with the contract:
  * p = exp(lp); a term with p = 0 (lp = -inf) contributes 0 (0 * log 0 = 0).
  * KL(p || q) is +inf wherever q = 0 < p.
  * A row holding a NaN gives NaN for that row's float statistics.
  * rank = 1 + #{v : lp[v] > lp[target]}; top-k ties go to the lower token id.
"""

from __future__ import annotations

import numpy as np

LN2 = float(np.log(2.0))


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _row_has_nan(*arrays: np.ndarray) -> np.ndarray:
    """(...,) bool: rows where any input holds a NaN."""
    mask = np.isnan(arrays[0]).any(axis=-1)
    for a in arrays[1:]:
        mask = mask | np.isnan(a).any(axis=-1)
    return mask


def _with_nan_rows(values: np.ndarray, nan_rows: np.ndarray) -> np.ndarray:
    return np.where(nan_rows, np.nan, values)


def logsumexp(logits: np.ndarray) -> np.ndarray:
    """log Σ_v exp(x_v), shape (...,); -inf for an all -inf row."""
    x = _f64(logits)
    m = np.max(x, axis=-1, keepdims=True)
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(np.sum(np.exp(x - m_safe), axis=-1)) + m_safe[..., 0]
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """x - logsumexp(x), shape (..., V)."""
    x = _f64(logits)
    return x - logsumexp(x)[..., None]


def _plogp_terms(lp: np.ndarray) -> np.ndarray:
    """p * lp with the 0 * log 0 = 0 convention (NaN stays NaN)."""
    with np.errstate(invalid="ignore"):
        return np.where(lp == -np.inf, 0.0, np.exp(lp) * lp)


def entropy(log_probs: np.ndarray) -> np.ndarray:
    """-Σ p log p, shape (...,)."""
    lp = _f64(log_probs)
    return -np.sum(_plogp_terms(lp), axis=-1)


def entropy_from_logits(logits: np.ndarray) -> np.ndarray:
    """Entropy of softmax(logits), shape (...,)."""
    return entropy(log_softmax(logits))


def max_probability(
    log_probs: np.ndarray, *, from_logits: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(exp(max lp), first argmax), shapes (...,) and (...,)."""
    lp = log_softmax(log_probs) if from_logits else _f64(log_probs)
    ids = np.argmax(lp, axis=-1)
    prob = np.exp(np.max(lp, axis=-1))
    return _with_nan_rows(prob, _row_has_nan(lp)), ids.astype(np.int64)


def _broadcast_targets(targets: np.ndarray, rows_shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(targets).astype(np.int64), rows_shape)


def target_log_prob(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """lp[target], shape (...,)."""
    lp = _f64(log_probs)
    t = _broadcast_targets(targets, lp.shape[:-1])
    return np.take_along_axis(lp, t[..., None], axis=-1)[..., 0]


def cross_entropy(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-lp[target], shape (...,)."""
    return -target_log_prob(log_probs, targets)


def log_prob_diff(
    log_probs: np.ndarray, targets: np.ndarray, anti_targets: np.ndarray
) -> np.ndarray:
    """lp[target] - lp[anti_target], shape (...,)."""
    return target_log_prob(log_probs, targets) - target_log_prob(log_probs, anti_targets)


def target_rank(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1 + #{v : lp[v] > lp[target]}, int64 shape (...,)."""
    lp = _f64(log_probs)
    at_target = target_log_prob(lp, targets)
    return 1 + np.sum(lp > at_target[..., None], axis=-1).astype(np.int64)


def kl_divergence(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p || q) = Σ p (lp - lq), +inf where q = 0 < p; shape (...,)."""
    lp, lq = _f64(log_p), _f64(log_q)
    with np.errstate(invalid="ignore"):
        terms = np.where(lp == -np.inf, 0.0, np.exp(lp) * (lp - lq))
    out = np.sum(terms, axis=-1)
    q_zero_p_positive = ((lq == -np.inf) & (lp > -np.inf)).any(axis=-1)
    out = np.where(q_zero_p_positive, np.inf, out)
    return _with_nan_rows(out, _row_has_nan(lp, lq))


def forward_kl(log_probs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """KL(reference || row) per layer: log_probs (..., L, T, V), reference (..., T, V)."""
    lp = _f64(log_probs)
    ref = np.broadcast_to(_f64(reference)[..., None, :, :], lp.shape)
    return kl_divergence(ref, lp)


def js_divergence(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """The true Jensen-Shannon divergence ½KL(p||m) + ½KL(q||m), m = (p+q)/2; in [0, ln 2]."""
    lp, lq = _f64(log_p), _f64(log_q)
    p, q = np.exp(lp), np.exp(lq)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_m = np.log((p + q) / 2.0)
        p_terms = np.where(lp == -np.inf, 0.0, p * (lp - log_m))
        q_terms = np.where(lq == -np.inf, 0.0, q * (lq - log_m))
    out = 0.5 * np.sum(p_terms, axis=-1) + 0.5 * np.sum(q_terms, axis=-1)
    return _with_nan_rows(out, _row_has_nan(lp, lq))


def symmetric_kl(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """½KL(p||q) + ½KL(q||p), shape (...,)."""
    return 0.5 * kl_divergence(log_p, log_q) + 0.5 * kl_divergence(log_q, log_p)


def total_variation(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """½ Σ |p - q|, shape (...,)."""
    lp, lq = _f64(log_p), _f64(log_q)
    return 0.5 * np.sum(np.abs(np.exp(lp) - np.exp(lq)), axis=-1)


def max_abs_diff(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """max_v |p - q|, shape (...,)."""
    lp, lq = _f64(log_p), _f64(log_q)
    return np.max(np.abs(np.exp(lp) - np.exp(lq)), axis=-1)


def _top_k_by(key: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest keys per row, descending, ties to the lower id: (..., k)."""
    # A stable sort of -key keeps equal keys in ascending id order.
    order = np.argsort(-key, axis=-1, kind="stable")
    return order[..., :k].astype(np.int64)


def top_k(log_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (..., k), probs (..., k)) by descending probability."""
    lp = _f64(log_probs)
    p = np.exp(lp)
    ids = _top_k_by(p, k)
    return ids, np.take_along_axis(p, ids, axis=-1)


def top_k_delta(log_p: np.ndarray, log_q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (..., k), q - p at those ids (..., k)) ranked by |q - p| descending."""
    delta = np.exp(_f64(log_q)) - np.exp(_f64(log_p))
    ids = _top_k_by(np.abs(delta), k)
    return ids, np.take_along_axis(delta, ids, axis=-1)


def marginal_sums(log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(Σ_rows p (V,), Σ_rows lp (V,), number of rows)."""
    lp = _f64(log_probs)
    v = lp.shape[-1]
    rows = lp.reshape(-1, v)
    return np.exp(rows).sum(axis=0), rows.sum(axis=0), rows.shape[0]
