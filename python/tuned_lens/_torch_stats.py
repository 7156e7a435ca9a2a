"""Pure-torch twin of :mod:`tuned_lens.lens_stats`: the same statistics, torch in and torch out.

:mod:`tuned_lens.lens_stats` hands CUDA tensors to this module; on the CPU it serves as an
independent cross-check of the Rust kernels. Every axis but the last is a row axis and the last
is the vocabulary ``V``. Values are computed in float32 (float64 inputs included), row sums are
accumulated in float64, and results are float32 (int64 for ids and ranks) on the input's device.

Memory stays bounded: rows are processed in blocks sized so that the temporaries of one block
stay under about 256 MB, whatever the size of the input.

Conventions (those of the contract): ``p = exp(lp)``; a term with ``lp = -inf`` contributes 0
(``0 · log 0 = 0``); KL is ``+inf`` wherever ``q = 0 < p``; a row holding a NaN gives NaN for that
row's float statistics; logits rows of only ``-inf`` or holding a ``+inf`` have no distribution
(NaN log-probabilities); ``rank = 1 + #{v : lp[v] > lp[target]}``; top-k ties go to the lower id.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "log_softmax",
    "logsumexp",
    "entropy",
    "entropy_from_logits",
    "max_probability",
    "target_log_prob",
    "cross_entropy",
    "log_prob_diff",
    "target_rank",
    "kl_divergence",
    "forward_kl",
    "js_divergence",
    "symmetric_kl",
    "total_variation",
    "max_abs_diff",
    "top_k",
    "top_k_delta",
    "marginal_sums",
]

# Temporaries of one block of rows stay under this many bytes.
_BLOCK_BUDGET_BYTES = 256 * 1024 * 1024
_MAX_K = 64
_LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Errors: the contract's exception classes live in tuned_lens.lens_stats, which imports this
# module lazily; import them lazily too, so that neither import order nor a missing compiled
# module breaks the twin.


def _error(kind: str, message: str) -> Exception:
    fallback: dict[str, type[Exception]] = {
        "LensStatsError": ValueError,
        "ShapeError": ValueError,
        "DTypeError": TypeError,
        "TargetIndexError": IndexError,
    }
    try:
        from tuned_lens import lens_stats

        cls = getattr(lens_stats, kind)
    except (ImportError, AttributeError):
        cls = fallback[kind]
    return cls(message)


# --------------------------------------------------------------------------------------------
# Validation


def _as_tensor(x: object, device: torch.device | None = None) -> object:
    """numpy arrays (uint16 = raw bfloat16 bits) become tensors, on `device` when given, so a
    CUDA input may be paired with a numpy one. Anything else is returned as is and checked later.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:
            x = torch.from_numpy(np.ascontiguousarray(x).view(np.int16)).view(torch.bfloat16)
        else:
            x = torch.from_numpy(x if all(s >= 0 for s in x.strides) else x.copy())
    if isinstance(x, torch.Tensor) and device is not None and x.device != device:
        x = x.to(device)
    return x


