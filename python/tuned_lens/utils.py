"""Small helpers shared across the package."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
    "maybe_all_cat",
    "maybe_all_gather_lists",
    "maybe_all_reduce",
    "revcumsum",
    "send_to_device",
    "pytree_flatten",
    "pytree_map",
    "pytree_cat",
    "pytree_stack",
    "handle_name_conflicts",
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


def tensor_hash(arr: np.ndarray) -> str:
    """Fingerprint an array the way the original tuned-lens did.

    The hash is ``sha256(np.array_str(arr, precision=1))`` under numpy's default print options.
    Arrays with more than 1000 elements are summarised by numpy to their corner values, so the
    hash depends only on a few dozen numbers rounded to one decimal: it identifies a model
    cheaply, is equal for float16 and float32 copies, and is *not* a cryptographic checksum of
    the weights.

    Args:
        arr: Any numpy array (convert tensors with ``t.float().cpu().numpy()`` first).

    Returns:
        A 64-character hex digest.
    """
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"tensor_hash expects a numpy array, got {type(arr).__name__}")
    with np.printoptions(**_DEFAULT_PRINT_OPTIONS):
        text = np.array_str(arr, precision=1)
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


def pairwise(it: Iterable[T]) -> Iterator[tuple[T, T]]:
    """Consecutive pairs: ``s -> (s0, s1), (s1, s2), ...``."""
    iterator = iter(it)
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


# ----------------------------------------------------------------------------------------------
# The original's distributed and pytree helpers (kept for code written against it)
# ----------------------------------------------------------------------------------------------


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def maybe_all_cat(x: Any) -> Any:
    """Concatenate ``x`` from every rank along dim 0 (``x`` itself when not distributed)."""
    if not _distributed():
        return x
    import torch
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x)
    return torch.cat(parts)


def maybe_all_gather_lists(lst: list[Any]) -> list[Any]:
    """Concatenate a Python list from every rank (``lst`` itself when not distributed)."""
    if not _distributed():
        return lst
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, lst)
    return [item for part in gathered for item in part]


def maybe_all_reduce(x: Any, op: str = "mean") -> Any:
    """All-reduce ``x`` in place across ranks, ``op`` ``"mean"`` or ``"sum"``; returns ``x``."""
    if op not in ("mean", "sum"):
        from tuned_lens.errors import InvalidInputError

        raise InvalidInputError(f"op must be 'mean' or 'sum', got {op!r}", option="op")
    if not _distributed():
        return x
    import torch.distributed as dist

    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    if op == "mean":
        x /= dist.get_world_size()
    return x


def revcumsum(seq: Iterable[Any]) -> list[Any]:
    """Reverse cumulative sums: ``[a, b, c] -> [a + b + c, b + c, c]``."""
    out: list[Any] = []
    total: Any = None
    for item in reversed(list(seq)):
        total = item if total is None else total + item
        out.append(total)
    return out[::-1]


def pytree_flatten(tree: Any) -> Iterator[tuple[list[Any], Any]]:
    """``(path, leaf)`` for every non-container leaf of nested dicts, lists and tuples."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            for path, leaf in pytree_flatten(value):
                yield [key, *path], leaf
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            for path, leaf in pytree_flatten(value):
                yield [index, *path], leaf
    else:
        yield [], tree


def pytree_map(func: Any, tree: Any, strict: bool = True) -> Any:
    """Apply ``func`` to every tensor leaf of nested dicts, lists and tuples.

    With ``strict`` every leaf must be a tensor (``TypeError`` otherwise); without, other
    leaves are returned unchanged.
    """
    import torch

    if isinstance(tree, dict):
        return {key: pytree_map(func, value, strict) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(pytree_map(func, value, strict) for value in tree)
    if isinstance(tree, torch.Tensor):
        return func(tree)
    if strict:
        raise TypeError(f"found a {type(tree).__name__} leaf where a tensor was expected")
    return tree


def _pytree_combine(trees: list[Any], dim: int, combine: Any) -> Any:
    first = trees[0]
    if isinstance(first, dict):
        return {k: _pytree_combine([t[k] for t in trees], dim, combine) for k in first}
    if isinstance(first, (list, tuple)):
        return type(first)(
            _pytree_combine([t[i] for t in trees], dim, combine) for i in range(len(first))
        )
    return combine(trees, dim=dim)


def pytree_cat(trees: Iterable[Any], dim: int = 0) -> Any:
    """Concatenate matching tensor leaves of several trees of the same structure."""
    import torch

    return _pytree_combine(list(trees), dim, torch.cat)


def pytree_stack(trees: Iterable[Any], dim: int = 0) -> Any:
    """Stack matching tensor leaves of several trees of the same structure."""
    import torch

    return _pytree_combine(list(trees), dim, torch.stack)


def send_to_device(tree: Any, device: Any) -> Any:
    """Move every tensor of a tree to ``device``; other leaves are kept."""
    return pytree_map(lambda t: t.to(device), tree, strict=False)


@contextmanager
def handle_name_conflicts() -> Iterator[None]:
    """Re-raise ``from_pretrained``'s ``OSError`` with a hint about a same-named local folder."""
    try:
        yield
    except OSError as err:
        raise OSError(
            f"{err}\nHint: a local folder with the same name as the model (or lens) may shadow "
            "the Hub id; rename it or pass an absolute path."
        ) from err
