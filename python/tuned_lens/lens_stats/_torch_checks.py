"""Input validation of the torch twin: the Rust binding's checks, in its order and words.

Each function mirrors one check of ``crates/lens_stats/src/python/convert.rs`` or
``crates/lens_stats/src/dims.rs`` and raises the class, with the message, that the core raises
for the same input; ``tests/lens_stats/test_same_errors.py`` compares the two routes.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch

from .errors import (
    DTypeError,
    LensStatsError,
    ShapeError,
    TargetIndexError,
    meta_tensor,
    unsupported_dtype,
)
from .limits import MAX_K

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float64: "float64",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
}
_ID_DTYPES = (torch.int32, torch.int64)


def _numpy_name(dtype: torch.dtype) -> str:
    """The dtype as numpy prints it (``int64``, ``>f4``), which is what the core's messages quote."""
    try:
        return str(torch.empty(0, dtype=dtype).numpy().dtype)
    except TypeError:  # no numpy counterpart (float8, ...)
        return str(dtype)


def shape_str(shape: Sequence[int]) -> str:
    return str(tuple(int(d) for d in shape))


def _torch_readable(x: np.ndarray) -> np.ndarray:
    """``x``, or a copy where torch cannot view it: negative strides, unaligned data, strides
    that are not a multiple of the item size (a float field of a packed record array; torch
    checks the strides of axes of length one too)."""
    odd = any(s < 0 or s % x.itemsize for s in x.strides)
    return x.copy() if odd or not x.flags.aligned else x


def _from_numpy(x: np.ndarray) -> torch.Tensor:
    if x.dtype == np.uint16:  # raw bfloat16 bits
        bits = _torch_readable(np.ascontiguousarray(x)).view(np.int16)
        return torch.from_numpy(bits).view(torch.bfloat16)
    return torch.from_numpy(_torch_readable(x))


def _check_has_data(arg: str, x: torch.Tensor) -> None:
    if x.device.type == "meta":
        raise meta_tensor(arg)


def values(arg: str, x: object, device: torch.device | None = None) -> torch.Tensor:
    """A float input (numpy, tensor, or anything ``np.asarray`` takes), on ``device`` if given.

    Raises:
        DTypeError: an element type the core does not read.
        LensStatsError: a meta tensor.
    """
    if not isinstance(x, torch.Tensor):
        array = x if isinstance(x, np.ndarray) else np.asarray(x)
        kind_ok = array.dtype.kind == "f" and array.dtype.itemsize in (2, 4, 8)
        if not (kind_ok or array.dtype == np.uint16) or not array.dtype.isnative:
            raise unsupported_dtype(arg, str(array.dtype))
        x = _from_numpy(array)
    else:
        _check_has_data(arg, x)
    if x.dtype == torch.uint16:  # raw bfloat16 bits, as for numpy
        x = x.view(torch.bfloat16)
    elif x.dtype not in _DTYPE_NAMES:
        raise unsupported_dtype(arg, _numpy_name(x.dtype))
    if device is not None and x.device != device:
        x = x.to(device)
    return x


def dims(arg: str, x: torch.Tensor) -> None:
    """``Dims::of``: a last (vocabulary) axis, not empty."""
    if x.dim() == 0:
        raise ShapeError(
            f"{arg}: expected an array with a last (vocabulary) axis, got a 0-d array of shape ()"
        )
    if x.shape[-1] == 0:
        raise ShapeError(
            f"{arg}: the vocabulary (last) axis is empty in shape {shape_str(x.shape)}; "
            "a distribution needs V >= 1"
        )


def pair_dims(p_arg: str, p: torch.Tensor, q_arg: str, q: torch.Tensor) -> None:
    """``Dims::pair``: both valid and of one shape."""
    dims(p_arg, p)
    dims(q_arg, q)
    if p.shape != q.shape:
        raise ShapeError(
            f"{q_arg}: shape {shape_str(q.shape)} does not match {p_arg} shape {shape_str(p.shape)}; "
            "both must be identical"
        )


def same_dtype(q_arg: str, p: torch.Tensor, q: torch.Tensor) -> None:
    """Both inputs of a two-input statistic share one element type (and, here, one device)."""
    if p.dtype != q.dtype:
        raise DTypeError(
            f"{q_arg}: has dtype {_DTYPE_NAMES[q.dtype]} but the other input has dtype "
            f"{_DTYPE_NAMES[p.dtype]}; both must share one dtype"
        )
    if p.device != q.device:
        raise LensStatsError(f"{q_arg}: is on {q.device} but the other input is on {p.device}")


