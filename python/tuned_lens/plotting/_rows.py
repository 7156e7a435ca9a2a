"""The rows of a trajectory: which hidden state each lens row decodes, and their labels.

A trajectory built with a lens that covers only some layers (see :mod:`tuned_lens._coverage`)
holds only those rows, plus the model's output row; its ``layers`` attribute lists their
hidden-state indices (``None``: every layer ``0 .. L-1``). Labels, the explorer's rows and
pairwise comparisons read the indices from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError, TrajectoryShapeError

__all__ = ["LayerRowsMixin", "check_row_layers", "row_positions", "shared_rows"]


def check_row_layers(layers: Sequence[int] | None, num_layers: int) -> tuple[int, ...] | None:
    """``layers`` as a tuple (``None`` when it is every layer ``0 .. num_layers-1``).

    Raises:
        TrajectoryShapeError: Not one ascending, non-negative index per lens row.
    """
    if layers is None:
        return None
    out = tuple(int(i) for i in layers)
    if len(out) != num_layers or list(out) != sorted(set(out)) or (out and out[0] < 0):
        raise TrajectoryShapeError(
            f"layers must be {num_layers} ascending hidden-state indices (one per lens row), "
            f"got {out}"
        )
    return None if out == tuple(range(num_layers)) else out


def row_positions(held: Sequence[int], layers: Sequence[int]) -> list[int]:
    """The row of each hidden-state index of ``layers`` among the ``held`` ones.

    Raises:
        InvalidInputError: An index that is not held, or ``layers`` not ascending.
    """
    missing = [i for i in layers if i not in held]
    if missing or list(layers) != sorted(set(layers)):
        raise InvalidInputError(
            f"layers must be ascending indices among the held {list(held)}, got {list(layers)}",
            option="layers",
        )
    return [list(held).index(i) for i in layers]


def shared_rows(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """The hidden-state indices both trajectories hold, ascending.

    Raises:
        InvalidInputError: They share none.
    """
    shared = sorted(set(a) & set(b))
    if not shared:
        raise InvalidInputError(
            f"the trajectories share no layer ({list(a)} and {list(b)})", option="other"
        )
    return shared


class LayerRowsMixin:
    """``layer_indices`` and ``row_labels`` from a ``layers`` attribute and ``num_layers``."""

    @property
    def num_layers(self) -> int:
        raise NotImplementedError

    @property
    def layer_indices(self) -> tuple[int, ...]:
        """The hidden-state index of every lens row: ``0 .. L-1``, or the layers that a lens
        covering only some decoded."""
        layers = getattr(self, "layers", None)
        return tuple(range(self.num_layers)) if layers is None else tuple(layers)

    @property
    def row_labels(self) -> list[str]:
        """The label of every row: the hidden-state indices, then ``"output"``."""
        return [*map(str, self.layer_indices), "output"]

    def _statistic_row_labels(self, includes_output: bool) -> NDArray[np.str_] | None:
        """Row labels for a statistic; None (the default labels) when every layer is held.

        Without the output row (a ``delta`` statistic, one row per step) a row is ``"a→b"``.
        """
        if getattr(self, "layers", None) is None:
            return None
        rows = self.row_labels
        if not includes_output:
            rows = [f"{a}→{b}" for a, b in zip(rows, rows[1:])]
        return np.array(rows, dtype=np.str_)

    def _align(self, other: object) -> tuple[Any, Any]:
        """``(self, other)`` restricted to the layers both hold (for pairwise statistics)."""
        return self, other
