"""Trajectories over many prompts that keep only per-cell statistics.

The full :class:`~tuned_lens.plotting.PredictionTrajectory` stores ``(N, L+1, T, V)``
log-probabilities: 100 GB for SmolLM2-135M on 64 prompts of 256 tokens. The
:class:`CompactTrajectory` builder runs the model batch by batch, decodes one layer of a few
hundred positions at a time, reduces it at once with :mod:`tuned_lens.lens_stats` (or its
torch twin for CUDA tensors) and keeps only what the plots need, per cell:

* entropy, forward KL against the model row, max probability, the top-k tokens and their
  probabilities;
* with ``targets``: the target's log-probability (cross entropy) and rank; with
  ``anti_targets``: the anti-target's log-probability;
* with ``track=[ids]``: the log-probability of each tracked token;
* with ``other_lens``: KL, Jensen–Shannon, symmetrised KL, total variation and max |Δp|
  against the other lens, and the top-k tokens by probability change.

That list is one table, :data:`tuned_lens.plotting._cells.CELL_STATISTICS`; the rows come from
:class:`tuned_lens.decoding.LayerDecoder` (the one layer-decoding loop), filled by
:mod:`tuned_lens.plotting._compact_builder`. The statistic methods are the same as the full path's and return the same
:class:`~tuned_lens.plotting.TrajectoryStatistic` (averaged over prompts).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray

from .. import lens_stats
from ..decoding import check_model_inputs, model_device
from ..errors import InvalidInputError, MissingTargetsError, TrajectoryShapeError
from ..types import BoolArray, CausalLM, F32Array, IdArray, TokenIds, Tokenizer
from . import _model_inputs
from ._cells import CELL_STATISTICS, POSITION_FIELDS
from ._explorable import ExplorableMixin
from ._rows import check_row_layers
from ._statistics import PairwiseKind, TrajectoryStatisticsMixin

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..nn.lenses import Lens

_T = TypeVar("_T")

PromptSelection: TypeAlias = int | slice | Sequence[int] | IdArray | BoolArray
"""Which prompts to keep: one index, a slice, an index array or a boolean mask over ``N``."""

__all__ = ["CompactTrajectory", "PairwiseCells"]

# Rows (positions) decoded at once per layer: a few tens of MB of logits at V ≈ 50k, small
# enough to stay out of fresh-page territory, large enough to amortise the lens call.
_DEFAULT_CHUNK_ROWS = 256


@dataclass
class PairwiseCells:
    """Per-cell comparisons of a trajectory with another lens's, each ``(N, L+1, T)``.

    Attributes:
        kl: ``KL(self ‖ other)``.
        js: The true Jensen–Shannon divergence.
        symmetric_kl: ``½KL(self‖other) + ½KL(other‖self)`` (the original library's "JS").
        tv: Total variation ``½Σ|p − q|``.
        max_abs_diff: ``max |p − q|`` (the original library's "TV").
        delta_ids: ``(N, L+1, T, k)`` tokens with the largest ``|p_other − p_self|``.
        deltas: ``(N, L+1, T, k)`` their signed ``p_other − p_self``.
    """

    kl: F32Array
    js: F32Array
    symmetric_kl: F32Array
    tv: F32Array
    max_abs_diff: F32Array
    delta_ids: IdArray
    deltas: F32Array

    def map(self, fn: Callable[[NDArray[Any]], NDArray[Any]]) -> PairwiseCells:
        """Apply ``fn`` to every array (e.g. a slice)."""
        return PairwiseCells(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})


@dataclass
class CompactTrajectory(TrajectoryStatisticsMixin, ExplorableMixin):
    """Per-cell statistics of a lens over ``N`` prompts, without the vocabulary axis.

    Cells are indexed ``(prompt, row, position)`` with ``L+1`` rows (the last is the model's
    output). Padded positions (``attention_mask`` False) hold NaN / 0 and are left out of
    every average and label.

    Attributes:
        input_ids: ``(N, T)`` token ids.
        entropy_cells: ``(N, L+1, T)`` entropy in nats.
        forward_kl_cells: ``(N, L+1, T)`` ``KL(model ‖ row)`` in nats.
        top_k_ids: ``(N, L+1, T, k)`` most probable tokens, by descending probability.
        top_k_probs: ``(N, L+1, T, k)`` their probabilities.
        targets: ``(N, T)`` or None.
        anti_targets: ``(N, T)`` or None.
        tokenizer: For labels, or None.
        attention_mask: ``(N, T)`` True at real tokens, or None when nothing is padded.
        target_log_prob_cells: ``(N, L+1, T)`` log-probability of the target, or None.
        target_rank_cells: ``(N, L+1, T)`` rank of the target (1 = most likely), or None.
        anti_target_log_prob_cells: ``(N, L+1, T)`` or None.
        tracked_ids: ``(n,)`` token ids followed at every cell, or None.
        tracked_log_probs: ``(N, L+1, T, n)`` their log-probabilities, or None.
        comparison: Statistics against another lens (on the layers both lenses cover), or
            None.
        vocab_size: The vocabulary size of the model.
        layers: The hidden-state index of each lens row when the lens (or the pair) covered
            only some layers; ``None``: rows ``0 .. L-1``.
    """

    input_ids: IdArray
    entropy_cells: F32Array
    forward_kl_cells: F32Array
    top_k_ids: IdArray
    top_k_probs: F32Array
    targets: IdArray | None = None
    anti_targets: IdArray | None = None
    tokenizer: Tokenizer | None = None
    attention_mask: BoolArray | None = None
    target_log_prob_cells: F32Array | None = None
    target_rank_cells: IdArray | None = None
    anti_target_log_prob_cells: F32Array | None = None
    tracked_ids: IdArray | None = None
    tracked_log_probs: F32Array | None = None
    comparison: PairwiseCells | None = None
    vocab_size: int | None = None
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        cells = self.entropy_cells.shape
        if len(cells) != 3 or self.input_ids.shape != (cells[0], cells[2]):
            raise TrajectoryShapeError(
                f"entropy_cells {cells} must be (N, L+1, T) with input_ids (N, T), got "
                f"input_ids {self.input_ids.shape}"
            )
        if self.top_k_ids.shape[:3] != cells or self.top_k_probs.shape != self.top_k_ids.shape:
            raise TrajectoryShapeError(
                f"top_k_ids {self.top_k_ids.shape} / top_k_probs {self.top_k_probs.shape} "
                f"must be (N, L+1, T, k) with (N, L+1, T) = {cells}"
            )
        if self.attention_mask is not None and bool(np.all(self.attention_mask)):
            self.attention_mask = None
        self.layers = check_row_layers(self.layers, self.num_layers)

    # ------------------------------------------------------------------ shape properties
    @property
    def batch_axes(self) -> tuple[int, ...]:
        """The batch axes (the prompt axis)."""
        return (0,)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """``(N,)``."""
        return (int(self.input_ids.shape[0]),)

    @property
    def n_batch_axis(self) -> int:
        """Always 1: the prompt axis."""
        return 1

    @property
    def num_prompts(self) -> int:
        """The number of prompts ``N``."""
        return int(self.input_ids.shape[0])

    @property
    def num_layers(self) -> int:
        """The number of lens layers, not counting the model-output row."""
        return int(self.entropy_cells.shape[1]) - 1

    @property
    def num_tokens(self) -> int:
        """The number of positions ``T``."""
        return int(self.input_ids.shape[1])

    @property
    def topk(self) -> int:
        """How many top tokens were kept per cell."""
        return int(self.top_k_ids.shape[-1])

    @property
    def nbytes(self) -> int:
        """Memory held by the per-cell arrays, in bytes."""
        total = 0
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                total += value.nbytes
            elif isinstance(value, PairwiseCells):
                total += sum(getattr(value, g.name).nbytes for g in fields(value))
        return total

    # ------------------------------------------------------------------ views
    def _map_cells(
        self,
        cut_positions: Callable[[NDArray[Any]], NDArray[Any]],
        cut_cells: Callable[[NDArray[Any]], NDArray[Any]],
    ) -> CompactTrajectory:
        """A copy with ``cut_positions`` applied to every ``(N, T)`` array and ``cut_cells``
        to every ``(N, L+1, T, ...)`` array (the cell table's)."""

        def maybe(fn: Callable[[NDArray[Any]], NDArray[Any]], value: Any) -> Any:
            return None if value is None else fn(value)

        changes: dict[str, Any] = {
            name: maybe(cut_positions, getattr(self, name)) for name in POSITION_FIELDS
        }
        for statistic in CELL_STATISTICS:
            if statistic.applies != "other_lens":
                changes[statistic.name] = maybe(cut_cells, getattr(self, statistic.name))
        comparison = self.comparison
        changes["comparison"] = None if comparison is None else comparison.map(cut_cells)
        return replace(self, **changes)

    def slice_sequence(self, slice: builtins.slice | int) -> CompactTrajectory:  # noqa: A002
        """Restrict every array to some positions (an int keeps one, with its axis).

        Args:
            slice: A ``slice`` of positions or one position.

        Returns:
            A new compact trajectory (views of this one's arrays).
        """
        if isinstance(slice, (int, np.integer)):
            index = int(slice) % self.num_tokens
            slice = builtins.slice(index, index + 1)

        cut = slice

        def cut_cells(a: NDArray[Any]) -> NDArray[Any]:
            return a[:, :, cut]

        return self._map_cells(lambda a: a[:, cut], cut_cells)

    def select_prompts(self, prompts: PromptSelection) -> CompactTrajectory:
        """Keep some prompts (an index array, a slice or a boolean mask over ``N``).

        Args:
            prompts: Which prompts to keep.

        Returns:
            A new compact trajectory.
        """
        keep = [int(prompts)] if isinstance(prompts, (int, np.integer)) else prompts
        return self._map_cells(lambda a: a[keep], lambda a: a[keep])

    # ------------------------------------------------------------------ cell hooks
    def _stored(self, value: _T | None, what: str, how: str) -> _T:
        if value is None:
            message = f"this compact trajectory has no {what}; build it with {how}"
            if what in ("targets", "anti_targets"):
                raise MissingTargetsError(message)
            raise InvalidInputError(message, option=how.split("=")[0])
        return value

    def _cell_entropy(self) -> NDArray[np.float32]:
        return self.entropy_cells

    def _cell_target_log_prob(
        self, which: Literal["targets", "anti_targets"]
    ) -> NDArray[np.float32]:
        if which == "targets":
            return self._stored(self.target_log_prob_cells, "targets", "targets=")
        return self._stored(self.anti_target_log_prob_cells, "anti_targets", "anti_targets=")

    def _cell_token_log_prob(self, token_id: int) -> NDArray[np.float32]:
        tracked = self._stored(self.tracked_ids, "tracked tokens", "track=[ids]")
        log_probs = self._stored(self.tracked_log_probs, "tracked tokens", "track=[ids]")
        where = np.flatnonzero(tracked == token_id)
        if where.size == 0:
            raise InvalidInputError(
                f"token {token_id} was not tracked; tracked ids are {tracked.tolist()}",
                option="track",
            )
        return log_probs[..., int(where[0])]

    def _cell_target_rank(self) -> NDArray[np.int64]:
        return self._stored(self.target_rank_cells, "targets", "targets=")

    def _cell_forward_kl(self) -> NDArray[np.float32]:
        return self.forward_kl_cells

    def _cell_max_probability(self) -> NDArray[np.float32]:
        return self.top_k_probs[..., 0]

    def _cell_top_k(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if not 1 <= k <= self.topk:
            raise InvalidInputError(
                f"topk must be in [1, {self.topk}] (as built), got {k}", option="topk"
            )
        return self.top_k_ids[..., :k], self.top_k_probs[..., :k]

    def _comparison(self, other: object) -> PairwiseCells:
        if other is not None and other is not self:
            raise InvalidInputError(
                "a compact trajectory compares only with the other_lens it was built with; "
                "call the method without `other`",
                option="other",
            )
        return self._stored(self.comparison, "comparison", "other_lens=")

    def _cell_pairwise(self, other: object, kind: PairwiseKind) -> F32Array:
        cells: F32Array = getattr(self._comparison(other), kind)
        return cells

    def _cell_top_k_delta(self, other: object, k: int) -> tuple[IdArray, F32Array]:
        comparison = self._comparison(other)
        if not 1 <= k <= comparison.delta_ids.shape[-1]:
            raise InvalidInputError(
                f"topk must be in [1, {comparison.delta_ids.shape[-1]}] (as built), got {k}",
                option="topk",
            )
        return comparison.delta_ids[..., :k], comparison.deltas[..., :k]

    # ------------------------------------------------------------------ builder
    @classmethod
    def from_lens_and_model(
        cls,
        lens: Lens,
        model: CausalLM,
        input_ids: TokenIds,
        *,
        tokenizer: Tokenizer | None = None,
        targets: TokenIds | Literal["next"] | None = None,
        anti_targets: TokenIds | None = None,
        attention_mask: TokenIds | BoolArray | None = None,
        batch_size: int = 8,
        topk: int = 10,
        track: Sequence[int] | IdArray | None = None,
        other_lens: Lens | None = None,
        mask_input: bool = False,
        device: torch.device | str | None = None,
        chunk_rows: int = _DEFAULT_CHUNK_ROWS,
        progress: bool = True,
    ) -> CompactTrajectory:
        """Run the model over many prompts and keep per-cell statistics of the lens.

        Args:
            lens: A lens for the model; ``lens(h, i)`` gives logits for ``hidden_states[i]``.
            model: A Hugging Face causal language model.
            input_ids: ``(N, T)`` ids, one ``(T,)`` sequence, or a list of sequences of
                different lengths (right-padded; padding is never decoded).
            tokenizer: For labels (and its pad / eos ids).
            targets: Like ``input_ids``; or ``"next"`` for the next input token (the last
                position gets the tokenizer's eos id, or 0).
            anti_targets: Like ``input_ids``.
            attention_mask: ``(N, T)`` 1 at real tokens, 0 at padding (left or right).
            batch_size: Prompts per model call.
            topk: Top tokens kept per cell (at most :data:`tuned_lens.lens_stats.MAX_K`).
            track: Token ids whose log-probability is kept at every cell.
            other_lens: A second lens for the same model to compare against.
            mask_input: Give log-prob ``−inf`` in the lens rows to every token id occurring
                in the prompt (see :meth:`PredictionTrajectory.from_lens_and_model`).
            device: Where inputs go (default: the model's device); the model and lenses must
                live there. On CUDA the statistics run there in torch.
            chunk_rows: Positions decoded at once per layer.
            progress: Show a tqdm progress bar.

        Returns:
            The compact trajectory, with arrays of shape ``(N, L+1, T, ...)``.

        Raises:
            InvalidInputError: For a non-positive ``batch_size`` or ``chunk_rows``, or a
                ``topk`` outside ``[1, MAX_K]``.
            TargetIndexError: For input or tracked ids outside the vocabulary (input ids are
                checked before the model runs).

        Warns:
            UserWarning: Once, when a prompt is longer than ``max_position_embeddings``.
        """
        from ._compact_builder import CompactBuilder, next_token_targets

        _check_build_options(batch_size, chunk_rows, topk)
        pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        batch = _model_inputs.token_batch(
            input_ids, attention_mask=attention_mask, pad_token_id=pad_id
        )
        if isinstance(targets, str):
            if targets != "next":
                raise InvalidInputError(
                    f'targets must be ids or "next", got {targets!r}', option="targets"
                )
            targets = next_token_targets(batch, getattr(tokenizer, "eos_token_id", None))
        targets_np = _model_inputs.aligned_ids(targets, batch, "targets")
        anti_np = _model_inputs.aligned_ids(anti_targets, batch, "anti_targets")
        track_np = None if track is None else np.asarray(track, dtype=np.int64).reshape(-1)
        check_model_inputs(model, batch.ids, batch.mask)
        builder = CompactBuilder(
            lens=lens,
            other_lens=other_lens,
            model=model,
            batch=batch,
            targets=targets_np,
            anti_targets=anti_np,
            track=track_np,
            topk=topk,
            mask_input=mask_input,
            device=model_device(model, device),
            chunk_rows=chunk_rows,
        )
        cells, compared = builder.run(batch_size, progress)
        return cls(
            input_ids=batch.ids,
            targets=builder.targets,
            anti_targets=builder.anti_targets,
            tokenizer=tokenizer,
            attention_mask=batch.mask,
            tracked_ids=track_np,
            comparison=None if compared is None else PairwiseCells(**compared),
            vocab_size=builder.vocab_size,
            layers=builder.layers,
            **cells,
        )


def _check_build_options(batch_size: int, chunk_rows: int, topk: int) -> None:
    for option, value in (("batch_size", batch_size), ("chunk_rows", chunk_rows)):
        if value < 1:
            raise InvalidInputError(f"{option} must be positive, got {value}", option=option)
    if not 1 <= topk <= lens_stats.MAX_K:
        raise InvalidInputError(
            f"topk must be in [1, {lens_stats.MAX_K}], got {topk}", option="topk"
        )