def ids(arg: str, ids: object, log_probs: torch.Tensor) -> torch.Tensor:
    """Token ids broadcast to the row shape of ``log_probs`` and flattened: int64 ``(R,)``.

    The shape is checked before the dtype, and the range separately (:func:`check_range`),
    after every id argument's shape and dtype, as the core does.
    Big-endian ids are converted to native byte order, as the core converts them.
    """
    if isinstance(ids, torch.Tensor):
        _check_has_data(arg, ids)
        shape, dtype_name = tuple(ids.shape), _numpy_name(ids.dtype)
        ok = ids.dtype in _ID_DTYPES
    else:
        array = ids if isinstance(ids, np.ndarray) else np.asarray(ids)
        shape, dtype_name = array.shape, str(array.dtype)
        ok = array.dtype.kind == "i" and array.dtype.itemsize in (4, 8)
    rows_shape = tuple(log_probs.shape[:-1])
    fits = len(shape) <= len(rows_shape) and all(
        s in (r, 1) for s, r in zip(reversed(shape), reversed(rows_shape))
    )
    if not fits:
        raise ShapeError(
            f"{arg}: shape {shape_str(shape)} cannot be broadcast to {shape_str(rows_shape)}, the shape "
            "of log_probs without its last (vocabulary) axis"
        )
    if not ok:
        raise DTypeError(f"{arg}: unsupported dtype {dtype_name}; token ids must be int32 or int64")
    if isinstance(ids, torch.Tensor):
        tensor = ids
    else:
        tensor = torch.from_numpy(_torch_readable(array.astype(array.dtype.newbyteorder("="))))
    flat = torch.broadcast_to(tensor, rows_shape).reshape(-1)
    return flat.to(device=log_probs.device, dtype=torch.int64)


def check_range(arg: str, flat: torch.Tensor, vocab: int) -> None:
    """Every id in ``[0, V)``; the message names the first offending one."""
    outside = (flat < 0) | (flat >= vocab)
    if flat.numel() and bool(outside.any()):
        bad = int(flat[outside][0].item())
        raise TargetIndexError(
            f"{arg}: token id {bad} is out of range for a vocabulary of size {vocab} "
            f"(valid ids are 0..{vocab})"
        )


def integer(arg: str, value: object) -> int:
    """An integer argument (``k``), saturated to the int64 range as the core reads it."""
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise DTypeError(f"{arg}: must be an integer, got {type(value).__name__}") from None
    return max(-(2**63), min(number, 2**63 - 1))


def check_k(k: int, vocab: int) -> int:
    if not 1 <= k <= min(MAX_K, vocab):
        raise LensStatsError(
            f"k: k = {k} is out of range; need 1 <= k <= min({MAX_K}, V) with V = {vocab}"
        )
    return k


def out_array(out: object, logits: torch.Tensor) -> None:
    """``log_softmax``'s ``out=``: a float32 tensor (on the device of ``logits``, here)."""
    if not isinstance(out, torch.Tensor) or out.dtype != torch.float32:
        raise DTypeError("out: must be a float32 array")
    _check_has_data("out", out)
    if out.device != logits.device:
        raise LensStatsError(f"out: is on {out.device} but logits is on {logits.device}")
    if _overlap(out, logits):
        raise LensStatsError("out: shares memory with logits; pass a separate buffer")


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the bytes the two tensors span intersect (as ``numpy.may_share_memory``).

    Addresses are compared, not storages, so two tensors over one foreign buffer (two
    ``torch.from_numpy`` of views of one ``bytearray``) count too.
    """

    def span(t: torch.Tensor) -> tuple[int, int]:
        start = t.data_ptr()
        reach = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
        return start, start + (reach + 1) * t.element_size()

    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def out_shape(out: torch.Tensor, logits: torch.Tensor) -> None:
    """``check_out``: ``out=`` has the result's shape."""
    if out.shape != logits.shape:
        raise ShapeError(
            f"out: has shape {shape_str(out.shape)} but the result has shape "
            f"{shape_str(logits.shape)}"
        )


def forward_dims(log_probs: torch.Tensor, reference: torch.Tensor) -> None:
    """``ForwardDims::of``: ``log_probs (..., L, T, V)`` against ``reference (..., T, V)``."""
    dims("log_probs", log_probs)
    dims("reference", reference)
    shape = tuple(log_probs.shape)
    if len(shape) < 3:
        raise ShapeError(
            f"log_probs: expected shape (..., L, T, V) with at least 3 axes, got {shape_str(shape)}"
        )
    expected = shape[:-3] + shape[-2:]
    if tuple(reference.shape) != expected:
        raise ShapeError(
            f"reference: shape {shape_str(reference.shape)} does not match log_probs shape "
            f"{shape_str(shape)}; expected {shape_str(expected)} (log_probs' shape without its "
            "layer axis -3)"
        )
    if shape[-3] > 0:  # the core compares dtypes only when there is a layer to read
        same_dtype("reference", log_probs, reference)
