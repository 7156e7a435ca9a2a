"""Pure-torch twin of :mod:`tuned_lens.lens_stats`: the same statistics, torch in and torch out.

:mod:`tuned_lens.lens_stats` hands CUDA tensors to this module (and returns its tensors as they
are with ``keep_device=True``); on the CPU it serves as an independent cross-check of the Rust
kernels. Call it through the facade; it imports only :mod:`.errors` and :mod:`.limits` of the
package. Every bad input raises the class, with the message, that the Rust core raises for it
(checked in the core's order), except where only a tensor can be wrong (two devices). Every axis but the last is a row axis and the last
is the vocabulary ``V``. Values are computed in float32 (float64 inputs included), row sums are
accumulated in float64, and results are float32 (int64 for ids and ranks) on the input's device.

Memory stays bounded: rows are processed in blocks sized so that the temporaries of one block
stay under about 256 MB, whatever the size of the input.

Conventions (those of the contract): ``p = exp(lp)``; a term with ``lp = -inf`` contributes 0
(``0 · log 0 = 0``); KL is ``+inf`` wherever ``q = 0 < p``; a row holding a NaN gives NaN for that
row's float statistics; logits rows of only ``-inf`` or holding a ``+inf`` have no distribution
(NaN log-probabilities; ``logsumexp`` is ``-inf`` / ``+inf``); ``rank = 1 + #{v : lp[v] >
lp[target]}``; top-k ties go to the lower id, and a top-k row holding a NaN has NaN values and
ids ``0..k-1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch

from . import _torch_checks as _checks

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
_LN2 = math.log(2.0)


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


def _block_logsumexp(x: torch.Tensor, with_inf: float = math.nan) -> torch.Tensor:
    """(r,) float32; -inf for an all -inf row, NaN for a row with a NaN, ``with_inf`` for a row
    holding +inf and no NaN (NaN as a normaliser: such a row has no distribution; +inf as the
    value of ``logsumexp`` itself, as ``torch.logsumexp`` and the core give)."""
    m = x.amax(dim=-1, keepdim=True)  # NaN where the row holds a NaN
    m_safe = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    s = torch.exp(x - m_safe).sum(dim=-1, dtype=torch.float64)
    lse = torch.log(s) + m_safe[:, 0].double()
    lse = torch.where(m[:, 0] == math.inf, torch.full_like(lse, with_inf), lse)
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
        logits: ``(..., V)`` float tensor.
        out: optional float32 tensor of shape ``(..., V)`` on the same device to write into
            (unlike the core's, it may be non-contiguous).

    Returns:
        ``(..., V)`` float32 log-probabilities (``out`` itself when given).
    """
    logits = _checks.values("logits", logits)
    if out is not None:
        _checks.out_array(out, logits)
    _checks.dims("logits", logits)
    if out is None:
        out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
    else:
        _checks.out_shape(out, logits)
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
    """Copy a block of flat rows into a non-contiguous ``(..., V)`` tensor."""
    rows_shape = out.shape[:-1]
    for i in range(block.shape[0]):
        index = torch.unravel_index(torch.tensor(start + i), rows_shape)
        out[tuple(int(j) for j in index)] = block[i]


def _per_row(arg: str, x: object, block_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """One float32 value per row of ``x`` ``(..., V)``: ``block_fn`` over blocks of rows."""
    x = _checks.values(arg, x)
    _checks.dims(arg, x)
    result = _rows_out(x)
    for start, (block,) in _blocks([x], _rows_per_block(x.shape[-1], 1)):
        result[start : start + block.shape[0]] = block_fn(block)
    return result.view(x.shape[:-1])


def logsumexp(logits: torch.Tensor) -> torch.Tensor:
    """``log Σ_v exp(logits)``: ``(..., V)`` -> ``(...)`` float32 (+inf for a row with +inf)."""
    return _per_row("logits", logits, lambda x: _block_logsumexp(x, math.inf))


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """``-Σ p log p`` with ``0 · log 0 = 0``: ``(..., V)`` -> ``(...)`` float32."""
    return _per_row("log_probs", log_probs, _block_entropy)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)``: ``(..., V)`` -> ``(...)`` float32."""
    return _per_row("logits", logits, lambda x: _block_entropy(x - _block_logsumexp(x)[:, None]))


def max_probability(
    log_probs: torch.Tensor, *, from_logits: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest probability per row and its (first) token id.

    Args:
        log_probs: ``(..., V)`` log-probabilities, or logits with ``from_logits=True``.
        from_logits: normalise the rows first.

    Returns:
        ``(prob float32 (...), token_id int64 (...))``.
    """
    arg = "logits" if from_logits else "log_probs"
    log_probs = _checks.values(arg, log_probs)
    _checks.dims(arg, log_probs)
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


