"""Streaming statistics over log-probability arrays, computed by the Rust core.

Every axis but the last is a row axis; the last axis is the vocabulary ``V``. Each function
reads its input once, row by row, in SIMD lanes (AVX-512 / AVX2+FMA chosen at run time) with
per-row accumulation in float64, on a thread pool of its own with the GIL released, and
allocates only its outputs. Results are bit-identical for any number of threads.

Inputs:
    * numpy arrays or CPU torch tensors (converted zero-copy with ``Tensor.numpy()``);
      anything else goes through ``np.asarray``.
    * float32 (borrowed, zero-copy), float64, float16 and bfloat16 (read natively and computed in
      float32 lanes, never widened into a copy). bfloat16 comes as a ``torch.bfloat16`` CPU
      tensor, or as a numpy ``uint16`` array holding the raw bfloat16 bits: **a uint16 array is
      always read as bfloat16**. Both inputs of a two-input statistic must share one dtype.
    * Non-contiguous inputs work; they are copied once into a contiguous buffer (one extra
      input-sized allocation), so pass contiguous arrays on hot paths.
    * CUDA tensors are computed on the GPU by :mod:`tuned_lens._torch_stats` (same functions,
      imported only when a CUDA tensor arrives); the results come back as numpy arrays.

Outputs are numpy arrays, float32 unless stated; a ``(..., V)`` input gives ``(...)`` results.

Numerics: ``0 · log 0 = 0`` (a ``-inf`` log-probability contributes nothing); ``exp`` of a
log-probability below about -87.3 is exactly 0; a NaN in a row makes that row's result NaN and
never touches other rows; no function raises on non-finite values.

Errors are raised before any work, by the Rust core, as subclasses of :class:`LensStatsError`
(a ``ValueError``) that name the argument and the shapes: :class:`ShapeError`,
:class:`DTypeError` (also a ``TypeError``) and :class:`TargetIndexError` (also an
``IndexError``).

Threads: the count comes from :func:`set_num_threads`, else the environment variable
``TUNED_LENS_NUM_THREADS``, else the number of cores. A call runs on the calling thread (with
the GIL released) plus that many minus one helper threads of the module's own pool, separate
from torch's intra-op pool; calls return when done, so they take turns with torch ops issued
from that thread instead of oversubscribing the cores.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from tuned_lens import _lens_stats as _ext
from tuned_lens._lens_stats import (
    DTypeError,
    LensStatsError,
    ShapeError,
    TargetIndexError,
)

__all__ = [
    "LensStatsError",
    "ShapeError",
    "DTypeError",
    "TargetIndexError",
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
    "set_num_threads",
    "get_num_threads",
    "simd_level",
]

ArrayLike = Any  # numpy array, CPU/CUDA torch tensor, or anything np.asarray accepts


def _is_tensor(x: object) -> bool:
    # Checked without importing torch: torch is imported only by callers that use it.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _on_gpu(*inputs: object) -> bool:
    return any(_is_tensor(x) and x.device.type != "cpu" for x in inputs)  # type: ignore[attr-defined]


def _to_numpy(x: ArrayLike) -> Any:
    """Convert without copying where possible; dtype and shape checks are the core's job."""
    if isinstance(x, np.ndarray):
        return x
    if _is_tensor(x):
        import torch

        t = x.detach()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16)
        try:
            return t.numpy()
        except TypeError as err:  # dtypes numpy cannot represent (float8, ...)
            raise DTypeError(f"unsupported torch dtype {t.dtype}: {err}") from None
    return np.asarray(x)


def _torch_twin(name: str, *args: Any, **kwargs: Any) -> Any:
    """Run the pure-torch twin on the GPU and hand back numpy."""
    from tuned_lens import _torch_stats

    result = getattr(_torch_stats, name)(*args, **kwargs)
    return _gpu_to_numpy(result)


def _gpu_to_numpy(result: Any) -> Any:
    if isinstance(result, tuple):
        return tuple(_gpu_to_numpy(r) for r in result)
    if _is_tensor(result):
        return result.detach().cpu().numpy()
    return result


