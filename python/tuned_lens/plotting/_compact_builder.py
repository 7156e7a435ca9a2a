"""Filling the per-cell arrays of a :class:`CompactTrajectory`, batch by batch.

The model runs on a few prompts at a time; :class:`~tuned_lens.decoding.LayerDecoder` yields
the rows of a few hundred real (unpadded) positions at a time, and each chunk is reduced at
once to the statistics of :data:`~tuned_lens.plotting._cells.CELL_STATISTICS` that apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..decoding import LayerDecoder, LogSoftmaxBuffers
from ..errors import InvalidInputError, TargetIndexError
from ..types import BoolArray, CausalLM, IdArray, LogProbs
from ._cells import Applies, CellStatistic, RowInputs, active_statistics
from ._model_inputs import TokenBatch

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..nn.lenses import Lens

__all__ = ["CompactBuilder", "next_token_targets"]


def next_token_targets(batch: TokenBatch, eos_id: int | None) -> IdArray:
    """``(N, T)`` (or ``(T,)``) the next input token; the last real one predicts eos (or 0)."""
    ids = batch.ids
    targets = np.empty_like(ids)
    targets[:, :-1] = ids[:, 1:]
    targets[:, -1] = eos_id if eos_id is not None else 0
    if batch.mask is not None:
        # The last real token of a right-padded row predicts eos, not padding.
        lengths = batch.mask.sum(axis=1)
        rows = np.flatnonzero((lengths > 0) & (lengths < ids.shape[1]))
        targets[rows, lengths[rows] - 1] = eos_id if eos_id is not None else 0
    return targets if not batch.single else targets[0]


class CompactBuilder:
    """Runs the model batch by batch and fills the per-cell arrays of a compact trajectory.

    Args:
        lens: The lens whose cells are kept.
        other_lens: A lens compared against, or None.
        model: The causal LM.
        batch: The ``(N, T)`` prompts.
        targets: ``(N, T)`` (or ``(T,)``) target ids, or None.
        anti_targets: Like ``targets``.
        track: ``(n,)`` ids whose log-probabilities are kept, or None.
        topk: Top tokens kept per cell.
        mask_input: Mask the prompt's ids in the lens rows.
        device: Where inputs go.
        chunk_rows: Positions decoded at once per layer.
    """

    def __init__(
        self,
        *,
        lens: Lens,
        other_lens: Lens | None,
        model: CausalLM,
        batch: TokenBatch,
        targets: IdArray | None,
        anti_targets: IdArray | None,
        track: IdArray | None,
        topk: int,
        mask_input: bool,
        device: torch.device,
        chunk_rows: int,
    ) -> None:
        self.lenses = (lens,) if other_lens is None else (lens, other_lens)
        self.model = model
        self.batch = batch
        self.targets = None if targets is None else np.atleast_2d(targets)
        self.anti_targets = None if anti_targets is None else np.atleast_2d(anti_targets)
        self.track = track
        self.topk = topk
        self.mask_input = mask_input
        self.device = device
        self.chunk_rows = chunk_rows
        options: set[Applies] = set()
        for option, value in (
            ("targets", targets),
            ("anti_targets", anti_targets),
            ("track", track),
            ("other_lens", other_lens),
        ):
            if value is not None:
                options.add(option)  # type: ignore[arg-type]
        self.statistics: tuple[CellStatistic, ...] = active_statistics(options)
        self.arrays: dict[str, NDArray[Any]] = {}
        self.vocab_size: int | None = None
        self.layers: tuple[int, ...] | None = None  # the decoded hidden-state indices
        self._buffers = LogSoftmaxBuffers(min_rows=chunk_rows)

    def _allocate(self, n_rows: int, vocab: int) -> None:
        n, t = self.batch.ids.shape
        if self.track is not None:
            bad = self.track[(self.track < 0) | (self.track >= vocab)]
            if bad.size:
                raise TargetIndexError(
                    f"tracked ids {bad.tolist()} are outside the vocabulary [0, {vocab})"
                )
        n_tracked = 0 if self.track is None else len(self.track)
        for statistic in self.statistics:
            self.arrays[statistic.name] = statistic.allocate((n, n_rows, t), self.topk, n_tracked)
        self.vocab_size = vocab

    def run(
        self, batch_size: int, progress: bool
    ) -> tuple[dict[str, NDArray[Any]], dict[str, NDArray[Any]] | None]:
        """Fill every array.

        Returns:
            ``(cells, comparison)``: the arrays by :class:`CellStatistic` name, those of the
            comparison lens apart (None without one).
        """
        from tqdm.auto import tqdm

        n = self.batch.ids.shape[0]
        with tqdm(total=n, unit="prompt", desc="lens trajectory", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                self._run_batch(start, stop)
                bar.update(stop - start)
        if not self.arrays:
            raise InvalidInputError("every prompt is empty (all padding)", option="input_ids")
        cells: dict[str, NDArray[Any]] = {}
        compared: dict[str, NDArray[Any]] = {}
        for statistic in self.statistics:
            into = compared if statistic.applies == "other_lens" else cells
            into[statistic.name] = self.arrays[statistic.name]
        return cells, (compared if len(self.lenses) > 1 else None)

    def _run_batch(self, start: int, stop: int) -> None:
        ids = self.batch.ids[start:stop]
        mask = None if self.batch.mask is None else self.batch.mask[start:stop]
        width = _used_width(ids, mask)
        if width == 0:
            return
        ids, mask = ids[:, :width], None if mask is None else mask[:, :width]
        decoder = LayerDecoder.from_model(
            self.lenses,
            self.model,
            ids,
            mask,
            self.device,
            mask_input=self.mask_input,
            buffers=self._buffers,
        )
        if not self.arrays:
            self._allocate(len(decoder.layers) + 1, decoder.vocab_size)
            self.layers = decoder.layers
        elif self.layers != decoder.layers:
            raise InvalidInputError(
                "the model's number of layers changed between batches", option="model"
            )
        # Only real tokens are decoded.
        positions = None if mask is None else np.flatnonzero(mask.reshape(-1))
        model_lp: LogProbs | None = None
        for item in decoder.rows(positions, chunk_rows=self.chunk_rows):
            if item.is_output:
                model_lp = item.log_probs[0]
            assert model_lp is not None  # the output row leads every chunk
            prompts, columns = np.divmod(item.positions, width)
            # The model row is compared with itself (as in two full trajectories of one model).
            other_lp = item.log_probs[1] if len(item.log_probs) > 1 else None
            self._store(item.row, (start + prompts, columns), item.log_probs[0], model_lp, other_lp)

    def _store(
        self,
        row: int,
        where: tuple[IdArray, IdArray],
        lp: LogProbs,
        model_lp: LogProbs,
        other_lp: LogProbs | None,
    ) -> None:
        prompts, positions = where
        inputs = RowInputs(
            lp=lp,
            model_lp=model_lp,
            other_lp=other_lp,
            topk=self.topk,
            targets=None if self.targets is None else self.targets[prompts, positions],
            anti_targets=None
            if self.anti_targets is None
            else self.anti_targets[prompts, positions],
            track=self.track,
        )
        index = (prompts, row, positions)
        for statistic in self.statistics:
            self.arrays[statistic.name][index] = statistic.compute(inputs)


def _used_width(ids: IdArray, mask: BoolArray | None) -> int:
    """Columns up to the last real token of any prompt in the batch.

    Trailing columns padded in every prompt of a batch are not run through the model at all.
    """
    if mask is None:
        return int(ids.shape[1])
    used = np.flatnonzero(mask.any(axis=0))
    return int(used.max()) + 1 if used.size else 0
