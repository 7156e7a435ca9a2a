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

The statistic methods are the same as the full path's and return the same
:class:`~tuned_lens.plotting.TrajectoryStatistic` (averaged over prompts).
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from .. import lens_stats
from . import _model_inputs
from ._statistics import PairwiseKind, TrajectoryStatisticsMixin
from .trajectory_plotting import TrajectoryShapeError

if TYPE_CHECKING:  # pragma: no cover
    import torch

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

    kl: NDArray[np.float32]
    js: NDArray[np.float32]
    symmetric_kl: NDArray[np.float32]
    tv: NDArray[np.float32]
    max_abs_diff: NDArray[np.float32]
    delta_ids: NDArray[np.int64]
    deltas: NDArray[np.float32]

    def map(self, fn: Any) -> PairwiseCells:
        """Apply ``fn`` to every array (e.g. a slice)."""
        return PairwiseCells(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})


@dataclass
class CompactTrajectory(TrajectoryStatisticsMixin):
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
        comparison: Statistics against another lens, or None.
        vocab_size: The vocabulary size of the model.
    """

    input_ids: NDArray[np.int64]
    entropy_cells: NDArray[np.float32]
    forward_kl_cells: NDArray[np.float32]
    top_k_ids: NDArray[np.int64]
    top_k_probs: NDArray[np.float32]
    targets: NDArray[np.int64] | None = None
    anti_targets: NDArray[np.int64] | None = None
    tokenizer: Any = None
    attention_mask: NDArray[np.bool_] | None = None
    target_log_prob_cells: NDArray[np.float32] | None = None
    target_rank_cells: NDArray[np.int64] | None = None
    anti_target_log_prob_cells: NDArray[np.float32] | None = None
    tracked_ids: NDArray[np.int64] | None = None
    tracked_log_probs: NDArray[np.float32] | None = None
    comparison: PairwiseCells | None = None
    vocab_size: int | None = None

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
    def _map_cells(self, cut_ids: Any, cut_cells: Any) -> CompactTrajectory:
        def maybe(fn: Any, value: Any) -> Any:
            return None if value is None else fn(value)

        return replace(
            self,
            input_ids=cut_ids(self.input_ids),
            targets=maybe(cut_ids, self.targets),
            anti_targets=maybe(cut_ids, self.anti_targets),
            attention_mask=maybe(cut_ids, self.attention_mask),
            entropy_cells=cut_cells(self.entropy_cells),
            forward_kl_cells=cut_cells(self.forward_kl_cells),
            top_k_ids=cut_cells(self.top_k_ids),
            top_k_probs=cut_cells(self.top_k_probs),
            target_log_prob_cells=maybe(cut_cells, self.target_log_prob_cells),
            target_rank_cells=maybe(cut_cells, self.target_rank_cells),
            anti_target_log_prob_cells=maybe(cut_cells, self.anti_target_log_prob_cells),
            tracked_log_probs=maybe(cut_cells, self.tracked_log_probs),
            comparison=maybe(lambda c: c.map(cut_cells), self.comparison),
        )

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

        def cut_cells(a: NDArray[Any]) -> NDArray[Any]:
            return a[:, :, slice]

        return self._map_cells(lambda a: a[:, slice], cut_cells)

    def select_prompts(self, prompts: Any) -> CompactTrajectory:
        """Keep some prompts (an index array, a slice or a boolean mask over ``N``).

        Args:
            prompts: Which prompts to keep.

        Returns:
            A new compact trajectory.
        """
        if isinstance(prompts, (int, np.integer)):
            prompts = [int(prompts)]
        return self._map_cells(lambda a: a[prompts], lambda a: a[prompts])

    # ------------------------------------------------------------------ cell hooks
    def _stored(self, value: Any, what: str, how: str) -> Any:
        if value is None:
            raise ValueError(f"this compact trajectory has no {what}; build it with {how}")
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
        where = np.flatnonzero(tracked == token_id)
        if where.size == 0:
            raise ValueError(
                f"token {token_id} was not tracked; tracked ids are {tracked.tolist()}"
            )
        return self.tracked_log_probs[..., int(where[0])]

    def _cell_target_rank(self) -> NDArray[np.int64]:
        return self._stored(self.target_rank_cells, "targets", "targets=")

    def _cell_forward_kl(self) -> NDArray[np.float32]:
        return self.forward_kl_cells

    def _cell_max_probability(self) -> NDArray[np.float32]:
        return self.top_k_probs[..., 0]

    def _cell_top_k(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if not 1 <= k <= self.topk:
            raise ValueError(f"topk must be in [1, {self.topk}] (as built), got {k}")
        return self.top_k_ids[..., :k], self.top_k_probs[..., :k]

    def _comparison(self, other: Any) -> PairwiseCells:
        if other is not None and other is not self:
            raise ValueError(
                "a compact trajectory compares only with the other_lens it was built with; "
                "call the method without `other`"
            )
        return self._stored(self.comparison, "comparison", "other_lens=")

    def _cell_pairwise(self, other: Any, kind: PairwiseKind) -> NDArray[np.float32]:
        return getattr(self._comparison(other), kind)

    def _cell_top_k_delta(
        self, other: Any, k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        comparison = self._comparison(other)
        if not 1 <= k <= comparison.delta_ids.shape[-1]:
            raise ValueError(
                f"topk must be in [1, {comparison.delta_ids.shape[-1]}] (as built), got {k}"
            )
        return comparison.delta_ids[..., :k], comparison.deltas[..., :k]

    # ------------------------------------------------------------------ builder
    @classmethod
    def from_lens_and_model(
        cls,
        lens: Any,
        model: Any,
        input_ids: Any,
        *,
        tokenizer: Any = None,
        targets: Any = None,
        anti_targets: Any = None,
        attention_mask: Any = None,
        batch_size: int = 8,
        topk: int = 10,
        track: Any = None,
        other_lens: Any = None,
        mask_input: bool = False,
        device: Any = None,
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
            topk: Top tokens kept per cell (at most 64).
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
        """
        if batch_size < 1 or chunk_rows < 1:
            raise ValueError(
                f"batch_size and chunk_rows must be positive, got {batch_size}, {chunk_rows}"
            )
        if not 1 <= topk <= 64:
            raise ValueError(f"topk must be in [1, 64], got {topk}")
        pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        batch = _model_inputs.token_batch(
            input_ids, attention_mask=attention_mask, pad_token_id=pad_id
        )
        if isinstance(targets, str):
            if targets != "next":
                raise ValueError(f'targets must be ids or "next", got {targets!r}')
            targets = _next_token_targets(batch, getattr(tokenizer, "eos_token_id", None))
        targets_np = _model_inputs.aligned_ids(targets, batch, "targets")
        anti_np = _model_inputs.aligned_ids(anti_targets, batch, "anti_targets")
        track_np = None if track is None else np.asarray(track, dtype=np.int64).reshape(-1)
        builder = _CompactBuilder(
            lens=lens,
            other_lens=other_lens,
            model=model,
            batch=batch,
            targets=targets_np,
            anti_targets=anti_np,
            track=track_np,
            topk=topk,
            mask_input=mask_input,
            device=_model_inputs.model_device(model, device),
            chunk_rows=chunk_rows,
        )
        builder.run(batch_size, progress)
        return builder.result(cls, tokenizer)


