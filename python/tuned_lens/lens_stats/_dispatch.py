"""Where a statistic runs: CPU inputs go to the Rust core, CUDA tensors to the torch twin.

Private to :mod:`tuned_lens.lens_stats`; the facade's functions only name their arguments and
call :func:`run`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from . import _native
from .errors import meta_tensor, unsupported_dtype


def tensor_type() -> type | None:
    """``torch.Tensor`` if torch is imported (looked up without importing it), else ``None``."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.Tensor


def is_tensor(x: object) -> bool:
    tensor = tensor_type()
    return tensor is not None and isinstance(x, tensor)


def on_gpu(x: object) -> bool:
    """Whether ``x`` is a torch tensor on another device than the CPU (``meta`` included: the
    twin refuses it, in its order of checks)."""
    return is_tensor(x) and x.device.type != "cpu"  # type: ignore[attr-defined]


def to_numpy(arg: str, x: object) -> object:
    """Convert for the core without copying where possible (shape and dtype are its checks).

    A bfloat16 tensor becomes a ``uint16`` view of its bits, which the core reads as bfloat16;
    a tensor with its negative or conjugate bit set is resolved (copied) first.

    Raises:
        DTypeError: a tensor dtype numpy cannot represent (float8, ...).
        LensStatsError: a meta tensor (no data).
    """
    if isinstance(x, np.ndarray):
        return x
    if is_tensor(x):
        import torch

        if x.device.type == "meta":  # type: ignore[attr-defined]
            raise meta_tensor(arg)
        t = x.detach().resolve_neg().resolve_conj()  # type: ignore[attr-defined]
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16)
        try:
            return t.numpy()
        except TypeError:
            raise unsupported_dtype(arg, str(t.dtype)) from None
    return np.asarray(x)


def _wrap(result: object) -> object:
    """The core's numpy results as CPU tensors sharing their memory."""
    import torch

    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    return torch.from_numpy(result) if isinstance(result, np.ndarray) else result


def to_host(result: object) -> object:
    """The twin's tensors as numpy arrays (copied from the device)."""
    if isinstance(result, tuple):
        return tuple(to_host(r) for r in result)
    if is_tensor(result):
        return result.detach().cpu().numpy()  # type: ignore[attr-defined]
    return result


def run(name: str, args: Mapping[str, object], keep_device: bool, **options: object) -> object:
    """Run statistic ``name`` on its array arguments ``args`` (by name, in the core's order).

    Args:
        name: The function's name in the core and in the twin.
        args: The array arguments; a CUDA tensor among them sends the call to the twin.
        keep_device: Return torch tensors on the input's device when a tensor was passed
            (the twin's tensors as they are; the core's arrays wrapped without a copy).
        **options: Keyword arguments passed through (``k``, ``from_logits``, ``out``).

    Returns:
        What the core returns (numpy arrays, tuples of them, ints), or tensors (above).
    """
    values = args.values()
    if all(type(x) is np.ndarray for x in values):
        # The common case, kept short: a (4, 64) entropy call takes 1.6 us this way, 2.1 us
        # through the general path below (1.4 us before the facade became a package).
        return getattr(_native, name)(*values, **options)
    tensors = [x for x in values if is_tensor(x)]
    if any(on_gpu(t) for t in tensors):
        from . import _torch

        result = getattr(_torch, name)(*args.values(), **options)
        return result if keep_device else to_host(result)
    arrays = [to_numpy(arg, x) for arg, x in args.items()]
    result = getattr(_native, name)(*arrays, **options)
    return _wrap(result) if keep_device and tensors else result


def log_softmax_into(logits: object, out: object) -> object:
    """``log_softmax(logits, out=out)`` wherever each lives; returns ``out`` itself.

    CUDA logits into a CUDA tensor: the twin writes it. CUDA logits into host memory: computed
    on the device, then copied in. CPU logits: the core writes through a numpy view of ``out``
    (a CPU tensor or a numpy array).
    """
    args = {"logits": logits}
    if on_gpu(logits) and on_gpu(out):
        run("log_softmax", args, True, out=out)
    elif on_gpu(logits):
        out[...] = run("log_softmax", args, False)  # type: ignore[index]
    else:
        run("log_softmax", args, False, out=to_numpy("out", out))
    return out
