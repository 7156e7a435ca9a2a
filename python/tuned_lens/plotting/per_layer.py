"""The per-layer curves of lens quality: KL(model ‖ lens), cross-entropy, entropy by layer.

:func:`per_layer_figure` is the one builder of these curves. The demo's ``kl_per_layer`` plot
(one panel, KL) and the evaluator's ``per_layer_metrics`` plot (three panels) are both drawn
by it, so a lens type added later appears in both with the same colours, names and hover text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

__all__ = [
    "METRIC_TITLES",
    "PerLayerErrors",
    "PerLayerValues",
    "per_layer_figure",
    "per_layer_from_aggregate",
]

#: lens name -> metric name -> layer index -> value (nats per token).
PerLayerValues = Mapping[str, Mapping[str, Mapping[int, float]]]

#: How each metric is named on a plot.
METRIC_TITLES = {
    "kl": "KL(model ‖ lens)",
    "ce": "cross-entropy",
    "entropy": "entropy",
    "top1": "top-1 agreement with the model",
    "overlap": "overlap@k with the model",
    "rank": "rank of the model's top token",
}
_HOVER_NAMES = {"kl": "KL", "ce": "CE", "entropy": "entropy", "top1": "top-1", "overlap": "overlap"}
#: The unit of each metric's axis and hover text (nats when not listed).
_UNITS = {
    "top1": "fraction",
    "overlap": "fraction",
    "rank": "rank",
    "kl_bpb": "bpb",
    "ce_bpb": "bpb",
}
_LENS_COLOURS = {
    "logit": "#1f77b4",
    "tuned": "#d62728",
    "jacobian": "#2ca02c",
    "shortcut": "#9467bd",
}

#: lens name -> metric name -> layer index -> (low, high) of an interval around the value.
PerLayerErrors = Mapping[str, Mapping[str, Mapping[int, tuple[float, float]]]]


def per_layer_from_aggregate(
    aggregate: Mapping[str, Mapping[str, Mapping[str, float]]],
    lens_names: Sequence[str],
    metrics: Sequence[str] = ("kl", "ce", "entropy"),
) -> tuple[dict[str, dict[str, dict[int, float]]], dict[str, float]]:
    """Read the evaluator's aggregate tree into :data:`PerLayerValues` and model baselines.

    Args:
        aggregate: ``{lens: {metric: {"layer_<j>": value}}, "baseline": {metric: {"final":
            value}}}``, as :func:`tuned_lens.training.eval_loop.evaluate_lenses` returns it.
        lens_names: The lenses to read, in legend order.
        metrics: The metrics to read (others in the tree are ignored).

    Returns:
        The per-layer values and ``{metric: value}`` of the model itself.
    """
    values: dict[str, dict[str, dict[int, float]]] = {}
    for name in lens_names:
        per_metric = aggregate.get(name, {})
        values[name] = {
            metric: {int(key.split("_")[1]): float(v) for key, v in per_metric[metric].items()}
            for metric in metrics
            if metric in per_metric
        }
    baseline = {
        metric: float(per_key["final"])
        for metric, per_key in aggregate.get("baseline", {}).items()
        if metric in metrics and "final" in per_key
    }
    return values, baseline


def _trace(
    lens: str,
    metric: str,
    per_layer: Mapping[int, float],
    *,
    legend: bool,
    errors: Mapping[int, tuple[float, float]] | None = None,
) -> go.Scatter:
    import plotly.graph_objects as go

    layers = sorted(per_layer)
    hover = _HOVER_NAMES.get(metric, metric)
    unit = _UNITS.get(metric, "nats")
    extra = {}
    if errors:
        extra["error_y"] = {
            "type": "data",
            "symmetric": False,
            "array": [errors[j][1] - per_layer[j] if j in errors else 0.0 for j in layers],
            "arrayminus": [per_layer[j] - errors[j][0] if j in errors else 0.0 for j in layers],
            "thickness": 1,
        }
    colour = _LENS_COLOURS.get(lens, _LENS_COLOURS.get(lens.split(":")[0]))
    return go.Scatter(
        x=layers,
        y=[per_layer[j] for j in layers],
        mode="lines+markers",
        name=f"{lens} lens",
        legendgroup=lens,
        showlegend=legend,
        line={"color": colour, "width": 3},
        hovertemplate=f"layer %{{x}}<br>{hover} %{{y:.3f}} {unit}<extra>{lens} lens</extra>",
        **extra,
    )


def per_layer_figure(
    values: PerLayerValues,
    *,
    metrics: Sequence[str] = ("kl",),
    baseline: Mapping[str, float] | None = None,
    title: str,
    width: int,
    height: int,
    errors: PerLayerErrors | None = None,
) -> go.Figure:
    """Curves of each lens's metrics by layer, one panel per metric.

    Args:
        values: lens name -> metric -> layer index -> value (nats per token); lenses are drawn
            in this order.
        metrics: The metrics to draw, one panel each, left to right.
        baseline: metric -> the model's own value, drawn as a dashed line marked "model"
            where given.
        title: The figure's title.
        width: Figure width in pixels.
        height: Figure height in pixels.
        errors: lens -> metric -> layer -> ``(low, high)``, drawn as error bars where given
            (e.g. the bootstrap intervals of :func:`tuned_lens.evaluate`).

    Returns:
        A Plotly figure.
    """
    from plotly.subplots import make_subplots

    single = len(metrics) == 1
    fig = make_subplots(
        rows=1,
        cols=len(metrics),
        subplot_titles=None if single else [METRIC_TITLES.get(m, m) for m in metrics],
    )
    for col, metric in enumerate(metrics, start=1):
        for lens, per_metric in values.items():
            if metric in per_metric:
                bars = (errors or {}).get(lens, {}).get(metric)
                trace = _trace(lens, metric, per_metric[metric], legend=col == 1, errors=bars)
                fig.add_trace(trace, row=1, col=col)
        if baseline is not None and metric in baseline:
            fig.add_hline(
                y=baseline[metric],
                line_dash="dash",
                line_color="grey",
                row=1,
                col=col,
                annotation_text="model",
            )
    if single:
        _single_panel_layout(fig, metrics[0])
    else:
        fig.update_xaxes(title_text="layer", tickmode="linear", dtick=1)
        for col, metric in enumerate(metrics, start=1):
            fig.update_yaxes(title_text=_UNITS.get(metric, "nats"), row=1, col=col)
    fig.update_layout(title={"text": title, "x": 0.5}, width=width, height=height)
    return fig


def _single_panel_layout(fig: go.Figure, metric: str) -> None:
    name = "KL divergence" if metric == "kl" else METRIC_TITLES.get(metric, metric)
    fig.update_layout(
        xaxis={"title": {"text": "layer (hidden_states index)"}, "tickmode": "linear", "dtick": 1},
        yaxis={"title": {"text": f"{name} (nats per token)"}, "rangemode": "tozero"},
        template="plotly_white",
        legend={"x": 0.99, "xanchor": "right", "y": 0.99},
    )