def _next_token_targets(batch: _model_inputs.TokenBatch, eos_id: int | None) -> NDArray[np.int64]:
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


class _CompactBuilder:
    """Runs the model batch by batch and fills the per-cell arrays of a CompactTrajectory."""

    def __init__(
        self,
        *,
        lens: Any,
        other_lens: Any,
        model: Any,
        batch: _model_inputs.TokenBatch,
        targets: NDArray[np.int64] | None,
        anti_targets: NDArray[np.int64] | None,
        track: NDArray[np.int64] | None,
        topk: int,
        mask_input: bool,
        device: Any,
        chunk_rows: int,
    ) -> None:
        self.lens = lens
        self.other_lens = other_lens
        self.model = model
        self.batch = batch
        self.targets = targets
        self.anti_targets = anti_targets
        self.track = track
        self.topk = topk
        self.mask_input = mask_input
        self.device = device
        self.chunk_rows = chunk_rows
        self.arrays: dict[str, NDArray[Any]] = {}
        self.vocab_size: int | None = None
        self._buffers: dict[str, NDArray[np.float32]] = {}

    # -------------------------------------------------------------- storage
    def _allocate(self, n_rows: int, vocab: int) -> None:
        n, t = self.batch.ids.shape
        k = self.topk
        cells = (n, n_rows, t)

        def floats(shape: tuple[int, ...]) -> NDArray[np.float32]:
            return np.full(shape, np.nan, dtype=np.float32)

        a = self.arrays
        a["entropy"] = floats(cells)
        a["forward_kl"] = floats(cells)
        a["top_k_ids"] = np.zeros(cells + (k,), dtype=np.int64)
        a["top_k_probs"] = floats(cells + (k,))
        if self.targets is not None:
            a["target_log_prob"] = floats(cells)
            a["target_rank"] = np.zeros(cells, dtype=np.int64)
        if self.anti_targets is not None:
            a["anti_target_log_prob"] = floats(cells)
        if self.track is not None:
            bad = self.track[(self.track < 0) | (self.track >= vocab)]
            if bad.size:
                raise IndexError(f"tracked ids {bad.tolist()} are outside [0, {vocab})")
            a["tracked"] = floats(cells + (len(self.track),))
        if self.other_lens is not None:
            for name in ("kl", "js", "symmetric_kl", "tv", "max_abs_diff"):
                a["cmp_" + name] = floats(cells)
            a["cmp_delta_ids"] = np.zeros(cells + (k,), dtype=np.int64)
            a["cmp_deltas"] = floats(cells + (k,))
        self.vocab_size = vocab

    def result(self, cls: type[CompactTrajectory], tokenizer: Any) -> CompactTrajectory:
        a = self.arrays
        comparison = None
        if self.other_lens is not None:
            comparison = PairwiseCells(
                kl=a["cmp_kl"],
                js=a["cmp_js"],
                symmetric_kl=a["cmp_symmetric_kl"],
                tv=a["cmp_tv"],
                max_abs_diff=a["cmp_max_abs_diff"],
                delta_ids=a["cmp_delta_ids"],
                deltas=a["cmp_deltas"],
            )
        return cls(
            input_ids=self.batch.ids,
            entropy_cells=a["entropy"],
            forward_kl_cells=a["forward_kl"],
            top_k_ids=a["top_k_ids"],
            top_k_probs=a["top_k_probs"],
            targets=self.targets if self.targets is None else np.atleast_2d(self.targets),
            anti_targets=None if self.anti_targets is None else np.atleast_2d(self.anti_targets),
            tokenizer=tokenizer,
            attention_mask=self.batch.mask,
            target_log_prob_cells=a.get("target_log_prob"),
            target_rank_cells=a.get("target_rank"),
            anti_target_log_prob_cells=a.get("anti_target_log_prob"),
            tracked_ids=self.track,
            tracked_log_probs=a.get("tracked"),
            comparison=comparison,
            vocab_size=self.vocab_size,
        )

    # -------------------------------------------------------------- main loop
    def run(self, batch_size: int, progress: bool) -> None:
        from tqdm.auto import tqdm

        n = self.batch.ids.shape[0]
        with tqdm(total=n, unit="prompt", desc="lens trajectory", disable=not progress) as bar:
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                self._run_batch(start, stop)
                bar.update(stop - start)

    def _run_batch(self, start: int, stop: int) -> None:
        import torch

        ids = self.batch.ids[start:stop]
        mask = None if self.batch.mask is None else self.batch.mask[start:stop]
        width = _used_width(ids, mask)
        if width == 0:
            return
        ids, mask = ids[:, :width], None if mask is None else mask[:, :width]
        hidden_states, model_logits = _model_inputs.run_model(self.model, ids, mask, self.device)
        n_layers = _model_inputs.check_lens_matches(self.lens, len(hidden_states))
        vocab = int(model_logits.shape[-1])
        if not self.arrays:
            self._allocate(n_layers + 1, vocab)
        elif self.arrays["entropy"].shape[1] != n_layers + 1:
            raise ValueError("the model's number of layers changed between batches")

        # Only real tokens are decoded: (prompt, position) of each kept row.
        flat_valid = np.ones(ids.size, bool) if mask is None else mask.reshape(-1)
        rows = np.flatnonzero(flat_valid)
        prompt_of_row, pos_of_row = np.divmod(rows, width)
        rows_t = torch.as_tensor(rows, device=model_logits.device)
        hidden_flat = [h.reshape(-1, h.shape[-1]) for h in hidden_states[:-1]]
        logits_flat = model_logits.reshape(-1, vocab)
        vocab_mask = None
        if self.mask_input:
            vocab_mask = torch.as_tensor(
                _model_inputs.input_vocab_mask(ids, mask, vocab), device=model_logits.device
            )

        with torch.no_grad():
            for lo in range(0, len(rows), self.chunk_rows):
                hi = min(lo + self.chunk_rows, len(rows))
                chunk = rows_t[lo:hi]
                where = (start + prompt_of_row[lo:hi], pos_of_row[lo:hi])
                row_prompts = torch.as_tensor(prompt_of_row[lo:hi], device=chunk.device)
                model_lp = self._log_softmax(logits_flat.index_select(0, chunk), "model")
                # The model row compared with itself (as in two full trajectories of one model).
                model_other = model_lp if self.other_lens is not None else None
                self._store_row(n_layers, where, model_lp, model_lp, model_other)
                for layer in range(n_layers):
                    h = hidden_flat[layer].index_select(0, chunk)
                    lp = self._decode(self.lens, h, layer, vocab_mask, row_prompts, "lens")
                    other_lp = None
                    if self.other_lens is not None:
                        other_lp = self._decode(
                            self.other_lens, h, layer, vocab_mask, row_prompts, "other"
                        )
                    self._store_row(layer, where, lp, model_lp, other_lp)
                    del lp, other_lp

    # -------------------------------------------------------------- per chunk
    def _decode(
        self,
        lens: Any,
        hidden: torch.Tensor,
        layer: int,
        vocab_mask: torch.Tensor | None,
        row_prompts: torch.Tensor,
        buffer: str,
    ) -> Any:
        logits = lens(hidden[None], layer)[0]
        if vocab_mask is not None:
            logits = logits.masked_fill(vocab_mask.index_select(0, row_prompts), float("-inf"))
        return self._log_softmax(logits, buffer)

    def _log_softmax(self, logits: torch.Tensor, buffer: str) -> Any:
        """Log-probabilities of ``(rows, V)`` logits, in the form the statistics read.

        float32 CPU logits are normalised by the Rust kernel into a reused buffer (no fresh
        pages per layer); half-precision and CUDA logits stay torch tensors in their own
        dtype, and the statistics read them without widening.
        """
        import torch

        logits = logits.detach()
        if logits.device.type == "cpu" and logits.dtype == torch.float32:
            rows, vocab = logits.shape
            buf = self._buffers.get(buffer)
            if buf is None or buf.shape[0] < rows or buf.shape[1] != vocab:
                buf = np.empty((max(rows, self.chunk_rows), vocab), dtype=np.float32)
                self._buffers[buffer] = buf
            out = buf[:rows]
            lens_stats.log_softmax(logits.contiguous(), out=out)
            return out
        return torch.log_softmax(logits, dim=-1)

    def _store_row(
        self,
        row: int,
        where: tuple[NDArray[np.int64], NDArray[np.int64]],
        lp: Any,
        model_lp: Any,
        other_lp: Any,
    ) -> None:
        a = self.arrays
        prompts, positions = where
        index = (prompts, row, positions)
        a["entropy"][index] = lens_stats.entropy(lp)
        a["forward_kl"][index] = lens_stats.kl_divergence(model_lp, lp)
        ids, probs = lens_stats.top_k(lp, self.topk)
        a["top_k_ids"][index] = ids
        a["top_k_probs"][index] = probs
        if self.targets is not None:
            targets = np.atleast_2d(self.targets)[prompts, positions]
            a["target_log_prob"][index] = lens_stats.target_log_prob(lp, targets)
            a["target_rank"][index] = lens_stats.target_rank(lp, targets)
        if self.anti_targets is not None:
            anti = np.atleast_2d(self.anti_targets)[prompts, positions]
            a["anti_target_log_prob"][index] = lens_stats.target_log_prob(lp, anti)
        if self.track is not None:
            a["tracked"][index] = _gather_columns(lp, self.track)
        if other_lp is not None:
            a["cmp_kl"][index] = lens_stats.kl_divergence(lp, other_lp)
            a["cmp_js"][index] = lens_stats.js_divergence(lp, other_lp)
            a["cmp_symmetric_kl"][index] = lens_stats.symmetric_kl(lp, other_lp)
            a["cmp_tv"][index] = lens_stats.total_variation(lp, other_lp)
            a["cmp_max_abs_diff"][index] = lens_stats.max_abs_diff(lp, other_lp)
            delta_ids, deltas = lens_stats.top_k_delta(lp, other_lp, self.topk)
            a["cmp_delta_ids"][index] = delta_ids
            a["cmp_deltas"][index] = deltas


def _used_width(ids: NDArray[np.int64], mask: NDArray[np.bool_] | None) -> int:
    """Columns up to the last real token of any prompt in the batch.

    Trailing columns padded in every prompt of a batch are not run through the model at all.
    """
    if mask is None:
        return int(ids.shape[1])
    used = np.flatnonzero(mask.any(axis=0))
    return int(used.max()) + 1 if used.size else 0


def _gather_columns(lp: Any, columns: NDArray[np.int64]) -> NDArray[np.float32]:
    """``lp[:, columns]`` as float32 numpy, for numpy arrays or (CPU/CUDA) torch tensors."""
    if isinstance(lp, np.ndarray):
        return lp[:, columns].astype(np.float32, copy=False)
    import torch

    picked = lp.index_select(1, torch.as_tensor(columns, device=lp.device))
    return picked.float().cpu().numpy()
