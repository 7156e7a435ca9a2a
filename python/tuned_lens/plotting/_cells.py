"""The one table of per-cell statistics a :class:`CompactTrajectory` keeps.

Each :class:`CellStatistic` says what is stored (name, dtype, the per-cell shape suffix), when
(always, or only with targets / anti-targets / tracked ids / a comparison lens) and how it is
computed from one chunk of decoded rows (:class:`RowInputs`). Allocation, storage, the
construction of the result and its slicing all walk :data:`CELL_STATISTICS`; adding a statistic
means adding a row here and a field to the dataclass that holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from .. import lens_stats
from ..types import F32Array, IdArray, LogProbs

__all__ = [
    "CELL_STATISTICS",
    "POSITION_FIELDS",
    "Applies",
    "CellStatistic",
    "RowInputs",
    "active_statistics",
]

Applies = Literal["always", "targets", "anti_targets", "track", "other_lens"]
"""When a statistic is kept: always, or only when the builder got that option."""

Suffix = Literal["", "k", "n_tracked"]
"""The per-cell shape after ``(N, L+1, T)``: none, ``(topk,)`` or ``(len(track),)``."""

# The per-position arrays ``(N, T)`` of a compact trajectory, sliced with the cells.
POSITION_FIELDS = ("input_ids", "targets", "anti_targets", "attention_mask")


@dataclass
class RowInputs:
    """One chunk of decoded rows and what the statistics of its cells read.

    Attributes:
        lp: ``(n, V)`` log-probabilities of the row (lens layer or output).
        model_lp: ``(n, V)`` the model's log-probabilities at the same positions.
        other_lp: ``(n, V)`` the comparison lens's, or None.
        topk: Top tokens kept per cell.
        targets: ``(n,)`` target ids, or None.
        anti_targets: ``(n,)`` anti-target ids, or None.
        track: ``(n_tracked,)`` tracked ids, or None.
    """

    lp: LogProbs
    model_lp: LogProbs
    other_lp: LogProbs | None
    topk: int
    targets: IdArray | None
    anti_targets: IdArray | None
    track: IdArray | None

    @cached_property
    def top_k(self) -> tuple[IdArray, F32Array]:
        """``lens_stats.top_k`` of the row, computed once for both stored arrays."""
        return lens_stats.top_k(self.lp, self.topk)

    @cached_property
    def top_k_delta(self) -> tuple[IdArray, F32Array]:
        """``lens_stats.top_k_delta`` against the comparison lens, computed once."""
        return lens_stats.top_k_delta(self.lp, self._other, self.topk)

    @property
    def _other(self) -> LogProbs:
        assert self.other_lp is not None, "a comparison statistic needs other_lp"
        return self.other_lp

    def _ids(self, ids: IdArray | None) -> IdArray:
        assert ids is not None, "a target statistic needs its ids"
        return ids


@dataclass(frozen=True)
class CellStatistic:
    """One array of per-cell values.

    Attributes:
        name: The attribute that holds it: a :class:`CompactTrajectory` field, or a
            :class:`PairwiseCells` field when ``applies == "other_lens"``.
        dtype: ``np.float32`` (unset cells NaN) or ``np.int64`` (unset cells 0).
        suffix: The per-cell shape suffix.
        applies: When it is kept.
        compute: ``(n, *suffix)`` values of a chunk of cells from its :class:`RowInputs`.
    """

    name: str
    dtype: type[np.float32] | type[np.int64]
    suffix: Suffix
    applies: Applies
    compute: Callable[[RowInputs], NDArray[Any]]

    def allocate(self, cells: tuple[int, int, int], topk: int, n_tracked: int) -> NDArray[Any]:
        """An unset ``(N, L+1, T, *suffix)`` array."""
        extra = {"": (), "k": (topk,), "n_tracked": (n_tracked,)}[self.suffix]
        fill = np.nan if self.dtype is np.float32 else 0
        return np.full(cells + extra, fill, dtype=self.dtype)


def _gather_columns(lp: LogProbs, columns: IdArray) -> F32Array:
    """``lp[:, columns]`` as float32 numpy, for numpy arrays or (CPU/CUDA) torch tensors."""
    if isinstance(lp, np.ndarray):
        return lp[:, columns].astype(np.float32, copy=False)
    import torch

    picked = lp.index_select(1, torch.as_tensor(columns, device=lp.device))
    return picked.float().cpu().numpy()


def _f32(
    name: str, applies: Applies, compute: Callable[[RowInputs], NDArray[Any]]
) -> CellStatistic:
    return CellStatistic(name, np.float32, "", applies, compute)


CELL_STATISTICS: tuple[CellStatistic, ...] = (
    _f32("entropy_cells", "always", lambda r: lens_stats.entropy(r.lp)),
    _f32("forward_kl_cells", "always", lambda r: lens_stats.kl_divergence(r.model_lp, r.lp)),
    CellStatistic("top_k_ids", np.int64, "k", "always", lambda r: r.top_k[0]),
    CellStatistic("top_k_probs", np.float32, "k", "always", lambda r: r.top_k[1]),
    _f32(
        "target_log_prob_cells",
        "targets",
        lambda r: lens_stats.target_log_prob(r.lp, r._ids(r.targets)),
    ),
    CellStatistic(
        "target_rank_cells",
        np.int64,
        "",
        "targets",
        lambda r: lens_stats.target_rank(r.lp, r._ids(r.targets)),
    ),
    _f32(
        "anti_target_log_prob_cells",
        "anti_targets",
        lambda r: lens_stats.target_log_prob(r.lp, r._ids(r.anti_targets)),
    ),
    CellStatistic(
        "tracked_log_probs",
        np.float32,
        "n_tracked",
        "track",
        lambda r: _gather_columns(r.lp, r._ids(r.track)),
    ),
    _f32("kl", "other_lens", lambda r: lens_stats.kl_divergence(r.lp, r._other)),
    _f32("js", "other_lens", lambda r: lens_stats.js_divergence(r.lp, r._other)),
    _f32("symmetric_kl", "other_lens", lambda r: lens_stats.symmetric_kl(r.lp, r._other)),
    _f32("tv", "other_lens", lambda r: lens_stats.total_variation(r.lp, r._other)),
    _f32("max_abs_diff", "other_lens", lambda r: lens_stats.max_abs_diff(r.lp, r._other)),
    CellStatistic("delta_ids", np.int64, "k", "other_lens", lambda r: r.top_k_delta[0]),
    CellStatistic("deltas", np.float32, "k", "other_lens", lambda r: r.top_k_delta[1]),
)


def active_statistics(options: set[Applies]) -> tuple[CellStatistic, ...]:
    """The statistics kept when the builder got ``options`` (``"always"`` is implied)."""
    return tuple(s for s in CELL_STATISTICS if s.applies == "always" or s.applies in options)
