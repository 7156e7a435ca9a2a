"""The demo's thread policy: one torch thread for small models on the CPU, else torch's own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "SINGLE_THREAD_BELOW_PARAMS",
    "choose_threads",
    "on_cpu_and_large",
    "threads_restored",
]

# Below this many parameters a model's matrix products are too small to gain from several
# threads; on a busy machine, spinning OpenMP threads then make training >10x slower.
SINGLE_THREAD_BELOW_PARAMS = 50_000_000


def _on_cpu(model: torch.nn.Module) -> bool:
    return next(model.parameters()).device.type == "cpu"


def _parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_cpu_and_large(model: torch.nn.Module) -> bool:
    """Whether ``model`` runs on the CPU and is over the small-model threshold."""
    return _on_cpu(model) and _parameters(model) >= SINGLE_THREAD_BELOW_PARAMS


def choose_threads(model: torch.nn.Module, requested: int | None) -> int:
    """The number of torch threads to run ``model`` with.

    Args:
        model: The loaded model.
        requested: ``--threads``, which wins when given.

    Returns:
        ``requested``; else 1 for a model under :data:`SINGLE_THREAD_BELOW_PARAMS` on the CPU;
        else torch's current number of threads.
    """
    import torch

    if requested is not None:
        return requested
    small = _parameters(model) < SINGLE_THREAD_BELOW_PARAMS
    return 1 if _on_cpu(model) and small else torch.get_num_threads()


@contextlib.contextmanager
def threads_restored() -> Iterator[None]:
    """Put torch's number of threads back as it was when the block ends."""
    import torch

    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)
