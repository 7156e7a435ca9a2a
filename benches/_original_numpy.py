"""The ORIGINAL library's statistic formulas, in numpy, with their full-size temporaries.

The baseline the suite compares against: what ``PredictionTrajectory`` computes per call
(reference-behaviour §3.3–3.4 and the perf notes), written from those descriptions. Every
function materialises what the original materialises: ``np.exp(log_probs)`` for probabilities,
an ``argpartition`` index array plus a sort of the k candidates for top-k, two full ``argsort``
passes for the rank. Inputs are float32 numpy arrays (L, T, V); targets (T,) broadcast over L.

Where the original has no such statistic (the true Jensen-Shannon divergence, the true total
variation, ``log_softmax`` into a buffer), the same style is used: plain numpy with its temporaries.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """x - max - log Σ exp(x - max): two full-size temporaries plus the result."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def entropy(log_probs: np.ndarray) -> np.ndarray:
    """-Σ exp(lp) · lp (the original; NaN for rows holding an exact -inf)."""
    return -np.sum(np.exp(log_probs) * log_probs, axis=-1)


def entropy_from_logits(logits: np.ndarray) -> np.ndarray:
    return entropy(log_softmax(logits))


def max_probability(log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """exp(max lp) and the argmax (the original labels cells with the top token too)."""
    return np.exp(log_probs.max(axis=-1)), log_probs.argmax(axis=-1)


def _targets_for(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return np.broadcast_to(targets, log_probs.shape[:-1])[..., None]


def cross_entropy(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return -np.take_along_axis(log_probs, _targets_for(log_probs, targets), axis=-1)[..., 0]


def target_rank(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Double argsort of -lp (int64 index arrays of the full size), then the target's entry."""
    ranks = np.argsort(np.argsort(-log_probs, axis=-1), axis=-1) + 1
    return np.take_along_axis(ranks, _targets_for(log_probs, targets), axis=-1)[..., 0]


def forward_kl(log_probs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Σ p_ref (lp_ref - lp) with the reference broadcast over the layers."""
    return np.sum(np.exp(reference) * (reference - log_probs), axis=-1)


def kl_divergence(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def symmetric_kl(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """The original's "js_divergence": ½KL(p‖q) + ½KL(q‖p)."""
    return 0.5 * kl_divergence(log_p, log_q) + 0.5 * kl_divergence(log_q, log_p)


def js_divergence(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """The true Jensen-Shannon divergence, written in the original's style."""
    p, q = np.exp(log_p), np.exp(log_q)
    log_m = np.log(0.5 * (p + q))
    return 0.5 * np.sum(p * (log_p - log_m), axis=-1) + 0.5 * np.sum(q * (log_q - log_m), axis=-1)


def total_variation(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """The true total variation ½Σ|p - q|."""
    return 0.5 * np.sum(np.abs(np.exp(log_p) - np.exp(log_q)), axis=-1)


def max_abs_diff(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """The original's "total_variation": max |p - q|."""
    return np.max(np.abs(np.exp(log_p) - np.exp(log_q)), axis=-1)


def _top_k_by(sort_by: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """argpartition for k candidates, then a sort of those k by descending `sort_by`."""
    candidates = np.argpartition(-sort_by, k - 1, axis=-1)[..., :k]
    order = np.argsort(-np.take_along_axis(sort_by, candidates, axis=-1), axis=-1)
    ids = np.take_along_axis(candidates, order, axis=-1)
    return ids, np.take_along_axis(values, ids, axis=-1)


def top_k(log_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by log-probability, values are probabilities."""
    return _top_k_by(log_probs, np.exp(log_probs), k)


def top_k_delta(log_p: np.ndarray, log_q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Deltas q - p of the probabilities, ranked by their magnitude."""
    deltas = np.exp(log_q) - np.exp(log_p)
    return _top_k_by(np.abs(deltas), deltas, k)
