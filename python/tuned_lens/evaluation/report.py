"""The comparison table (Markdown + JSON) and figure, written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens._atomic import write_json_atomically, write_text_atomically
from tuned_lens.evaluation.compare import METRICS, ComparisonResult, Interval

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

__all__ = ["FILES", "comparison_figure", "markdown_table", "write_comparison"]

#: The files :func:`write_comparison` writes.
FILES = {"json": "comparison.json", "markdown": "comparison.md", "figure": "comparison.html"}

_HEADERS = {
    "kl": "KL nats",
    "kl_bpb": "KL bpb",
    "ce": "CE nats",
    "ce_bpb": "CE bpb",
    "entropy": "entropy nats",
    "top1": "top-1 agree",
    "overlap": "overlap@{k}",
    "rank": "rank of model top-1",
}


def _cell(value: Interval) -> str:
    return f"{value.mean:.3f} [{value.low:.3f}, {value.high:.3f}]"


def markdown_table(result: ComparisonResult) -> str:
    """One row per lens and layer, each cell ``mean [low, high]``, and the model's own row."""
    metrics = [
        m for m in METRICS if any(m in v for r in result.lenses.values() for v in r.values())
    ]
    heads = [_HEADERS[m].format(k=result.k) for m in metrics]
    conf = round(100 * result.bootstrap["confidence"])
    lines = [
        f"{result.tokens} tokens in {result.documents} documents; cells: mean "
        f"[{conf}% bootstrap interval over documents, {result.bootstrap['samples']} resamples, "
        f"seed {result.bootstrap['seed']}]",
        "",
        "| lens | layer | " + " | ".join(heads) + " |",
        "| --- | --- |" + " --- |" * len(heads),
    ]
    for name, layers in result.lenses.items():
        for layer, values in layers.items():
            cells = [_cell(values[m]) if m in values else "" for m in metrics]
            lines.append(f"| {name} | {layer} | " + " | ".join(cells) + " |")
    model = [_cell(result.model[m]) if m in result.model else "" for m in metrics]
    lines.append("| model | output | " + " | ".join(model) + " |")
    return "\n".join(lines) + "\n"


def comparison_figure(
    result: ComparisonResult, metrics: tuple[str, ...] = ("kl", "ce", "top1", "overlap")
) -> go.Figure:
    """KL, CE, top-1 agreement and overlap@k by layer for every lens, with the intervals."""
    from tuned_lens.plotting.per_layer import per_layer_figure

    values = {
        name: {m: {j: v[m].mean for j, v in layers.items() if m in v} for m in metrics}
        for name, layers in result.lenses.items()
    }
    errors = {
        name: {m: {j: (v[m].low, v[m].high) for j, v in layers.items() if m in v} for m in metrics}
        for name, layers in result.lenses.items()
    }
    baseline = {m: result.model[m].mean for m in metrics if m in result.model}
    return per_layer_figure(
        values,
        metrics=metrics,
        baseline=baseline,
        errors=errors,
        title=f"lens comparison ({result.tokens} tokens, {result.documents} documents)",
        width=360 * len(metrics),
        height=420,
    )


def write_comparison(result: ComparisonResult, folder: str | Path) -> dict[str, Path]:
    """Write ``comparison.json``, ``comparison.md`` and ``comparison.html`` into ``folder``."""
    from tuned_lens.plotting.export import write_html

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / name for kind, name in FILES.items()}
    write_json_atomically(paths["json"], result.to_dict())
    write_text_atomically(paths["markdown"], markdown_table(result))
    write_html(comparison_figure(result), paths["figure"])
    return paths