def _check_float(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise _error("DTypeError", f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise _error("DTypeError", f"{name} must hold floats, got dtype {x.dtype}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise _error(
            "ShapeError", f"{name} needs a non-empty last (vocabulary) axis, got {tuple(x.shape)}"
        )


def _check_pair(p_name: str, p: torch.Tensor, q_name: str, q: torch.Tensor) -> None:
    _check_float(p_name, p)
    _check_float(q_name, q)
    if p.shape != q.shape:
        raise _error(
            "ShapeError",
            f"{p_name} and {q_name} must have the same shape, got {tuple(p.shape)} "
            f"and {tuple(q.shape)}",
        )
    if p.device != q.device:
        raise _error("LensStatsError", f"{p_name} and {q_name} are on different devices")


def _flat_targets(name: str, targets: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """Targets broadcast to the row shape and flattened: int64 (R,), range-checked."""
    if not isinstance(targets, torch.Tensor):
        targets = torch.as_tensor(targets)
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        raise _error("DTypeError", f"{name} must hold integers, got dtype {targets.dtype}")
    rows_shape = log_probs.shape[:-1]
    try:
        flat = torch.broadcast_to(targets, rows_shape).reshape(-1)
    except RuntimeError:
        raise _error(
            "ShapeError",
            f"{name} of shape {tuple(targets.shape)} does not broadcast to the row shape "
            f"{tuple(rows_shape)} of log_probs {tuple(log_probs.shape)}",
        ) from None
    flat = flat.to(device=log_probs.device, dtype=torch.int64)
    vocab = log_probs.shape[-1]
    if flat.numel() and bool(((flat < 0) | (flat >= vocab)).any()):
        bad = flat[(flat < 0) | (flat >= vocab)][0].item()
        raise _error("TargetIndexError", f"{name} holds id {bad}, outside [0, {vocab})")
    return flat


def _check_k(k: int, vocab: int) -> int:
    k = int(k)
    if not 1 <= k <= min(_MAX_K, vocab):
        raise _error("LensStatsError", f"k must be in [1, min({_MAX_K}, V={vocab})], got {k}")
    return k


# --------------------------------------------------------------------------------------------
# Row blocks


def _rows_per_block(vocab: int, n_inputs: int) -> int:
    # About four float32 temporaries per input element of the block.
    return max(1, _BLOCK_BUDGET_BYTES // (vocab * 4 * 4 * n_inputs))


def _blocks(
    tensors: Sequence[torch.Tensor], rows_per_block: int, offset: int = 0
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Walk tensors of identical shape (..., V) as float32 blocks of rows.

    Yields ``(first_row, [block (r, V) per tensor])`` in row order. Views are used where the
    leading axes merge; otherwise the first axis is walked and only small blocks are copied.
    """
    shape = tensors[0].shape
    vocab = shape[-1]
    n_rows = math.prod(shape[:-1])
    if n_rows == 0:
        return
    try:
        flats = [t.view(-1, vocab) for t in tensors]
    except RuntimeError:
        flats = None
    if flats is not None:
        for start in range(0, n_rows, rows_per_block):
            yield start + offset, [f[start : start + rows_per_block].float() for f in flats]
        return
    outer = shape[0]
    inner = n_rows // outer
    if inner <= rows_per_block:
        group = max(1, rows_per_block // inner)
        for i in range(0, outer, group):
            yield (
                offset + i * inner,
                [t[i : i + group].reshape(-1, vocab).float() for t in tensors],
            )
    else:
        for i in range(outer):
            yield from _blocks([t[i] for t in tensors], rows_per_block, offset + i * inner)


def _rows_out(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(math.prod(x.shape[:-1]), dtype=dtype, device=x.device)


def _nan_rows(*blocks: torch.Tensor) -> torch.Tensor:
    mask = blocks[0].isnan().any(dim=-1)
    for b in blocks[1:]:
        mask |= b.isnan().any(dim=-1)
    return mask


# --------------------------------------------------------------------------------------------
# Per-block kernels (float32 blocks (r, V) in, row results out)


def _block_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """(r,) float32; -inf for an all -inf row, NaN for a row with a NaN or a +inf."""
    m = x.amax(dim=-1, keepdim=True)
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(x - m_safe).sum(dim=-1, dtype=torch.float64)
    lse = torch.log(s) + m_safe[:, 0].double()
    # A +inf logit has no finite normalisation: the row has no distribution (as in the core).
    lse = torch.where(m[:, 0] == math.inf, torch.full_like(lse, math.nan), lse)
    return lse.float()


def _block_neg_entropy_terms(lp: torch.Tensor) -> torch.Tensor:
    # NaN survives the mask (NaN == -inf is False), so a NaN row sums to NaN.
    return torch.where(lp == -math.inf, torch.zeros_like(lp), torch.exp(lp) * lp)


def _block_entropy(lp: torch.Tensor) -> torch.Tensor:
    return (-_block_neg_entropy_terms(lp).sum(dim=-1, dtype=torch.float64)).float()


def _block_kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, float64 (r,)."""
    p_positive = lp > -math.inf
    terms = torch.where(p_positive, torch.exp(lp) * (lp - lq), torch.zeros_like(lp))
    out = terms.sum(dim=-1, dtype=torch.float64)
    q_zero = (p_positive & (lq == -math.inf)).any(dim=-1)
    out = torch.where(q_zero, torch.full_like(out, math.inf), out)
    return torch.where(_nan_rows(lp, lq), torch.full_like(out, math.nan), out)


def _block_top_k(key: torch.Tensor, k: int) -> torch.Tensor:
    """Ids (r, k) of the k largest keys per row, descending, ties to the lower id."""
    values, ids = torch.topk(key, k, dim=-1, largest=True, sorted=True)
    # torch.topk orders ties arbitrarily. Within the chosen k: sort by id, then stably by value.
    ids, _ = ids.sort(dim=-1)
    order = torch.gather(key, -1, ids).sort(dim=-1, descending=True, stable=True).indices
    ids = torch.gather(ids, -1, order)
    # Rows where more than k entries reach the k-th value may have picked a higher id at the
    # boundary: redo those with a full stable sort.
    kth = values[:, -1:]
    boundary_ties = (key >= kth).sum(dim=-1) > k
    if bool(boundary_ties.any()):
        rows = boundary_ties.nonzero()[:, 0]
        full = key[rows].sort(dim=-1, descending=True, stable=True).indices[:, :k]
        ids[rows] = full
    return ids


# --------------------------------------------------------------------------------------------
# Public functions


def log_softmax(logits: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Normalise logits into log-probabilities.

    Args:
        logits: (..., V) float tensor.
        out: optional float32 tensor of shape (..., V) on the same device to write into.

    Returns:
        (..., V) float32 log-probabilities (``out`` itself when given).
    """
    logits = _as_tensor(logits)
    _check_float("logits", logits)
    if out is None:
        out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    elif out.dtype != torch.float32 or out.shape != logits.shape or out.device != logits.device:
        raise _error(
            "ShapeError",
            f"out must be a float32 tensor of shape {tuple(logits.shape)} on {logits.device}, "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}",
        )
    vocab = logits.shape[-1]
    flat_out = out.view(-1, vocab) if out.is_contiguous() else None
    for start, (x,) in _blocks([logits], _rows_per_block(vocab, 1)):
        block = x - _block_logsumexp(x)[:, None]
        if flat_out is not None:
            flat_out[start : start + block.shape[0]] = block
        else:
            _write_rows(out, start, block)
    return out


def _write_rows(out: torch.Tensor, start: int, block: torch.Tensor) -> None:
    """Copy a block of flat rows into a non-contiguous (..., V) tensor."""
    rows_shape = out.shape[:-1]
    for i in range(block.shape[0]):
        index = torch.unravel_index(torch.tensor(start + i), rows_shape)
        out[tuple(int(j) for j in index)] = block[i]


def logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """log Σ_v exp(logits): (..., V) -> (...,) float32."""
    logits = _as_tensor(logits)
    _check_float("logits", logits)
    result = _rows_out(logits)
    for start, (x,) in _blocks([logits], _rows_per_block(logits.shape[-1], 1)):
        result[start : start + x.shape[0]] = _block_logsumexp(x)
    return result.view(logits.shape[:-1])


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """-Σ p log p with 0 · log 0 = 0: (..., V) -> (...,) float32."""
    log_probs = _as_tensor(log_probs)
    _check_float("log_probs", log_probs)
    result = _rows_out(log_probs)
    for start, (lp,) in _blocks([log_probs], _rows_per_block(log_probs.shape[-1], 1)):
        result[start : start + lp.shape[0]] = _block_entropy(lp)
    return result.view(log_probs.shape[:-1])


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits): (..., V) -> (...,) float32."""
    logits = _as_tensor(logits)
    _check_float("logits", logits)
    result = _rows_out(logits)
    for start, (x,) in _blocks([logits], _rows_per_block(logits.shape[-1], 1)):
        lp = x - _block_logsumexp(x)[:, None]
        result[start : start + x.shape[0]] = _block_entropy(lp)
    return result.view(logits.shape[:-1])


def max_probability(
    log_probs: torch.Tensor, *, from_logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest probability per row and its (first) token id.

    Args:
        log_probs: (..., V) log-probabilities, or logits with ``from_logits=True``.
        from_logits: normalise the rows first.

    Returns:
        (prob float32 (...,), token_id int64 (...,)).
    """
    log_probs = _as_tensor(log_probs)
    _check_float("log_probs", log_probs)
    probs = _rows_out(log_probs)
    ids = _rows_out(log_probs, torch.int64)
    for start, (x,) in _blocks([log_probs], _rows_per_block(log_probs.shape[-1], 1)):
        top, top_id = x.max(dim=-1)  # propagates NaN; the first maximum on ties
        if from_logits:
            top = top - _block_logsumexp(x)
        stop = start + x.shape[0]
        probs[start:stop] = torch.exp(top)
        ids[start:stop] = top_id
    rows_shape = log_probs.shape[:-1]
    return probs.view(rows_shape), ids.view(rows_shape)


def target_log_prob(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """lp[target]: (..., V) and int targets broadcastable to (...,) -> (...,) float32."""
    log_probs = _as_tensor(log_probs)
    _check_float("log_probs", log_probs)
    flat_targets = _flat_targets("targets", targets, log_probs)
    # Only one value per row is read: gather straight from the (possibly strided) input.
    return _gather_targets(log_probs, flat_targets).view(log_probs.shape[:-1])


def _gather_targets(log_probs: torch.Tensor, flat_targets: torch.Tensor) -> torch.Tensor:
    """lp[target] as float32 (R,)."""
    index = flat_targets.view(*log_probs.shape[:-1], 1)
    return log_probs.gather(-1, index).reshape(-1).float()


def cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-lp[target]: (..., V) -> (...,) float32."""
    return -target_log_prob(log_probs, targets)


def log_prob_diff(
    log_probs: torch.Tensor, targets: torch.Tensor, anti_targets: torch.Tensor
) -> torch.Tensor:
    """lp[target] - lp[anti_target]: (..., V) -> (...,) float32."""
    log_probs = _as_tensor(log_probs)
    _flat_targets("anti_targets", anti_targets, log_probs)
    return target_log_prob(log_probs, targets) - target_log_prob(log_probs, anti_targets)


def target_rank(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 + #{v : lp[v] > lp[target]}: (..., V) -> (...,) int64 (ties share the best rank)."""
    log_probs = _as_tensor(log_probs)
    _check_float("log_probs", log_probs)
    flat_targets = _flat_targets("targets", targets, log_probs)
    at_targets = _gather_targets(log_probs, flat_targets)
    result = _rows_out(log_probs, torch.int64)
    for start, (lp,) in _blocks([log_probs], _rows_per_block(log_probs.shape[-1], 1)):
        stop = start + lp.shape[0]
        at_target = at_targets[start:stop, None]
        result[start:stop] = 1 + (lp > at_target).sum(dim=-1)
    return result.view(log_probs.shape[:-1])


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = Σ p (log p - log q), +inf where q = 0 < p: (..., V) x2 -> (...,) float32."""
    log_p = _as_tensor(log_p)
    log_q = _as_tensor(log_q, getattr(log_p, "device", None))
    _check_pair("log_p", log_p, "log_q", log_q)
    result = _rows_out(log_p)
    for start, (lp, lq) in _blocks([log_p, log_q], _rows_per_block(log_p.shape[-1], 2)):
        result[start : start + lp.shape[0]] = _block_kl(lp, lq).float()
    return result.view(log_p.shape[:-1])


def forward_kl(log_probs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KL(reference || row) for every layer.

    Args:
        log_probs: (..., L, T, V) log-probabilities.
        reference: (..., T, V) log-probabilities, broadcast over the layer axis L (no copy).

    Returns:
        (..., L, T) float32.
    """
    log_probs = _as_tensor(log_probs)
    reference = _as_tensor(reference, getattr(log_probs, "device", None))
    _check_float("log_probs", log_probs)
    _check_float("reference", reference)
    expected = tuple(log_probs.shape[:-3]) + tuple(log_probs.shape[-2:])
    if log_probs.dim() < 3 or tuple(reference.shape) != expected:
        raise _error(
            "ShapeError",
            f"reference must have shape (..., T, V) = {expected} for log_probs (..., L, T, V) "
            f"= {tuple(log_probs.shape)}, got {tuple(reference.shape)}",
        )
    # A stride-0 view over L: _blocks copies at most one block of it at a time.
    ref = reference.unsqueeze(-3).expand(log_probs.shape)
    result = _rows_out(log_probs)
    for start, (lp, lr) in _blocks([log_probs, ref], _rows_per_block(log_probs.shape[-1], 2)):
        result[start : start + lp.shape[0]] = _block_kl(lr, lp).float()
    return result.view(log_probs.shape[:-1])


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """The true Jensen-Shannon divergence ½KL(p||m) + ½KL(q||m), m = (p+q)/2, in [0, ln 2]."""
    log_p = _as_tensor(log_p)
    log_q = _as_tensor(log_q, getattr(log_p, "device", None))
    _check_pair("log_p", log_p, "log_q", log_q)
    result = _rows_out(log_p)
    for start, (lp, lq) in _blocks([log_p, log_q], _rows_per_block(log_p.shape[-1], 2)):
        log_m = torch.logaddexp(lp, lq) - _LN2
        zero = torch.zeros_like(lp)
        p_terms = torch.where(lp == -math.inf, zero, torch.exp(lp) * (lp - log_m))
        q_terms = torch.where(lq == -math.inf, zero, torch.exp(lq) * (lq - log_m))
        js = 0.5 * (p_terms + q_terms).sum(dim=-1, dtype=torch.float64)
        js = torch.where(_nan_rows(lp, lq), torch.full_like(js, math.nan), js)
        result[start : start + lp.shape[0]] = js.float()
    return result.view(log_p.shape[:-1])


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """½KL(p||q) + ½KL(q||p) (the original library's "JS"): (..., V) x2 -> (...,) float32."""
    log_p = _as_tensor(log_p)
    log_q = _as_tensor(log_q, getattr(log_p, "device", None))
    _check_pair("log_p", log_p, "log_q", log_q)
    result = _rows_out(log_p)
    for start, (lp, lq) in _blocks([log_p, log_q], _rows_per_block(log_p.shape[-1], 2)):
        value = 0.5 * _block_kl(lp, lq) + 0.5 * _block_kl(lq, lp)
        result[start : start + lp.shape[0]] = value.float()
    return result.view(log_p.shape[:-1])


def total_variation(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """½ Σ |p - q| in [0, 1]: (..., V) x2 -> (...,) float32."""
    log_p = _as_tensor(log_p)
    log_q = _as_tensor(log_q, getattr(log_p, "device", None))
    _check_pair("log_p", log_p, "log_q", log_q)
    result = _rows_out(log_p)
    for start, (lp, lq) in _blocks([log_p, log_q], _rows_per_block(log_p.shape[-1], 2)):
        tv = 0.5 * (torch.exp(lp) - torch.exp(lq)).abs().sum(dim=-1, dtype=torch.float64)
        result[start : start + lp.shape[0]] = tv.float()
    return result.view(log_p.shape[:-1])


def max_abs_diff(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """max_v |p - q| (the original library's "TV"): (..., V) x2 -> (...,) float32."""
    log_p = _as_tensor(log_p)
    log_q = _as_tensor(log_q, getattr(log_p, "device", None))
    _check_pair("log_p", log_p, "log_q", log_q)
    result = _rows_out(log_p)
    for start, (lp, lq) in _blocks([log_p, log_q], _rows_per_block(log_p.shape[-1], 2)):
        # amax propagates NaN, as the contract asks.
        result[start : start + lp.shape[0]] = (torch.exp(lp) - torch.exp(lq)).abs().amax(dim=-1)
    return result.view(log_p.shape[:-1])


def top_k(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most probable tokens per row.

    Args:
        log_probs: (..., V) log-probabilities.
        k: 1 <= k <= min(64, V).

    Returns:
        (ids int64 (..., k), probs float32 (..., k)), by descending probability, ties to the
        lower id.
    """
    log_probs = _as_tensor(log_probs)
    _check_float("log_probs", log_probs)
    k = _check_k(k, log_probs.shape[-1])
    n_rows = math.prod(log_probs.shape[:-1])
    ids = torch.empty(n_rows, k, dtype=torch.int64, device=log_probs.device)
    probs = torch.empty(n_rows, k, dtype=torch.float32, device=log_probs.device)
    for start, (lp,) in _blocks([log_probs], _rows_per_block(log_probs.shape[-1], 1)):
        stop = start + lp.shape[0]
        block_ids = _block_top_k(lp, k)  # exp is monotone: rank by log-probability
        ids[start:stop] = block_ids
        probs[start:stop] = torch.exp(lp.gather(-1, block_ids))
    out_shape = tuple(log_probs.shape[:-1]) + (k,)
    return ids.view(out_shape), probs.view(out_shape)


def top_k_delta(
    log_p: torch.Tensor, log_q: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k tokens whose probability changes most from p to q.

    Args:
        log_p: (..., V) log-probabilities of p.
        log_q: (..., V) log-probabilities of q.
        k: 1 <= k <= min(64, V).

    Returns:
        (ids int64 (..., k), deltas q - p float32 (..., k)), ranked by |q - p| descending, ties
        to the lower id.
    """
    log_p = _as_tensor(log_p)
    log_q = _as_tensor(log_q, getattr(log_p, "device", None))
    _check_pair("log_p", log_p, "log_q", log_q)
    k = _check_k(k, log_p.shape[-1])
    n_rows = math.prod(log_p.shape[:-1])
    ids = torch.empty(n_rows, k, dtype=torch.int64, device=log_p.device)
    deltas = torch.empty(n_rows, k, dtype=torch.float32, device=log_p.device)
    for start, (lp, lq) in _blocks([log_p, log_q], _rows_per_block(log_p.shape[-1], 2)):
        stop = start + lp.shape[0]
        delta = torch.exp(lq) - torch.exp(lp)
        block_ids = _block_top_k(delta.abs(), k)
        ids[start:stop] = block_ids
        deltas[start:stop] = delta.gather(-1, block_ids)
    out_shape = tuple(log_p.shape[:-1]) + (k,)
    return ids.view(out_shape), deltas.view(out_shape)


def marginal_sums(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Column sums over every row, mergeable across batches.

    Args:
        log_probs: (..., V) log-probabilities.

    Returns:
        (sum of probabilities float64 (V,), sum of log-probabilities float64 (V,), row count).
    """
    log_probs = _as_tensor(log_probs)
    _check_float("log_probs", log_probs)
    vocab = log_probs.shape[-1]
    sum_probs = torch.zeros(vocab, dtype=torch.float64, device=log_probs.device)
    sum_log_probs = torch.zeros(vocab, dtype=torch.float64, device=log_probs.device)
    for _, (lp,) in _blocks([log_probs], _rows_per_block(vocab, 1)):
        sum_probs += torch.exp(lp).sum(dim=0, dtype=torch.float64)
        sum_log_probs += lp.sum(dim=0, dtype=torch.float64)
    return sum_probs, sum_log_probs, math.prod(log_probs.shape[:-1])
