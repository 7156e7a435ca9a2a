"""Streaming statistics over log-probability arrays, computed by the Rust core.

Every axis but the last is a row axis; the last is the vocabulary ``V``. Each function reads
its input once, in SIMD lanes with per-row float64 accumulation, on its own thread pool with the
GIL released, and allocates only its outputs; results are bit-identical for any thread count.
Ctrl-C interrupts a long call (``KeyboardInterrupt``).

Inputs:
    * numpy arrays, CPU torch tensors (zero-copy, ``Tensor.numpy()``), else ``np.asarray``.
    * float32 (borrowed, zero-copy), float64, float16 and bfloat16 (read natively and computed in
      float32 lanes, never widened into a copy). bfloat16 comes as a ``torch.bfloat16`` CPU
      tensor, or as a numpy ``uint16`` array holding the raw bfloat16 bits: **a uint16 array is
      always read as bfloat16**. Both inputs of a two-input statistic must share one dtype.
    * Any numpy layout works (strided, unaligned, byte strides of a record field): all but
      C-contiguous aligned arrays are copied once (pass contiguous arrays on hot paths).
    * CUDA tensors are computed on the GPU by the torch twin :mod:`tuned_lens.lens_stats._torch`
      (same functions, imported only when a CUDA tensor arrives).

Outputs are numpy arrays, float32 unless stated; a ``(..., V)`` input gives ``(...)`` results.
With ``keep_device=True`` and a torch tensor among the inputs, they are torch tensors on that
tensor's device instead: on the CPU the core's arrays wrapped without a copy
(``torch.from_numpy``), on CUDA the twin's tensors, never copied to the host.

Numerics: ``0 · log 0 = 0``; ``exp`` of a log-probability below -87.33 is exactly 0 (in sums of
probabilities on AVX2: below -88, and at most its true size, under 1.2e-38, between); a NaN in a
row makes that row's result NaN (top-k ids ``0..k-1``) and never touches other rows; non-finite
values never raise.

Errors, raised before any work by the core and the twin alike (same class, same message, which
starts with the argument at fault), are :class:`LensStatsError` (a ``ValueError``) and its
subclasses :class:`ShapeError`, :class:`DTypeError` (a ``TypeError``), :class:`TargetIndexError`
(an ``IndexError``), all defined in :mod:`tuned_lens.errors`.

Threads: :func:`set_num_threads`, else ``TUNED_LENS_NUM_THREADS``, else the core count (a pool
apart from torch's), at most ``MAX_THREADS``. ``docs/lens_stats.md``: the layout of the core, adding a statistic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar, overload

import numpy as np
from numpy.typing import NDArray

from . import _dispatch, _native
from .errors import DTypeError, LensStatsError, ShapeError, TargetIndexError
from .limits import MAX_K

if TYPE_CHECKING:
    from typing import TypeAlias

    import numpy.typing as npt
    from torch import Tensor

    #: A numpy array, a CPU or CUDA torch tensor, or anything ``np.asarray`` accepts.
    ArrayLike: TypeAlias = npt.ArrayLike | Tensor
    #: ``keep_device`` left at ``False``: the results are numpy arrays.
    _Host: TypeAlias = Literal[False]
    _F32T: TypeAlias = NDArray[np.float32] | Tensor
    _I64T: TypeAlias = NDArray[np.int64] | Tensor
    _Tensors: TypeAlias = tuple[Tensor, Tensor]

# The statistics join ``__all__`` as they are registered (``@_statistic``).
__all__ = ["LensStatsError", "ShapeError", "DTypeError", "TargetIndexError", "MAX_K"]
__all__ += ["set_num_threads", "get_num_threads", "simd_level"]

_F32 = NDArray[np.float32]
_I64 = NDArray[np.int64]
_F64 = NDArray[np.float64]
_Stat = TypeVar("_Stat", bound=Callable[..., object])

#: The statistics, by name: each is a function of this module, of the compiled core and of the
#: torch twin (tests and the stub generator read this table).
STATISTICS: dict[str, Callable[..., object]] = {}


def _statistic(fn: _Stat) -> _Stat:
    """Register a statistic: it joins :data:`STATISTICS` and ``__all__``."""
    STATISTICS[fn.__name__] = fn
    __all__.append(fn.__name__)
    return fn


# --------------------------------------------------------------------------------------------
# Statistics; each takes ``keep_device`` (see the module docstring).


@overload
def log_softmax(
    logits: ArrayLike, *, out: np.ndarray | None = ..., keep_device: _Host = ...
) -> _F32: ...
@overload
def log_softmax(logits: ArrayLike, *, out: ArrayLike | None = ..., keep_device: bool) -> _F32T: ...
@_statistic
def log_softmax(
    logits: ArrayLike, *, out: ArrayLike | None = None, keep_device: bool = False
) -> _F32T:
    """Normalise logits over the last axis: ``x - logsumexp(x)``.

    Args:
        logits: ``(..., V)`` logits.
        out: optional C-contiguous, writeable float32 array (or CPU tensor; a CUDA tensor for
            CUDA logits) of shape ``(..., V)`` to write into (no allocation; reusing it avoids
            the page faults of fresh memory). Memory overlapping ``logits`` (through any
            object) is refused.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(..., V)`` float32 log-probabilities (``out`` itself when given). A row of only
        ``-inf`` has no distribution and gives NaN; ``+inf`` logits give NaN.
    """
    if out is None:
        return _dispatch.run("log_softmax", {"logits": logits}, keep_device)  # type: ignore[return-value]
    return _dispatch.log_softmax_into(logits, out)  # type: ignore[return-value]


@overload
def logsumexp(logits: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def logsumexp(logits: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def logsumexp(logits: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """``log Σ_v exp(logits[..., v])``, stable (max-shifted), float32 of shape ``(...)``.

    A row of only ``-inf`` gives ``-inf``; a row holding ``+inf`` (and no NaN) gives ``+inf``.
    """
    return _dispatch.run("logsumexp", {"logits": logits}, keep_device)  # type: ignore[return-value]


@overload
def entropy(log_probs: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def entropy(log_probs: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def entropy(log_probs: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """Shannon entropy ``H = -Σ_v p log p`` in nats, ``p = exp(log_probs)``.

    ``0 · log 0 = 0``: entries with ``log_probs = -inf`` contribute 0 (numpy would give NaN).
    The input is assumed normalised (not renormalised).

    Args:
        log_probs: ``(..., V)`` log-probabilities.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(...)`` float32 entropies.
    """
    return _dispatch.run("entropy", {"log_probs": log_probs}, keep_device)  # type: ignore[return-value]


@overload
def entropy_from_logits(logits: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def entropy_from_logits(logits: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def entropy_from_logits(logits: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """Entropy of ``softmax(logits)`` in nats, fused: no normalised copy is written.

    With ``m = max x``, ``e = exp(x - m)``, ``s = Σ e``: ``H = ln s - Σ e (x - m) / s``. One
    ``exp`` per element; the cost of one read of the logits.

    Args:
        logits: ``(..., V)`` logits.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(...)`` float32 entropies (NaN for a row of only ``-inf``).
    """
    return _dispatch.run("entropy_from_logits", {"logits": logits}, keep_device)  # type: ignore[return-value]


@overload
def max_probability(
    log_probs: ArrayLike, *, from_logits: bool = ..., keep_device: _Host = ...
) -> tuple[_F32, _I64]: ...
@overload
def max_probability(
    log_probs: ArrayLike, *, from_logits: bool = ..., keep_device: bool
) -> tuple[_F32, _I64] | _Tensors: ...
@_statistic
def max_probability(
    log_probs: ArrayLike, *, from_logits: bool = False, keep_device: bool = False
) -> tuple[_F32, _I64] | _Tensors:
    """Probability and id of the most likely token of each row.

    Args:
        log_probs: ``(..., V)`` log-probabilities, or logits with ``from_logits=True`` (then
            the probability is ``1 / Σ exp(x - max x)``, without normalising the row).
        from_logits: whether the input is unnormalised logits.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(prob, token_id)``: float32 ``(...)`` and int64 ``(...)``. Ties go to the lowest id.
        A row holding a NaN gets probability NaN.
    """
    arg = "logits" if from_logits else "log_probs"
    return _dispatch.run(  # type: ignore[return-value]
        "max_probability", {arg: log_probs}, keep_device, from_logits=from_logits
    )


@overload
def target_log_prob(
    log_probs: ArrayLike, targets: ArrayLike, *, keep_device: _Host = ...
) -> _F32: ...
@overload
def target_log_prob(log_probs: ArrayLike, targets: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def target_log_prob(
    log_probs: ArrayLike, targets: ArrayLike, *, keep_device: bool = False
) -> _F32T:
    """``log_probs[..., targets]``: the log-probability of the given token in each row.

    Args:
        log_probs: ``(..., V)`` log-probabilities.
        targets: int32/int64 token ids, shape ``log_probs.shape[:-1]`` or anything numpy
            broadcasts to it. Note ``(*B, T)`` does not broadcast to ``(*B, L, T)``: pass
            ``targets[..., None, :]``.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(...)`` float32.

    Raises:
        TargetIndexError: an id outside ``[0, V)`` (the message names it and ``V``).
    """
    args = {"log_probs": log_probs, "targets": targets}
    return _dispatch.run("target_log_prob", args, keep_device)  # type: ignore[return-value]


@overload
def cross_entropy(
    log_probs: ArrayLike, targets: ArrayLike, *, keep_device: _Host = ...
) -> _F32: ...
@overload
def cross_entropy(log_probs: ArrayLike, targets: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def cross_entropy(log_probs: ArrayLike, targets: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """Per-token cross-entropy ``-log_probs[..., targets]`` (see :func:`target_log_prob`)."""
    args = {"log_probs": log_probs, "targets": targets}
    return _dispatch.run("cross_entropy", args, keep_device)  # type: ignore[return-value]


@overload
def log_prob_diff(
    log_probs: ArrayLike,
    targets: ArrayLike,
    anti_targets: ArrayLike,
    *,
    keep_device: _Host = ...,
) -> _F32: ...
@overload
def log_prob_diff(
    log_probs: ArrayLike, targets: ArrayLike, anti_targets: ArrayLike, *, keep_device: bool
) -> _F32T: ...
@_statistic
def log_prob_diff(
    log_probs: ArrayLike, targets: ArrayLike, anti_targets: ArrayLike, *, keep_device: bool = False
) -> _F32T:
    """``lp[target] - lp[anti_target]`` per row (a logit-difference style contrast).

    ``targets`` and ``anti_targets`` follow the rules of :func:`target_log_prob`.
    """
    args = {"log_probs": log_probs, "targets": targets, "anti_targets": anti_targets}
    return _dispatch.run("log_prob_diff", args, keep_device)  # type: ignore[return-value]


@overload
def target_rank(log_probs: ArrayLike, targets: ArrayLike, *, keep_device: _Host = ...) -> _I64: ...
@overload
def target_rank(log_probs: ArrayLike, targets: ArrayLike, *, keep_device: bool) -> _I64T: ...
@_statistic
def target_rank(log_probs: ArrayLike, targets: ArrayLike, *, keep_device: bool = False) -> _I64T:
    """Rank of the target token: ``1 + #{v : lp[v] > lp[target]}`` (1 = most likely).

    One comparison per element, no sort. Ties share the best rank, deterministically. The
    original library used a double argsort (``argsort(argsort(-lp))``) with numpy's unstable
    sort, which ranks tied tokens in an arbitrary order among themselves (and is 0-based there);
    here every token tied with the target counts as not above it. A NaN target value gets the
    worst rank ``V``; NaN entries elsewhere are never counted as above the target.

    Args:
        log_probs: ``(..., V)`` log-probabilities (or logits: the rank is the same).
        targets: int32/int64 ids as in :func:`target_log_prob`.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(...)`` int64 ranks in ``[1, V]``.
    """
    args = {"log_probs": log_probs, "targets": targets}
    return _dispatch.run("target_rank", args, keep_device)  # type: ignore[return-value]


@overload
def kl_divergence(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def kl_divergence(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def kl_divergence(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """``KL(p‖q) = Σ_v p (log p - log q)`` per row, in nats.

    Entries with ``p = 0`` contribute 0 (also where ``q = 0``); the result is ``+inf`` where
    ``q = 0 < p``. Clamped at 0 against rounding.

    Args:
        log_p: ``(..., V)`` log-probabilities of ``p``.
        log_q: ``(..., V)`` log-probabilities of ``q``: same shape and dtype.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(...)`` float32.
    """
    return _dispatch.run("kl_divergence", {"log_p": log_p, "log_q": log_q}, keep_device)  # type: ignore[return-value]


@overload
def forward_kl(log_probs: ArrayLike, reference: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def forward_kl(log_probs: ArrayLike, reference: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def forward_kl(log_probs: ArrayLike, reference: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """``KL(reference ‖ layer)`` for every layer of a stack, the reference broadcast in place.

    Args:
        log_probs: ``(..., L, T, V)`` log-probabilities (layers, positions, vocabulary).
        reference: ``(..., T, V)``: ``log_probs``' shape without the layer axis ``-3``, e.g. the
            model's final output. Same dtype as ``log_probs``.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(..., L, T)`` float32. Per-position cost: ``exp(reference)`` once, block by block
        (kept in L1 while every layer's block is read), and one read of each layer row.
    """
    args = {"log_probs": log_probs, "reference": reference}
    return _dispatch.run("forward_kl", args, keep_device)  # type: ignore[return-value]


@overload
def js_divergence(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def js_divergence(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def js_divergence(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """The Jensen–Shannon divergence ``½KL(p‖m) + ½KL(q‖m)``, ``m = (p + q)/2``, in ``[0, ln 2]``.

    This is the true JS divergence; the original library's ``js_divergence`` is what
    :func:`symmetric_kl` computes. Computed relative to the larger entry of each pair: two
    exponentials and a polynomial for ``ln((1 + u)/2)`` per pair, no logarithm.

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype.
    """
    return _dispatch.run("js_divergence", {"log_p": log_p, "log_q": log_q}, keep_device)  # type: ignore[return-value]


@overload
def symmetric_kl(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def symmetric_kl(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def symmetric_kl(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """``½KL(p‖q) + ½KL(q‖p) = ½Σ (p - q)(log p - log q)`` per row (the original's "JS").

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype; ``+inf`` where one
        distribution is 0 and the other is not.
    """
    return _dispatch.run("symmetric_kl", {"log_p": log_p, "log_q": log_q}, keep_device)  # type: ignore[return-value]


@overload
def total_variation(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def total_variation(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def total_variation(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """Total variation distance ``½Σ_v |p - q|`` per row, in ``[0, 1]``.

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype.
    """
    return _dispatch.run("total_variation", {"log_p": log_p, "log_q": log_q}, keep_device)  # type: ignore[return-value]


@overload
def max_abs_diff(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: _Host = ...) -> _F32: ...
@overload
def max_abs_diff(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool) -> _F32T: ...
@_statistic
def max_abs_diff(log_p: ArrayLike, log_q: ArrayLike, *, keep_device: bool = False) -> _F32T:
    """``max_v |p - q|`` per row (what the original library calls "total variation").

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype.
    """
    return _dispatch.run("max_abs_diff", {"log_p": log_p, "log_q": log_q}, keep_device)  # type: ignore[return-value]


@overload
def top_k(log_probs: ArrayLike, k: int, *, keep_device: _Host = ...) -> tuple[_I64, _F32]: ...
@overload
def top_k(log_probs: ArrayLike, k: int, *, keep_device: bool) -> tuple[_I64, _F32] | _Tensors: ...
@_statistic
def top_k(
    log_probs: ArrayLike, k: int, *, keep_device: bool = False
) -> tuple[_I64, _F32] | _Tensors:
    """The ``k`` most likely tokens of each row, without sorting the vocabulary.

    One pass keeps a ``k``-entry buffer with a running threshold; cost ≈ one read of the input.

    Args:
        log_probs: ``(..., V)`` log-probabilities.
        k: ``1 <= k <= min(MAX_K, V)`` (``MAX_K`` = 64).
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(ids, probs)``: int64 ``(..., k)`` and float32 ``(..., k)`` (``exp`` of the
        log-probabilities), sorted by descending probability, ties to the lower id. A row
        holding a NaN has no ranking: NaN probabilities and ids ``0, 1, ..., k-1``.
    """
    return _dispatch.run("top_k", {"log_probs": log_probs}, keep_device, k=k)  # type: ignore[return-value]


@overload
def top_k_delta(
    log_p: ArrayLike, log_q: ArrayLike, k: int, *, keep_device: _Host = ...
) -> tuple[_I64, _F32]: ...
@overload
def top_k_delta(
    log_p: ArrayLike, log_q: ArrayLike, k: int, *, keep_device: bool
) -> tuple[_I64, _F32] | _Tensors: ...
@_statistic
def top_k_delta(
    log_p: ArrayLike, log_q: ArrayLike, k: int, *, keep_device: bool = False
) -> tuple[_I64, _F32] | _Tensors:
    """The ``k`` tokens whose probability changes most from ``p`` to ``q``, per row.

    Args:
        log_p: ``(..., V)`` log-probabilities before.
        log_q: ``(..., V)`` log-probabilities after (same shape and dtype).
        k: ``1 <= k <= min(MAX_K, V)``.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(ids, deltas)``: int64 ``(..., k)`` and float32 ``(..., k)`` with
        ``delta = q - p`` (signed), ranked by ``|q - p|`` descending, ties to the lower id;
        NaN deltas and ids ``0..k-1`` for a row where some ``|q - p|`` is NaN.
    """
    args = {"log_p": log_p, "log_q": log_q}
    return _dispatch.run("top_k_delta", args, keep_device, k=k)  # type: ignore[return-value]


@overload
def marginal_sums(log_probs: ArrayLike, *, keep_device: _Host = ...) -> tuple[_F64, _F64, int]: ...
@overload
def marginal_sums(
    log_probs: ArrayLike, *, keep_device: bool
) -> tuple[_F64, _F64, int] | tuple[Tensor, Tensor, int]: ...
@_statistic
def marginal_sums(
    log_probs: ArrayLike, *, keep_device: bool = False
) -> tuple[_F64, _F64, int] | tuple[Tensor, Tensor, int]:
    """Column sums over all rows, for streaming means of the predicted distribution.

    Sums from several batches (or processes) merge by addition; the means are
    ``sum_probs / n_rows`` and ``sum_log_probs / n_rows``. Computed over column blocks, so the
    result does not depend on the thread count either.

    Args:
        log_probs: ``(..., V)`` log-probabilities.
        keep_device: return torch tensors on the input's device.

    Returns:
        ``(sum_probs, sum_log_probs, n_rows)``: float64 ``(V,)``, float64 ``(V,)`` (``-inf``
        where a row has ``-inf``), and the number of rows.
    """
    return _dispatch.run("marginal_sums", {"log_probs": log_probs}, keep_device)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Threads and build information (not statistics: no keep_device)


def set_num_threads(n: int | None) -> None:
    """Set the pool size: ``None`` (env var or core count) or ``1 <= n <= _native.MAX_THREADS``.

    ``MAX_THREADS`` = 4 × the logical CPUs, at least 64. A larger ``n`` raises LensStatsError; a
    larger ``TUNED_LENS_NUM_THREADS`` is clamped, a zero or unparsable one ignored (warned)."""
    _native.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the statistics use."""
    return _native.get_num_threads()


def simd_level() -> str:
    """SIMD copy in use: ``"avx512"``, ``"avx2"``, ``"neon"``, ``"portable"`` (TUNED_LENS_SIMD)."""
    return _native.simd_level()
