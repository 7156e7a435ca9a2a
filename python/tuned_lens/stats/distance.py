"""Divergences between categorical distributions given as logits (torch, differentiable).

All functions normalise their inputs with ``log_softmax`` along ``dim`` first, so raw logits,
log-probabilities and logits with an arbitrary per-row constant shift give the same result.
Half-precision inputs (float16/bfloat16) are promoted to float32 before any arithmetic; float64
stays float64. Results keep that promoted dtype and have the input shape without ``dim``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["js_distance", "js_divergence", "kl_divergence", "sqrtmh"]

_LN2 = math.log(2.0)


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype to compute in: the promoted floating dtype, but never below float32."""
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"expected torch.Tensor inputs, got {type(t).__name__}")
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point:
        raise TypeError(f"expected floating point logits, got dtype {dtype}")
    return torch.promote_types(dtype, torch.float32)


def _normalised_pair(logit_p: Tensor, logit_q: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    if logit_p.shape != logit_q.shape:
        raise ValueError(
            f"logit_p and logit_q must have the same shape, got {tuple(logit_p.shape)} "
            f"and {tuple(logit_q.shape)}"
        )
    dtype = _compute_dtype(logit_p, logit_q)
    log_p = torch.log_softmax(logit_p.to(dtype), dim=dim)
    log_q = torch.log_softmax(logit_q.to(dtype), dim=dim)
    return log_p, log_q


def _kl_from_log_probs(log_p: Tensor, log_q: Tensor, dim: int) -> Tensor:
    """Σ p (log p − log q) with the convention 0 · log(0 / q) = 0.

    The difference is masked *before* the product so that ``-inf − -inf`` never reaches the
    backward pass as a NaN.
    """
    p = log_p.exp()
    diff = torch.where(
        p > 0, log_p - log_q, torch.zeros((), dtype=log_p.dtype, device=log_p.device)
    )
    return torch.sum(p * diff, dim=dim)


def kl_divergence(logit_p: Tensor, logit_q: Tensor, dim: int = -1) -> Tensor:
    """Kullback–Leibler divergence KL(P ‖ Q) in nats, from logits.

    Args:
        logit_p: (..., V) logits (or log-probabilities) of P.
        logit_q: (..., V) logits of Q, same shape as ``logit_p``.
        dim: the vocabulary axis.

    Returns:
        (...) KL(P ‖ Q) ≥ 0; +inf where Q gives zero mass to an outcome P supports.
    """
    log_p, log_q = _normalised_pair(logit_p, logit_q, dim)
    return _kl_from_log_probs(log_p, log_q, dim)


def js_divergence(logit_p: Tensor, logit_q: Tensor, dim: int = -1) -> Tensor:
    """The Jensen–Shannon divergence ½KL(P‖M) + ½KL(Q‖M), M = (P + Q)/2, in nats.

    The mixture is formed in log space, log M = logaddexp(log P, log Q) − ln 2, so tiny
    probabilities are not flushed to zero. The result is symmetric and lies in [0, ln 2]; it is
    clamped to that interval to absorb rounding.

    Args:
        logit_p: (..., V) logits of P.
        logit_q: (..., V) logits of Q, same shape.
        dim: the vocabulary axis.

    Returns:
        (...) JS(P, Q).
    """
    log_p, log_q = _normalised_pair(logit_p, logit_q, dim)
    log_m = torch.logaddexp(log_p, log_q) - _LN2
    js = 0.5 * (_kl_from_log_probs(log_p, log_m, dim) + _kl_from_log_probs(log_q, log_m, dim))
    return js.clamp(0.0, _LN2)


def js_distance(logit_p: Tensor, logit_q: Tensor, dim: int = -1) -> Tensor:
    """The Jensen–Shannon distance sqrt(JS(P, Q)), a metric on distributions, in sqrt-nats.

    Args:
        logit_p: (..., V) logits of P.
        logit_q: (..., V) logits of Q, same shape.
        dim: the vocabulary axis.

    Returns:
        (...) values in [0, sqrt(ln 2)]. The gradient is infinite where P = Q (as for any
        square root at zero).
    """
    return js_divergence(logit_p, logit_q, dim).sqrt()


def sqrtmh(x: Tensor) -> Tensor:
    """Principal square root of a Hermitian positive semi-definite matrix.

    The eigendecomposition is done in float64 (complex128 for complex input); negative
    eigenvalues from rounding are clamped to zero. The result has the input dtype.

    Args:
        x: (..., n, n) Hermitian matrices.

    Returns:
        (..., n, n) S with S @ S ≈ x and S Hermitian.
    """
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be a (..., n, n) batch of square matrices, got {tuple(x.shape)}")
    wide = torch.complex128 if x.is_complex() else torch.float64
    eigvals, eigvecs = torch.linalg.eigh(x.to(wide))
    roots = eigvals.clamp_min(0.0).sqrt().to(eigvecs.dtype)
    root = (eigvecs * roots.unsqueeze(-2)) @ eigvecs.mH
    return root.to(x.dtype)