def log_softmax(logits: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray:
    """Normalise logits over the last axis: ``x - logsumexp(x)``.

    Args:
        logits: ``(..., V)`` logits.
        out: optional C-contiguous, writeable float32 array of shape ``(..., V)`` to write into
            (no allocation; reusing it avoids the page faults of fresh memory). It must not share
            memory with ``logits``.

    Returns:
        ``(..., V)`` float32 log-probabilities (``out`` itself when given). A row of only
        ``-inf`` has no distribution and gives NaN; ``+inf`` logits give NaN.
    """
    if _on_gpu(logits):
        result = _torch_twin("log_softmax", logits)
        if out is not None:
            out[...] = result
            return out
        return result
    return _ext.log_softmax(_to_numpy(logits), out=out)


def logsumexp(logits: ArrayLike) -> np.ndarray:
    """``log Σ_v exp(logits[..., v])``, stable (max-shifted), float32 of shape ``(...)``.

    A row of only ``-inf`` gives ``-inf``.
    """
    if _on_gpu(logits):
        return _torch_twin("logsumexp", logits)
    return _ext.logsumexp(_to_numpy(logits))


def entropy(log_probs: ArrayLike) -> np.ndarray:
    """Shannon entropy ``H = -Σ_v p log p`` in nats, ``p = exp(log_probs)``.

    ``0 · log 0 = 0``: entries with ``log_probs = -inf`` contribute 0 (numpy would give NaN).
    The input is assumed normalised (not renormalised).

    Args:
        log_probs: ``(..., V)`` log-probabilities.

    Returns:
        ``(...)`` float32 entropies.
    """
    if _on_gpu(log_probs):
        return _torch_twin("entropy", log_probs)
    return _ext.entropy(_to_numpy(log_probs))


def entropy_from_logits(logits: ArrayLike) -> np.ndarray:
    """Entropy of ``softmax(logits)`` in nats, fused: no normalised copy is written.

    With ``m = max x``, ``e = exp(x - m)``, ``s = Σ e``: ``H = ln s - Σ e (x - m) / s``. One
    ``exp`` per element; the cost of one read of the logits.

    Args:
        logits: ``(..., V)`` logits.

    Returns:
        ``(...)`` float32 entropies (NaN for a row of only ``-inf``).
    """
    if _on_gpu(logits):
        return _torch_twin("entropy_from_logits", logits)
    return _ext.entropy_from_logits(_to_numpy(logits))


def max_probability(
    log_probs: ArrayLike, *, from_logits: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Probability and id of the most likely token of each row.

    Args:
        log_probs: ``(..., V)`` log-probabilities, or logits with ``from_logits=True`` (then
            the probability is ``1 / Σ exp(x - max x)``, without normalising the row).
        from_logits: whether the input is unnormalised logits.

    Returns:
        ``(prob, token_id)``: float32 ``(...)`` and int64 ``(...)``. Ties go to the lowest id.
        A row holding a NaN gets probability NaN.
    """
    if _on_gpu(log_probs):
        return _torch_twin("max_probability", log_probs, from_logits=from_logits)
    return _ext.max_probability(_to_numpy(log_probs), from_logits=from_logits)


def target_log_prob(log_probs: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """``log_probs[..., targets]``: the log-probability of the given token in each row.

    Args:
        log_probs: ``(..., V)`` log-probabilities.
        targets: int32/int64 token ids, shape ``log_probs.shape[:-1]`` or anything numpy
            broadcasts to it. Note ``(*B, T)`` does not broadcast to ``(*B, L, T)``: pass
            ``targets[..., None, :]``.

    Returns:
        ``(...)`` float32.

    Raises:
        TargetIndexError: an id outside ``[0, V)`` (the message names it and ``V``).
    """
    if _on_gpu(log_probs, targets):
        return _torch_twin("target_log_prob", log_probs, targets)
    return _ext.target_log_prob(_to_numpy(log_probs), _to_numpy(targets))


def cross_entropy(log_probs: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """Per-token cross-entropy ``-log_probs[..., targets]`` (see :func:`target_log_prob`)."""
    if _on_gpu(log_probs, targets):
        return _torch_twin("cross_entropy", log_probs, targets)
    return _ext.cross_entropy(_to_numpy(log_probs), _to_numpy(targets))


def log_prob_diff(log_probs: ArrayLike, targets: ArrayLike, anti_targets: ArrayLike) -> np.ndarray:
    """``lp[target] - lp[anti_target]`` per row (a logit-difference style contrast).

    ``targets`` and ``anti_targets`` follow the rules of :func:`target_log_prob`.
    """
    if _on_gpu(log_probs, targets, anti_targets):
        return _torch_twin("log_prob_diff", log_probs, targets, anti_targets)
    return _ext.log_prob_diff(_to_numpy(log_probs), _to_numpy(targets), _to_numpy(anti_targets))


def target_rank(log_probs: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """Rank of the target token: ``1 + #{v : lp[v] > lp[target]}`` (1 = most likely).

    One comparison per element, no sort. Ties share the best rank, deterministically. The
    original library used a double argsort (``argsort(argsort(-lp))``) with numpy's unstable
    sort, which ranks tied tokens in an arbitrary order among themselves (and is 0-based there);
    here every token tied with the target counts as not above it. A NaN target value gets the
    worst rank ``V``; NaN entries elsewhere are never counted as above the target.

    Args:
        log_probs: ``(..., V)`` log-probabilities (or logits: the rank is the same).
        targets: int32/int64 ids as in :func:`target_log_prob`.

    Returns:
        ``(...)`` int64 ranks in ``[1, V]``.
    """
    if _on_gpu(log_probs, targets):
        return _torch_twin("target_rank", log_probs, targets)
    return _ext.target_rank(_to_numpy(log_probs), _to_numpy(targets))


def kl_divergence(log_p: ArrayLike, log_q: ArrayLike) -> np.ndarray:
    """``KL(p‖q) = Σ_v p (log p - log q)`` per row, in nats.

    Entries with ``p = 0`` contribute 0 (also where ``q = 0``); the result is ``+inf`` where
    ``q = 0 < p``. Clamped at 0 against rounding.

    Args:
        log_p: ``(..., V)`` log-probabilities of ``p``.
        log_q: ``(..., V)`` log-probabilities of ``q``: same shape and dtype.

    Returns:
        ``(...)`` float32.
    """
    if _on_gpu(log_p, log_q):
        return _torch_twin("kl_divergence", log_p, log_q)
    return _ext.kl_divergence(_to_numpy(log_p), _to_numpy(log_q))


def forward_kl(log_probs: ArrayLike, reference: ArrayLike) -> np.ndarray:
    """``KL(reference ‖ layer)`` for every layer of a stack, the reference broadcast in place.

    Args:
        log_probs: ``(..., L, T, V)`` log-probabilities (layers, positions, vocabulary).
        reference: ``(..., T, V)``: ``log_probs``' shape without the layer axis ``-3``, e.g. the
            model's final output. Same dtype as ``log_probs``.

    Returns:
        ``(..., L, T)`` float32. Per-position cost: ``exp(reference)`` once, block by block
        (kept in L1 while every layer's block is read), and one read of each layer row.
    """
    if _on_gpu(log_probs, reference):
        return _torch_twin("forward_kl", log_probs, reference)
    return _ext.forward_kl(_to_numpy(log_probs), _to_numpy(reference))


def js_divergence(log_p: ArrayLike, log_q: ArrayLike) -> np.ndarray:
    """The Jensen–Shannon divergence ``½KL(p‖m) + ½KL(q‖m)``, ``m = (p + q)/2``, in ``[0, ln 2]``.

    This is the true JS divergence; the original library's ``js_divergence`` is what
    :func:`symmetric_kl` computes. Computed relative to the larger entry of each pair: two
    exponentials and a polynomial for ``ln((1 + u)/2)`` per pair, no logarithm.

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype.
    """
    if _on_gpu(log_p, log_q):
        return _torch_twin("js_divergence", log_p, log_q)
    return _ext.js_divergence(_to_numpy(log_p), _to_numpy(log_q))


def symmetric_kl(log_p: ArrayLike, log_q: ArrayLike) -> np.ndarray:
    """``½KL(p‖q) + ½KL(q‖p) = ½Σ (p - q)(log p - log q)`` per row (the original's "JS").

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype; ``+inf`` where one
        distribution is 0 and the other is not.
    """
    if _on_gpu(log_p, log_q):
        return _torch_twin("symmetric_kl", log_p, log_q)
    return _ext.symmetric_kl(_to_numpy(log_p), _to_numpy(log_q))


def total_variation(log_p: ArrayLike, log_q: ArrayLike) -> np.ndarray:
    """Total variation distance ``½Σ_v |p - q|`` per row, in ``[0, 1]``.

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype.
    """
    if _on_gpu(log_p, log_q):
        return _torch_twin("total_variation", log_p, log_q)
    return _ext.total_variation(_to_numpy(log_p), _to_numpy(log_q))


def max_abs_diff(log_p: ArrayLike, log_q: ArrayLike) -> np.ndarray:
    """``max_v |p - q|`` per row (what the original library calls "total variation").

    Returns:
        ``(...)`` float32 for ``(..., V)`` inputs of one shape and dtype.
    """
    if _on_gpu(log_p, log_q):
        return _torch_twin("max_abs_diff", log_p, log_q)
    return _ext.max_abs_diff(_to_numpy(log_p), _to_numpy(log_q))


def top_k(log_probs: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most likely tokens of each row, without sorting the vocabulary.

    One pass keeps a ``k``-entry buffer with a running threshold; cost ≈ one read of the input.

    Args:
        log_probs: ``(..., V)`` log-probabilities.
        k: ``1 <= k <= min(64, V)``.

    Returns:
        ``(ids, probs)``: int64 ``(..., k)`` and float32 ``(..., k)`` (``exp`` of the
        log-probabilities), sorted by descending probability, ties to the lower id. A row
        holding a NaN gets NaN probabilities.
    """
    if _on_gpu(log_probs):
        return _torch_twin("top_k", log_probs, k)
    return _ext.top_k(_to_numpy(log_probs), k)


def top_k_delta(log_p: ArrayLike, log_q: ArrayLike, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` tokens whose probability changes most from ``p`` to ``q``, per row.

    Args:
        log_p: ``(..., V)`` log-probabilities before.
        log_q: ``(..., V)`` log-probabilities after (same shape and dtype).
        k: ``1 <= k <= min(64, V)``.

    Returns:
        ``(ids, deltas)``: int64 ``(..., k)`` and float32 ``(..., k)`` with
        ``delta = q - p`` (signed), ranked by ``|q - p|`` descending, ties to the lower id.
    """
    if _on_gpu(log_p, log_q):
        return _torch_twin("top_k_delta", log_p, log_q, k)
    return _ext.top_k_delta(_to_numpy(log_p), _to_numpy(log_q), k)


def marginal_sums(log_probs: ArrayLike) -> tuple[np.ndarray, np.ndarray, int]:
    """Column sums over all rows, for streaming means of the predicted distribution.

    Sums from several batches (or processes) merge by addition; the means are
    ``sum_probs / n_rows`` and ``sum_log_probs / n_rows``. Computed over column blocks, so the
    result does not depend on the thread count either.

    Args:
        log_probs: ``(..., V)`` log-probabilities.

    Returns:
        ``(sum_probs, sum_log_probs, n_rows)``: float64 ``(V,)``, float64 ``(V,)`` (``-inf``
        where a row has ``-inf``), and the number of rows.
    """
    if _on_gpu(log_probs):
        return _torch_twin("marginal_sums", log_probs)
    return _ext.marginal_sums(_to_numpy(log_probs))


def set_num_threads(n: int | None) -> None:
    """Set the statistics thread pool size (``None``: env var or core count). ``n >= 1``."""
    _ext.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the statistics use."""
    return _ext.get_num_threads()


def simd_level() -> str:
    """The instruction set of the hot loops in use: ``"avx512"``, ``"avx2"`` or ``"portable"``."""
    return _ext.simd_level()
