"""The statistic methods shared by :class:`PredictionTrajectory` and the compact trajectory.

A trajectory class provides per-cell arrays of shape ``(*B, R, T)`` (``R`` = layers + the
model-output row, ``*B`` = batch axes) through the ``_cell_*`` hooks; this mixin averages them
over the batch axes (leaving out padded positions), builds the labels and wraps the result in
a :class:`TrajectoryStatistic` with the original library's names, units and ranges.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import MissingTargetsError
from ..types import Tokenizer
from . import _labels
from ._pairwise import (
    JS_DEFINITIONS,
    TV_DEFINITIONS,
    JSDefinition,
    PairwiseKind,
    TVDefinition,
    choose_definition,
)
from ._rows import LayerRowsMixin
from .token_formatter import TokenFormatter
from .trajectory_plotting import TrajectoryLabels, TrajectoryStatistic


class TrajectoryStatisticsMixin(LayerRowsMixin):
    """Statistic methods over per-cell arrays supplied by the ``_cell_*`` hooks.

    Subclasses define the attributes ``input_ids``, ``targets``, ``anti_targets``,
    ``tokenizer`` and ``attention_mask`` and the properties ``n_batch_axis``, ``num_layers``
    and ``num_tokens``.
    """

    input_ids: NDArray[np.int64]
    targets: NDArray[np.int64] | None
    anti_targets: NDArray[np.int64] | None
    tokenizer: Tokenizer | None
    attention_mask: NDArray[np.bool_] | None

    # ------------------------------------------------------------------ hooks
    @property
    def n_batch_axis(self) -> int:
        """The number of batch axes before ``(rows, T)`` in the per-cell arrays."""
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        """The number of lens layers, not counting the model-output row."""
        raise NotImplementedError

    @property
    def num_tokens(self) -> int:
        """The number of positions ``T``."""
        raise NotImplementedError

    def _cell_entropy(self) -> NDArray[np.float32]:
        raise NotImplementedError

    def _cell_target_log_prob(
        self, which: Literal["targets", "anti_targets"]
    ) -> NDArray[np.float32]:
        raise NotImplementedError

    def _cell_token_log_prob(self, token_id: int) -> NDArray[np.float32]:
        raise NotImplementedError

    def _cell_target_rank(self) -> NDArray[np.int64]:
        raise NotImplementedError

    def _cell_forward_kl(self) -> NDArray[np.float32]:
        raise NotImplementedError

    def _cell_max_probability(self) -> NDArray[np.float32]:
        raise NotImplementedError

    def _cell_top_k(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        raise NotImplementedError

    def _cell_pairwise(self, other: object, kind: PairwiseKind) -> NDArray[np.float32]:
        raise NotImplementedError

    def _cell_top_k_delta(
        self, other: object, k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _position_mask(self) -> NDArray[np.bool_] | None:
        """``(*B, T)`` True at real tokens, or None when nothing is padded."""
        return self.attention_mask

    def _batch_mean(self, cells: NDArray[Any]) -> NDArray[Any]:
        """Average ``(*B, R, T)`` cells over the batch axes, leaving out padded positions.

        Positions padded in every batch element give NaN.
        """
        n_batch = self.n_batch_axis
        if n_batch == 0:
            return cells
        axes = tuple(range(n_batch))
        mask = self._position_mask()
        if mask is None:
            return cells.mean(axis=axes)
        weights = np.broadcast_to(mask[..., None, :], cells.shape)
        total = np.where(weights, cells, 0).sum(axis=axes, dtype=np.float64)
        count = weights.sum(axis=axes)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        return mean.astype(np.float32) if cells.dtype == np.float32 else mean

    def _cell_valid(self) -> NDArray[np.bool_] | None:
        """``(*B, 1, T)`` validity of cells (broadcasts against ``(*B, R, T)``), or None."""
        mask = self._position_mask()
        return None if mask is None else mask[..., None, :]

    def _require(self, name: str) -> NDArray[np.int64]:
        value = getattr(self, name)
        if value is None:
            raise MissingTargetsError(
                f"this statistic needs `{name}`; pass {name}= when building the trajectory"
            )
        return value

    def _get_sequence_labels(
        self, token_formatter: TokenFormatter | None = None
    ) -> NDArray[np.str_] | None:
        """``(T,)`` formatted input tokens, ``"*"`` where batch elements differ."""
        if self.tokenizer is None:
            return None
        return _labels.consolidated_labels(
            self.input_ids,
            self.n_batch_axis,
            self._position_mask(),
            self.tokenizer,
            token_formatter or TokenFormatter(),
        )

    # ------------------------------------------------------------------ labels
    def largest_prob_labels(
        self,
        formatter: TokenFormatter | None = None,
        min_prob: float = 0.0,
        topk: int = 10,
        max_entries_to_show: int = 3,
    ) -> TrajectoryLabels | None:
        """Labels from the most probable tokens of every cell.

        The cell text is the top-1 token (``"*"`` where batch elements disagree), blanked in
        cells whose top-1 probability (averaged over the batch) is below ``min_prob``. The
        hover table lists the ``topk`` most probable tokens with ``"%.2f%%"`` probabilities for
        the first ``max_entries_to_show`` batch elements.

        Args:
            formatter: How tokens are shown (default :class:`TokenFormatter`).
            min_prob: Cells whose top-1 probability is below this get no label.
            topk: Rows of the hover table (at most 64).
            max_entries_to_show: Batch elements shown in the hover table.

        Returns:
            The labels, or ``None`` when the trajectory has no tokenizer.
        """
        if self.tokenizer is None:
            return None
        formatter = formatter or TokenFormatter()
        ids, probs = self._cell_top_k(topk)
        valid = self._cell_valid()
        labels = _labels.consolidated_labels(
            ids[..., 0], self.n_batch_axis, valid, self.tokenizer, formatter
        )
        if min_prob > 0:
            top_prob = self._batch_mean(probs[..., 0])
            labels = np.where(top_prob >= min_prob, labels, "")
        n_rows = ids.shape[-3]
        return TrajectoryLabels(
            label_strings=labels,
            hover_over_entries=_labels.batch_hover_table(
                ids,
                probs,
                self.tokenizer,
                formatter,
                n_rows,
                max_entries_to_show,
                self._position_mask(),
            ),
        )

    def largest_delta_in_prob_labels(
        self,
        other: object = None,
        formatter: TokenFormatter | None = None,
        min_prob_delta: float = 0.0,
        max_entries_to_show: int = 3,
        topk: int = 10,
    ) -> TrajectoryLabels | None:
        """Labels from the tokens whose probability changes most from ``self`` to ``other``.

        Tokens are ranked by ``|p_other − p_self|``; the hover values are the signed deltas
        ``"Δ%.2f%%"``. Cells whose largest ``|delta|`` (averaged over the batch) is below
        ``min_prob_delta`` get no label.

        Args:
            other: The trajectory compared with.
            formatter: How tokens are shown (default :class:`TokenFormatter`).
            min_prob_delta: Cells whose largest change is below this get no label.
            max_entries_to_show: Batch elements shown in the hover table.
            topk: Rows of the hover table (at most 64).

        Returns:
            The labels, or ``None`` when the trajectory has no tokenizer.
        """
        if self.tokenizer is None:
            return None
        formatter = formatter or TokenFormatter()
        ids, deltas = self._cell_top_k_delta(other, topk)
        valid = self._cell_valid()
        labels = _labels.consolidated_labels(
            ids[..., 0], self.n_batch_axis, valid, self.tokenizer, formatter
        )
        if min_prob_delta > 0:
            top_delta = self._batch_mean(np.abs(deltas[..., 0]))
            labels = np.where(top_delta >= min_prob_delta, labels, "")
        n_rows = ids.shape[-3]
        return TrajectoryLabels(
            label_strings=labels,
            hover_over_entries=_labels.batch_hover_table(
                ids,
                deltas,
                self.tokenizer,
                formatter,
                n_rows,
                max_entries_to_show,
                self._position_mask(),
                prefix="Δ",
            ),
        )

    # The original library's private names.
    _largest_prob_labels = largest_prob_labels
    _largest_delta_in_prob_labels = largest_delta_in_prob_labels

    def _statistic(
        self,
        name: str,
        units: str,
        cells: NDArray[Any],
        labels: TrajectoryLabels | None,
        *,
        formatter: TokenFormatter | None = None,
        min: float | None = None,  # noqa: A002
        max: float | None = None,  # noqa: A002
        includes_output: bool = True,
    ) -> TrajectoryStatistic:
        rows = self._statistic_row_labels(includes_output)
        return TrajectoryStatistic(
            name=name,
            units=units,
            stats=self._batch_mean(cells),
            trajectory_labels=labels,
            sequence_labels=self._get_sequence_labels(formatter),
            min=min,
            max=max,
            includes_output=includes_output,
            _layer_labels=rows,
        )

    # ------------------------------------------------------------------ statistics
    def cross_entropy(self, **kwargs: Any) -> TrajectoryStatistic:
        """The cross entropy ``−log q(target)`` of every row's prediction, in nats.

        A target masked by ``mask_input`` has probability 0 in the lens rows, so its cross
        entropy there is ``+inf``.

        Args:
            **kwargs: Passed to :meth:`largest_prob_labels`.

        Returns:
            "Cross Entropy" in "nats", shape ``(layers + 1, T)`` averaged over batch axes.
        """
        self._require("targets")
        labels = self.largest_prob_labels(**kwargs)
        cells = -self._cell_target_log_prob("targets")
        return self._statistic(
            "Cross Entropy", "nats", cells, labels, formatter=kwargs.get("formatter")
        )

    def rank(self, show_ranks: bool = False, **kwargs: Any) -> TrajectoryStatistic:
        """The rank of the target among every row's predictions (1 = most likely).

        Rank is ``1 + #{v : log q(v) > log q(target)}``, so tied tokens share the best rank
        (deterministic, unlike the original's argsort). Averaged over batch axes the rank may
        be fractional.

        Args:
            show_ranks: Write the (mean) rank in each cell instead of the top token.
            **kwargs: Passed to :meth:`largest_prob_labels`.

        Returns:
            "Rank" (units ``""``), min 1, max the tokenizer's vocab size (None without one).
        """
        self._require("targets")
        labels = self.largest_prob_labels(**kwargs)
        ranks = self._cell_target_rank()
        statistic = self._statistic(
            "Rank",
            "",
            ranks,
            labels,
            formatter=kwargs.get("formatter"),
            min=1,
            max=None if self.tokenizer is None else self.tokenizer.vocab_size,
        )
        if show_ranks:
            statistic.trajectory_labels = TrajectoryLabels(
                label_strings=_labels.rank_strings(statistic.stats),
                hover_over_entries=None if labels is None else labels.hover_over_entries,
            )
        return statistic

    def entropy(self, **kwargs: Any) -> TrajectoryStatistic:
        """The entropy ``−Σ q log q`` of every row's prediction, in nats.

        Tokens masked by ``mask_input`` have probability 0 and contribute nothing.

        Args:
            **kwargs: Passed to :meth:`largest_prob_labels`.

        Returns:
            "Entropy" in "nats".
        """
        labels = self.largest_prob_labels(**kwargs)
        return self._statistic(
            "Entropy", "nats", self._cell_entropy(), labels, formatter=kwargs.get("formatter")
        )

    def forward_kl(self, **kwargs: Any) -> TrajectoryStatistic:
        """``KL(model ‖ row)``: how far each row is from the model's output, in nats.

        The output row is 0. With ``mask_input`` the lens rows give probability 0 to the
        masked tokens while the model row does not, so this KL is ``+inf`` there (exactly
        what the divergence is; the original gave ~3e38 instead).

        Args:
            **kwargs: Passed to :meth:`largest_prob_labels`.

        Returns:
            "Forward KL" in "nats".
        """
        labels = self.largest_prob_labels(**kwargs)
        return self._statistic(
            "Forward KL",
            "nats",
            self._cell_forward_kl(),
            labels,
            formatter=kwargs.get("formatter"),
        )

    def log_prob_diff(self, delta: bool = False) -> TrajectoryStatistic:
        """``log q(target) − log q(anti_target)`` in every cell.

        Args:
            delta: Show the change from each row to the next instead (one row fewer, no
                output row).

        Returns:
            "Log Prob Difference" (or "Δ Log Prob Difference") in "nats", no cell labels.
        """
        self._require("targets")
        self._require("anti_targets")
        # −inf − (−inf) (both ids masked by mask_input) is NaN: there is no difference.
        with np.errstate(invalid="ignore"):
            cells = self._cell_target_log_prob("targets") - self._cell_target_log_prob(
                "anti_targets"
            )
            if delta:
                cells = np.diff(cells, axis=-2)
        return self._statistic(
            "Δ Log Prob Difference" if delta else "Log Prob Difference",
            "nats",
            cells,
            None,
            includes_output=not delta,
        )

    def max_probability(self, **kwargs: Any) -> TrajectoryStatistic:
        """The largest probability of every row's prediction.

        Args:
            **kwargs: Passed to :meth:`largest_prob_labels`.

        Returns:
            "Max Probability" in "probs".
        """
        labels = self.largest_prob_labels(**kwargs)
        return self._statistic(
            "Max Probability",
            "probs",
            self._cell_max_probability(),
            labels,
            formatter=kwargs.get("formatter"),
        )

    def token_log_prob(self, token_id: int, **kwargs: Any) -> TrajectoryStatistic:
        """The log-probability every row gives to one fixed token, in nats.

        Args:
            token_id: The vocabulary id to follow.
            **kwargs: Passed to :meth:`largest_prob_labels`.

        Returns:
            "Log Prob (<token>)" in "nats", max 0.
        """
        labels = self.largest_prob_labels(**kwargs)
        cells = self._cell_token_log_prob(int(token_id))
        shown = str(token_id)
        if self.tokenizer is not None:
            formatter = kwargs.get("formatter") or TokenFormatter()
            shown = str(
                _labels.format_token_ids(np.array([token_id]), self.tokenizer, formatter)[0]
            )
        return self._statistic(
            f"Log Prob ({shown})",
            "nats",
            cells,
            labels,
            formatter=kwargs.get("formatter"),
            max=0,
        )

    def kl_divergence(self, other: object = None, **kwargs: Any) -> TrajectoryStatistic:
        """``KL(self ‖ other)`` in every cell, in nats.

        Args:
            other: The trajectory compared with (same shapes).
            **kwargs: Passed to :meth:`largest_delta_in_prob_labels`.

        Returns:
            "KL(Self | Other)" in "nats", min 0.
        """
        this, other = self._align(other)
        cells = this._cell_pairwise(other, "kl")
        labels = this.largest_delta_in_prob_labels(other, **kwargs)
        return this._statistic(
            "KL(Self | Other)", "nats", cells, labels, formatter=kwargs.get("formatter"), min=0
        )

    def js_divergence(
        self, other: object = None, *, definition: JSDefinition = "jensen-shannon", **kwargs: Any
    ) -> TrajectoryStatistic:
        """The Jensen–Shannon divergence between ``self`` and ``other``, in nats.

        ``definition="jensen-shannon"`` (default) is the true JSD ``½KL(p‖m) + ½KL(q‖m)``
        with ``m = (p+q)/2``, in ``[0, ln 2]``. ``definition="original"`` gives what the
        original library called JS: the symmetrised KL ``½KL(p‖q) + ½KL(q‖p)``, unbounded,
        named "Symmetrised KL(Self | Other)".

        Args:
            other: The trajectory compared with (same shapes).
            definition: ``"jensen-shannon"`` or ``"original"``.
            **kwargs: Passed to :meth:`largest_delta_in_prob_labels`.

        Returns:
            "JS(Self | Other)" in "nats", min 0, max ln 2 (or the symmetrised KL).
        """
        kind, name, upper = choose_definition(JS_DEFINITIONS, definition)
        this, other = self._align(other)
        cells = this._cell_pairwise(other, kind)
        labels = this.largest_delta_in_prob_labels(other, **kwargs)
        return this._statistic(
            name, "nats", cells, labels, formatter=kwargs.get("formatter"), min=0, max=upper
        )

    def total_variation(
        self, other: object = None, *, definition: TVDefinition = "half-l1", **kwargs: Any
    ) -> TrajectoryStatistic:
        """The total variation distance ``½Σ|p − q|`` between ``self`` and ``other``.

        ``definition="original"`` gives what the original library called TV: the largest
        single-token difference ``max |p − q|``, named "Max |Δp|(Self | Other)".

        Args:
            other: The trajectory compared with (same shapes).
            definition: ``"half-l1"`` or ``"original"``.
            **kwargs: Passed to :meth:`largest_delta_in_prob_labels`.

        Returns:
            "TV(Self | Other)" in "probs", min 0, max 1.
        """
        kind, name = choose_definition(TV_DEFINITIONS, definition)
        this, other = self._align(other)
        cells = this._cell_pairwise(other, kind)
        labels = this.largest_delta_in_prob_labels(other, **kwargs)
        return this._statistic(
            name, "probs", cells, labels, formatter=kwargs.get("formatter"), min=0, max=1
        )
