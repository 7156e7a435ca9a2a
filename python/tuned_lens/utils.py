"""Small helpers shared across the package."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "tensor_hash",
    "tensor_hash_of",
    "assert_type",
    "maybe_unpack",
    "pairwise",
    "shift_labels",
    "shift_preds",
]

T = TypeVar("T")

# numpy's default print options (numpy.set_printoptions docs). The unembedding hash is defined by
# np.array_str under these defaults, whatever the caller has set.
_DEFAULT_PRINT_OPTIONS: dict[str, Any] = {
    "precision": 8,
    "threshold": 1000,
    "edgeitems": 3,
    "linewidth": 75,
    "suppress": False,
    "nanstr": "nan",
    "infstr": "inf",
    "sign": "-",
    "floatmode": "maxprec",
    "formatter": None,
    "legacy": False,
}


def tensor_hash(array: np.ndarray) -> str:
    """Fingerprint an array the way the original tuned-lens did.

    The hash is ``sha256(np.array_str(array, precision=1))`` under numpy's default print options.
    Arrays with more than 1000 elements are summarised by numpy to their corner values, so the
    hash depends only on a few dozen numbers rounded to one decimal: it identifies a model
    cheaply, is equal for float16 and float32 copies, and is *not* a cryptographic checksum of
    the weights.

    Args:
        array: Any numpy array (convert tensors with ``t.float().cpu().numpy()`` first).

    Returns:
        A 64-character hex digest.
    """
    if not isinstance(array, np.ndarray):
        raise TypeError(f"tensor_hash expects a numpy array, got {type(array).__name__}")
    with np.printoptions(**_DEFAULT_PRINT_OPTIONS):
        text = np.array_str(array, precision=1)
    return hashlib.sha256(text.encode()).hexdigest()


def tensor_hash_of(tensor) -> str:
    """:func:`tensor_hash` of a torch tensor's float32 values, without a full float32 copy.

    numpy prints an array of more than 1000 elements as its first and last three entries along
    every axis longer than six, choosing the number format from those entries only. So the same
    text comes from a small array holding just those entries (plus one elided filler per axis),
    printed with summarisation forced on. This keeps hashing a 128k x 4096 bfloat16 head cheap.

    Args:
        tensor: A ``torch.Tensor`` of any dtype convertible to float32, on any device.

    Returns:
        The same digest as ``tensor_hash(tensor.float().cpu().numpy())``.
    """
    import torch

    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor_hash_of expects a torch.Tensor, got {type(tensor).__name__}")
    edge = _DEFAULT_PRINT_OPTIONS["edgeitems"]
    if tensor.numel() <= _DEFAULT_PRINT_OPTIONS["threshold"]:
        return tensor_hash(tensor.detach().to(device="cpu", dtype=torch.float32).numpy())
    small = tensor.detach()
    for axis, length in enumerate(tensor.shape):
        if length > 2 * edge:
            # first `edge`, one filler that numpy elides as "...", last `edge`
            keep = [*range(edge + 1), *range(length - edge, length)]
            index = torch.tensor(keep, device=small.device)
            small = small.index_select(axis, index)
    array = small.to(device="cpu", dtype=torch.float32).numpy()
    with np.printoptions(**{**_DEFAULT_PRINT_OPTIONS, "threshold": 0}):
        text = np.array_str(array, precision=1)
    return hashlib.sha256(text.encode()).hexdigest()


def assert_type(typ: type[T], obj: Any) -> T:
    """Return ``obj`` if it is an instance of ``typ``, else raise ``TypeError``."""
    if not isinstance(obj, typ):
        raise TypeError(f"expected {typ.__name__}, got {type(obj).__name__}")
    return obj


def maybe_unpack(x: Any) -> Any:
    """The first element of a tuple, or ``x`` itself."""
    return x[0] if isinstance(x, tuple) else x


def pairwise(iterable: Iterable[T]) -> Iterator[tuple[T, T]]:
    """Consecutive pairs: ``s -> (s0, s1), (s1, s2), ...``."""
    iterator = iter(iterable)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, item
        previous = item


def shift_labels(x, shift: int):
    """Drop the first ``shift`` positions (dim 1) if ``shift > 0``, the last ``-shift`` if < 0."""
    if shift > 0:
        return x[:, shift:]
    if shift < 0:
        return x[:, :shift]
    return x


def shift_preds(x, shift: int):
    """Drop the last ``shift`` positions (dim 1) if ``shift > 0``, the first ``-shift`` if < 0."""
    if shift > 0:
        return x[:, :-shift]
    if shift < 0:
        return x[:, -shift:]
    return x