def _with_ids(
    log_probs: object, *id_args: tuple[str, object]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The values and each id argument flattened, checked in the core's order."""
    values = _checks.values("log_probs", log_probs)
    _checks.dims("log_probs", values)
    flats = [_checks.ids(arg, ids, values) for arg, ids in id_args]
    for (arg, _), flat in zip(id_args, flats):
        _checks.check_range(arg, flat, values.shape[-1])
    return values, flats


def _gather_targets(log_probs: torch.Tensor, flat_targets: torch.Tensor) -> torch.Tensor:
    """``lp[target]`` as float32 ``(R,)``, read straight from the (possibly strided) input."""
    index = flat_targets.view(*log_probs.shape[:-1], 1)
    return log_probs.gather(-1, index).reshape(-1).float()


def target_log_prob(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``lp[target]``: ``(..., V)`` and int targets broadcastable to ``(...)`` -> float32."""
    values, (flat,) = _with_ids(log_probs, ("targets", targets))
    return _gather_targets(values, flat).view(values.shape[:-1])


def cross_entropy(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-lp[target]``: ``(..., V)`` -> ``(...)`` float32."""
    return -target_log_prob(log_probs, targets)


def log_prob_diff(
    log_probs: torch.Tensor, targets: torch.Tensor, anti_targets: torch.Tensor
) -> torch.Tensor:
    """``lp[target] - lp[anti_target]``: ``(..., V)`` -> ``(...)`` float32."""
    values, (flat, anti) = _with_ids(
        log_probs, ("targets", targets), ("anti_targets", anti_targets)
    )
    diff = _gather_targets(values, flat) - _gather_targets(values, anti)
    return diff.view(values.shape[:-1])


def target_rank(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 + #{v : lp[v] > lp[target]}``: ``(..., V)`` -> ``(...)`` int64 (ties share the best)."""
    values, (flat,) = _with_ids(log_probs, ("targets", targets))
    at_targets = _gather_targets(values, flat)
    result = _rows_out(values, torch.int64)
    for start, (lp,) in _blocks([values], _rows_per_block(values.shape[-1], 1)):
        stop = start + lp.shape[0]
        result[start:stop] = 1 + (lp > at_targets[start:stop, None]).sum(dim=-1)
    return result.view(values.shape[:-1])


def _pair(
    log_p: object,
    log_q: object,
    block_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """One float32 value per row of two ``(..., V)`` inputs of one shape and dtype."""
    p = _checks.values("log_p", log_p)
    q = _checks.values("log_q", log_q, p.device)
    _checks.pair_dims("log_p", p, "log_q", q)
    _checks.same_dtype("log_q", p, q)
    result = _rows_out(p)
    for start, (lp, lq) in _blocks([p, q], _rows_per_block(p.shape[-1], 2)):
        result[start : start + lp.shape[0]] = block_fn(lp, lq).float()
    return result.view(p.shape[:-1])


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """``KL(p‖q) = Σ p (log p - log q)``, ``+inf`` where ``q = 0 < p``: float32 ``(...)``."""
    return _pair(log_p, log_q, _block_kl)


def forward_kl(log_probs: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``KL(reference ‖ row)`` for every layer.

    Args:
        log_probs: ``(..., L, T, V)`` log-probabilities.
        reference: ``(..., T, V)`` log-probabilities, broadcast over the layer axis ``L`` (no
            copy).

    Returns:
        ``(..., L, T)`` float32.
    """
    values = _checks.values("log_probs", log_probs)
    ref = _checks.values("reference", reference, values.device)
    _checks.forward_dims(values, ref)
    # A stride-0 view over L: _blocks copies at most one block of it at a time.
    ref = ref.unsqueeze(-3).expand(values.shape)
    result = _rows_out(values)
    for start, (lp, lr) in _blocks([values, ref], _rows_per_block(values.shape[-1], 2)):
        result[start : start + lp.shape[0]] = _block_kl(lr, lp).float()
    return result.view(values.shape[:-1])


def _block_js(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    log_m = torch.logaddexp(lp, lq) - _LN2
    zero = torch.zeros_like(lp)
    p_terms = torch.where(lp == -math.inf, zero, torch.exp(lp) * (lp - log_m))
    q_terms = torch.where(lq == -math.inf, zero, torch.exp(lq) * (lq - log_m))
    js = 0.5 * (p_terms + q_terms).sum(dim=-1, dtype=torch.float64)
    return torch.where(_nan_rows(lp, lq), torch.full_like(js, math.nan), js)


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """The true Jensen-Shannon divergence ½KL(p‖m) + ½KL(q‖m), m = (p+q)/2, in [0, ln 2]."""
    return _pair(log_p, log_q, _block_js)


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """½KL(p‖q) + ½KL(q‖p) (the original library's "JS"): float32 ``(...)``."""
    return _pair(log_p, log_q, lambda lp, lq: 0.5 * _block_kl(lp, lq) + 0.5 * _block_kl(lq, lp))


def total_variation(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """½ Σ |p - q| in [0, 1]: float32 ``(...)``."""
    return _pair(
        log_p,
        log_q,
        lambda lp, lq: 0.5 * (torch.exp(lp) - torch.exp(lq)).abs().sum(dim=-1, dtype=torch.float64),
    )


def max_abs_diff(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """max_v |p - q| (the original library's "TV"): float32 ``(...)``."""
    # amax propagates NaN, as the contract asks.
    return _pair(log_p, log_q, lambda lp, lq: (torch.exp(lp) - torch.exp(lq)).abs().amax(dim=-1))


def _unranked_nan_rows(
    ids: torch.Tensor, values: torch.Tensor, key: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows whose ``key`` holds a NaN have no ranking: ids ``0..k-1`` and NaN values (as the
    core gives them)."""
    nan = _nan_rows(key)[:, None]
    first = torch.arange(ids.shape[-1], device=ids.device).expand_as(ids)
    return torch.where(nan, first, ids), torch.where(nan, torch.full_like(values, math.nan), values)


def top_k(log_probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most probable tokens per row.

    Args:
        log_probs: ``(..., V)`` log-probabilities.
        k: ``1 <= k <= min(MAX_K, V)``.

    Returns:
        ``(ids int64 (..., k), probs float32 (..., k))``, by descending probability, ties to
        the lower id; a row holding a NaN gives ids ``0..k-1`` and NaN probabilities.
    """
    values = _checks.values("log_probs", log_probs)
    k = _checks.integer("k", k)
    _checks.dims("log_probs", values)
    k = _checks.check_k(k, values.shape[-1])
    n_rows = math.prod(values.shape[:-1])
    ids = torch.empty(n_rows, k, dtype=torch.int64, device=values.device)
    probs = torch.empty(n_rows, k, dtype=torch.float32, device=values.device)
    for start, (lp,) in _blocks([values], _rows_per_block(values.shape[-1], 1)):
        stop = start + lp.shape[0]
        block_ids = _block_top_k(lp, k)  # exp is monotone: rank by log-probability
        block_probs = torch.exp(lp.gather(-1, block_ids))
        ids[start:stop], probs[start:stop] = _unranked_nan_rows(block_ids, block_probs, lp)
    out_shape = tuple(values.shape[:-1]) + (k,)
    return ids.view(out_shape), probs.view(out_shape)


def top_k_delta(
    log_p: torch.Tensor, log_q: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k tokens whose probability changes most from p to q.

    Args:
        log_p: ``(..., V)`` log-probabilities of p.
        log_q: ``(..., V)`` log-probabilities of q.
        k: ``1 <= k <= min(MAX_K, V)``.

    Returns:
        ``(ids int64 (..., k), deltas q - p float32 (..., k))``, ranked by ``|q - p|``
        descending, ties to the lower id; a row with a NaN ``|q - p|`` gives ids ``0..k-1`` and
        NaN deltas.
    """
    p = _checks.values("log_p", log_p)
    q = _checks.values("log_q", log_q, p.device)
    k = _checks.integer("k", k)
    _checks.pair_dims("log_p", p, "log_q", q)
    k = _checks.check_k(k, p.shape[-1])
    _checks.same_dtype("log_q", p, q)
    n_rows = math.prod(p.shape[:-1])
    ids = torch.empty(n_rows, k, dtype=torch.int64, device=p.device)
    deltas = torch.empty(n_rows, k, dtype=torch.float32, device=p.device)
    for start, (lp, lq) in _blocks([p, q], _rows_per_block(p.shape[-1], 2)):
        stop = start + lp.shape[0]
        delta = torch.exp(lq) - torch.exp(lp)
        block_ids = _block_top_k(delta.abs(), k)
        block_deltas = delta.gather(-1, block_ids)
        ids[start:stop], deltas[start:stop] = _unranked_nan_rows(block_ids, block_deltas, delta)
    out_shape = tuple(p.shape[:-1]) + (k,)
    return ids.view(out_shape), deltas.view(out_shape)


def marginal_sums(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Column sums over every row, mergeable across batches.

    Args:
        log_probs: ``(..., V)`` log-probabilities.

    Returns:
        ``(sum of probabilities float64 (V,), sum of log-probabilities float64 (V,), rows)``.
    """
    values = _checks.values("log_probs", log_probs)
    _checks.dims("log_probs", values)
    vocab = values.shape[-1]
    sum_probs = torch.zeros(vocab, dtype=torch.float64, device=values.device)
    sum_log_probs = torch.zeros(vocab, dtype=torch.float64, device=values.device)
    for _, (lp,) in _blocks([values], _rows_per_block(vocab, 1)):
        sum_probs += torch.exp(lp).sum(dim=0, dtype=torch.float64)
        sum_log_probs += lp.sum(dim=0, dtype=torch.float64)
    return sum_probs, sum_log_probs, math.prod(values.shape[:-1])
