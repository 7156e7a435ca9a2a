"""Heat-map containers: per-cell labels, hover tables and (layer × position) statistics.

A :class:`TrajectoryStatistic` holds a 2-D array ``stats`` of shape ``(n_layers, seq_len)``
(the last row usually being the model's own output) plus optional labels, and renders itself
as a Plotly heat map. :class:`TrajectoryLabels` holds the text written in each cell and the
table shown when hovering over it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError, TrajectoryShapeError

if TYPE_CHECKING:  # pragma: no cover
    from plotly import graph_objects as go

__all__ = [
    "TrajectoryLabels",
    "TrajectoryShapeError",
    "TrajectoryStatistic",
    "trunc_string_left",
]

# Appended i times to the i-th x label so that Plotly does not merge equal token labels.
_ZERO_WIDTH_NON_JOINER = "\u200c"


def trunc_string_left(string: str, new_len: int) -> str:
    """Fit a string into exactly ``new_len`` characters, keeping its right end.

    Shorter strings are left-padded with spaces; longer ones lose characters on the left.

    Args:
        string: The string to fit.
        new_len: The width of the result (``<= 0`` gives an empty string).

    Returns:
        A string of length ``max(new_len, 0)``.

    Example:
        >>> trunc_string_left("abc", 5)
        '  abc'
        >>> trunc_string_left("abcdef", 4)
        'cdef'
    """
    if new_len <= 0:
        return ""
    return " " * (new_len - len(string)) + string[-new_len:]


def _stride_keep_last(x: Any, stride: int) -> Any:
    """Rows ``0, stride, 2·stride, …`` among all but the last, then always the last row.

    Args:
        x: An array (or sequence) whose first axis is the layer axis.
        stride: A positive step.

    Returns:
        The selected rows, as an array.
    """
    if stride < 1:
        raise InvalidInputError(f"stride must be a positive integer, got {stride}", option="stride")
    x = np.asarray(x)
    return np.concatenate([x[:-1:stride], x[-1:]])


@dataclass
class TrajectoryLabels:
    """Labels for each layer and position in the residual stream.

    Attributes:
        label_strings: ``(n_layers, seq_len)`` text written in each cell (e.g. the lens's top
            prediction).
        hover_over_entries: ``(n_layers, seq_len, rows, cols)`` table of strings shown when
            hovering over a cell (e.g. the top-k tokens and their probabilities), or ``None``.
    """

    label_strings: NDArray[np.str_]
    hover_over_entries: NDArray[np.str_] | None = None

    def __post_init__(self) -> None:
        self.label_strings = np.asarray(self.label_strings)
        if self.label_strings.ndim != 2:
            raise TrajectoryShapeError(
                f"label_strings must be (n_layers, seq_len), got shape {self.label_strings.shape}"
            )
        if self.hover_over_entries is not None:
            self.hover_over_entries = np.asarray(self.hover_over_entries)
            hover_shape = self.hover_over_entries.shape
            if len(hover_shape) != 4 or hover_shape[:2] != self.label_strings.shape:
                raise TrajectoryShapeError(
                    "hover_over_entries must be (n_layers, seq_len, rows, cols) with "
                    f"(n_layers, seq_len) = {self.label_strings.shape}, got {hover_shape}"
                )

    def stride(self, stride: int) -> TrajectoryLabels:
        """Return a new TrajectoryLabels with the given stride (the last row is kept).

        Args:
            stride: The number of layers between each layer we keep.

        Returns:
            A new TrajectoryLabels with the given stride.
        """
        hover = self.hover_over_entries
        return replace(
            self,
            label_strings=_stride_keep_last(self.label_strings, stride),
            hover_over_entries=None if hover is None else _stride_keep_last(hover, stride),
        )

    def template_and_customdata(self, col_width_limit: int = 10) -> tuple[str, NDArray[np.str_]]:
        """Build a Plotly ``hovertemplate`` and the matching ``customdata``.

        Every hover column gets the width ``min(longest entry in the column + 1,
        col_width_limit)``; each entry is left-padded with spaces to that width, and an entry
        that is too long keeps its rightmost characters. The template shows row ``r`` as
        ``%{customdata[r*cols]}…%{customdata[r*cols+cols-1]}`` followed by ``<br>``, and ends
        with ``<extra></extra>`` (which hides Plotly's trace-name box).

        Args:
            col_width_limit: The widest a hover column may be, in characters.

        Returns:
            The template string and the customdata array of shape
            ``(n_layers, seq_len, rows * cols)``.
        """
        if self.hover_over_entries is None:
            raise InvalidInputError(
                "these labels have no hover_over_entries to build a template from"
            )
        if col_width_limit < 1:
            raise InvalidInputError(
                f"col_width_limit must be positive, got {col_width_limit}", option="col_width_limit"
            )
        entries = np.asarray(self.hover_over_entries).astype(np.str_)
        n_layers, seq_len, n_rows, n_cols = entries.shape
        columns = entries.reshape(-1, n_cols)
        fitted = []
        for col in range(n_cols):
            column = columns[:, col]
            lengths = np.char.str_len(column)
            width = int(min(lengths.max(initial=0) + 1, col_width_limit))
            too_long = np.flatnonzero(lengths > width)
            if too_long.size:  # keep the rightmost characters
                column = column.astype(object)
                column[too_long] = [str(s)[-width:] for s in column[too_long]]
                column = column.astype(np.str_)
            fitted.append(np.char.rjust(column, width))
        customdata = np.stack(fitted, axis=-1).reshape(n_layers, seq_len, n_rows * n_cols)
        template = "".join(
            "".join(f"%{{customdata[{row * n_cols + col}]}}" for col in range(n_cols)) + "<br>"
            for row in range(n_rows)
        )
        return template + "<extra></extra>", customdata


@dataclass
class TrajectoryStatistic:
    """A (layer × position) quantity that can be shown as a heat map.

    For example, the entropy of the lens predictions at each layer.

    Attributes:
        name: The name of the statistic, e.g. ``"Entropy"``.
        stats: ``(n_layers, seq_len)`` value of the statistic across layer and position.
        sequence_labels: ``(seq_len,)`` labels of the positions, e.g. the input tokens.
        trajectory_labels: Labels of each cell, e.g. the top-1 prediction of the lens.
        units: The units of the statistic (``"nats"``, ``"probs"``, ``""``).
        max: The largest value the colour scale shows (``None``: the data's maximum).
        min: The smallest value the colour scale shows (``None``: the data's minimum).
        includes_output: Whether the last row is the model's output (labelled ``"output"``).
    """

    name: str
    stats: NDArray[np.float32]
    sequence_labels: NDArray[np.str_] | None = None
    trajectory_labels: TrajectoryLabels | None = None
    units: str | None = None
    max: float | None = None
    min: float | None = None
    includes_output: bool = True
    _layer_labels: NDArray[np.str_] | None = None

    def __post_init__(self) -> None:
        self.stats = np.asarray(self.stats)
        if self.stats.ndim != 2:
            raise TrajectoryShapeError(
                f"stats must be (n_layers, seq_len), got shape {self.stats.shape}"
            )
        if (
            self.trajectory_labels is not None
            and self.trajectory_labels.label_strings.shape != self.stats.shape
        ):
            raise TrajectoryShapeError(
                f"trajectory_labels.label_strings has shape "
                f"{self.trajectory_labels.label_strings.shape}, stats has {self.stats.shape}"
            )
        if self.sequence_labels is not None:
            self.sequence_labels = np.asarray(self.sequence_labels)
            if self.sequence_labels.shape[-1:] != self.stats.shape[-1:]:
                raise TrajectoryShapeError(
                    f"sequence_labels has shape {self.sequence_labels.shape}, expected "
                    f"({self.stats.shape[-1]},) to match stats {self.stats.shape}"
                )
        if self._layer_labels is None:
            n_rows = self.stats.shape[0]
            if self.includes_output:
                names = [*map(str, range(n_rows - 1)), "output"] if n_rows else []
            else:
                names = [*map(str, range(n_rows))]
            self._layer_labels = np.array(names, dtype=np.str_)
        elif len(self._layer_labels) != self.stats.shape[0]:
            raise TrajectoryShapeError(
                f"{len(self._layer_labels)} layer labels for {self.stats.shape[0]} rows"
            )

    def clip(self, min: float, max: float) -> TrajectoryStatistic:  # noqa: A002
        """Return a new TrajectoryStatistic clipped to ``[min, max]``, with that colour range.

        Args:
            min: The minimum value to clip to.
            max: The maximum value to clip to.

        Returns:
            A new TrajectoryStatistic with the given min and max.
        """
        if not min < max:
            raise InvalidInputError(f"clip needs min < max, got min={min}, max={max}", option="min")
        return replace(self, stats=np.clip(self.stats, min, max), max=max, min=min)

    def stride(self, stride: int) -> TrajectoryStatistic:
        """Return a new TrajectoryStatistic keeping every ``stride``-th layer and the last row.

        Args:
            stride: The number of layers between each layer we keep.

        Returns:
            A new TrajectoryStatistic with the given stride.
        """
        labels = self.trajectory_labels
        return replace(
            self,
            stats=_stride_keep_last(self.stats, stride),
            trajectory_labels=None if labels is None else labels.stride(stride),
            _layer_labels=_stride_keep_last(self._layer_labels, stride),
        )

    def heatmap(
        self, colorscale: str = "rdbu_r", log_scale: bool = False, **kwargs: Any
    ) -> go.Heatmap:
        """Return a Plotly heat map of this statistic.

        Args:
            colorscale: The colour scale of the heat map.
            log_scale: Colour by ``log10`` of the statistic, with ticks at powers of ten.
            **kwargs: Passed to ``plotly.graph_objects.Heatmap``; they override the defaults.

        Returns:
            A heat map whose x axis is the position (``sequence_labels``), y axis the layer,
            and colour the statistic.
        """
        from plotly import graph_objects as go

        finite = self.stats[np.isfinite(self.stats)]
        zmax = self.max if self.max is not None else (finite.max() if finite.size else None)
        zmin = self.min if self.min is not None else (finite.min() if finite.size else None)
        title = f"{self.name} ({self.units})"
        colorbar: dict[str, Any] = {"title": {"text": title, "side": "right"}}
        z = self.stats
        if log_scale:
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.log10(self.stats)
                zmax = None if zmax is None or zmax <= 0 else float(np.log10(zmax))
                zmin = None if zmin is None or zmin <= 0 else float(np.log10(zmin))
            if zmin is not None and zmax is not None:
                ticks = np.arange(math.ceil(zmin), math.floor(zmax) + 1)
                colorbar.update(
                    tickmode="array",
                    tickvals=ticks.tolist(),
                    ticktext=[f"10^{int(t)}" for t in ticks],
                )
        heatmap_kwargs: dict[str, Any] = {
            "y": self._layer_labels,
            "z": z,
            "colorbar": colorbar,
            "colorscale": colorscale,
            "zmax": None if zmax is None else float(zmax),
            "zmin": None if zmin is None else float(zmin),
        }
        if self.sequence_labels is not None:
            heatmap_kwargs["x"] = [
                str(label) + _ZERO_WIDTH_NON_JOINER * i
                for i, label in enumerate(self.sequence_labels.tolist())
            ]
        if self.trajectory_labels is not None:
            heatmap_kwargs.update(
                text=self.trajectory_labels.label_strings, texttemplate="<b>%{text}</b>"
            )
            if self.trajectory_labels.hover_over_entries is not None:
                template, customdata = self.trajectory_labels.template_and_customdata()
                heatmap_kwargs.update(
                    hoverlabel={"bgcolor": "rgb(42, 42, 50)", "font_family": "Monospace"},
                    customdata=customdata,
                    hovertemplate=template,
                )
        heatmap_kwargs.update(kwargs)
        return go.Heatmap(**heatmap_kwargs)

    def figure(
        self, title: str = "", colorscale: str = "rdbu_r", token_width: int = 80
    ) -> go.Figure:
        """Return a Plotly figure holding the heat map of this statistic.

        Args:
            title: The title of the plot (centred).
            colorscale: The colour scale of the heat map.
            token_width: The width of each position's column in pixels; the figure is
                ``200 + token_width * seq_len`` pixels wide.

        Returns:
            The figure, axes titled "Input" and "Layer".
        """
        from plotly import graph_objects as go

        return go.Figure(self.heatmap(colorscale)).update_layout(
            title_text=title,
            title_x=0.5,
            width=200 + token_width * self.stats.shape[1],
            xaxis_title="Input",
            yaxis_title="Layer",
        )

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Notebooks (Jupyter, VS Code, Colab) show the heat map inline, as its figure would.

        Plotly's notebook renderers build the bundle; outside a notebook it is empty.
        """
        return self.figure(title=self.name)._repr_mimebundle_(include, exclude, **kwargs)
