"""The demo's pictures and pages: the per-layer KL curve, prediction-trajectory pages, PNG
screenshots through headless Chromium, and the output folder's ``index.html``.

Used by :mod:`tuned_lens.demo`; every page is standalone (plotly.js inline, nothing fetched).
"""

from __future__ import annotations

import html
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuned_lens._atomic import write_text_atomically

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.demo import DemoOutputs, DemoSettings, Log

__all__ = ["TooShortSentenceError", "draw", "index_page", "kl_figure"]


def kl_figure(metrics: dict[str, Any], *, model_name: str):
    """Per-layer KL(model ‖ lens) of the logit lens and the tuned lens."""
    import plotly.graph_objects as go

    layers = [row["layer"] for row in metrics["layers"]]
    fig = go.Figure()
    for name, colour in (("logit", "#1f77b4"), ("tuned", "#d62728")):
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[row[f"kl_{name}"] for row in metrics["layers"]],
                mode="lines+markers",
                name=f"{name} lens",
                line={"color": colour, "width": 3},
                hovertemplate="layer %{x}<br>KL %{y:.3f} nats<extra>" + name + " lens</extra>",
            )
        )
    fig.update_layout(
        title={"text": f"KL(model ‖ lens) per layer on held-out text — {model_name}", "x": 0.5},
        xaxis={"title": {"text": "layer (hidden_states index)"}, "tickmode": "linear", "dtick": 1},
        yaxis={"title": {"text": "KL divergence (nats per token)"}, "rangemode": "tozero"},
        width=900,
        height=500,
        template="plotly_white",
        legend={"x": 0.99, "xanchor": "right", "y": 0.99},
    )
    return fig


class TooShortSentenceError(ValueError):
    """A trajectory sentence needs at least two tokens (one input, one target)."""


def _sentence_ids(tokenizer, sentence: str, max_len: int) -> list[int]:
    ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    return list(ids[: max_len + 1])


def _trajectory_figures(model, tokenizer, lens, sentence: str):
    """The heat maps for one sentence: tuned-lens entropy, forward KL, cross-entropy, and the
    logit lens's forward KL for contrast. Hovering a cell shows the top-10 predictions."""
    from tuned_lens.nn import LogitLens
    from tuned_lens.plotting import PredictionTrajectory

    limit = int(getattr(model.config, "max_position_embeddings", 128) or 128)
    ids = _sentence_ids(tokenizer, sentence, min(limit, 48))
    if len(ids) < 2:
        raise TooShortSentenceError(
            f"sentence {sentence!r} has fewer than two tokens: nothing to predict"
        )
    inputs, targets = ids[:-1], ids[1:]
    tuned = PredictionTrajectory.from_lens_and_model(
        lens, model, inputs, tokenizer=tokenizer, targets=targets
    )
    logit = PredictionTrajectory.from_lens_and_model(
        LogitLens.from_model(model), model, inputs, tokenizer=tokenizer, targets=targets
    )
    height = max(420, 150 + 26 * (tuned.num_layers + 1))
    tuned_kl, logit_kl = tuned.forward_kl(), logit.forward_kl()
    # One colour scale for both KL maps, so that the contrast between the lenses shows.
    shared_max = _finite_max(tuned_kl.stats, logit_kl.stats)
    if shared_max is not None and shared_max > 0:
        tuned_kl, logit_kl = tuned_kl.clip(0.0, shared_max), logit_kl.clip(0.0, shared_max)
    figures = [
        ("entropy", tuned.entropy().figure(title="Tuned lens: entropy of the prediction")),
        ("forward_kl", tuned_kl.figure(title="Tuned lens: KL(model ‖ lens)")),
        (
            "cross_entropy",
            tuned.cross_entropy().figure(title="Tuned lens: cross-entropy of the next token"),
        ),
        (
            "logit_forward_kl",
            logit_kl.figure(title="Logit lens, for contrast: KL(model ‖ lens), same colour scale"),
        ),
    ]
    for _, fig in figures:
        fig.update_layout(height=height)
    return figures


def _finite_max(*arrays) -> float | None:
    import numpy as np

    values = [float(np.max(a[np.isfinite(a)])) for a in arrays if np.isfinite(a).any()]
    return max(values) if values else None


def _page(title: str, intro: str, figures: list) -> str:
    """One standalone HTML page (plotly.js inline once) holding several figures."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:16px}p{max-width:60em}</style>",
        "</head>",
        "<body>",
        f"<h2>{html.escape(title)}</h2>",
        f"<p>{html.escape(intro)}</p>",
    ]
    for index, fig in enumerate(figures):
        parts.append(
            fig.to_html(full_html=False, include_plotlyjs=index == 0, config={"responsive": False})
        )
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _png_of(fig, png_path: Path) -> Path:
    """Screenshot one figure with headless Chromium (no kaleido needed)."""
    from tuned_lens.headless_chromium import screenshot

    width = int(fig.layout.width or 900)
    height = int(fig.layout.height or 450)
    with tempfile.TemporaryDirectory(prefix="tuned-lens-png-") as tmp:
        page = Path(tmp) / "figure.html"
        # "directory" writes plotly.min.js next to the page once instead of inlining it.
        fig.write_html(
            page, include_plotlyjs="directory", full_html=True, config={"staticPlot": True}
        )
        tmp_png = Path(tmp) / "figure.png"
        screenshot(page, tmp_png, width=width, height=height)
        shutil.move(str(tmp_png), png_path)
    return png_path


def draw(
    model,
    tokenizer,
    lens,
    metrics,
    settings: DemoSettings,
    paths: dict[str, Path],
    outputs: DemoOutputs,
    log: Log,
) -> dict[str, Any]:
    from tuned_lens.headless_chromium import ChromiumError, find_chromium

    want_png = settings.png and find_chromium() is not None
    if settings.png and not want_png:
        log("      no Chromium found: writing HTML only (install `chromium` for PNG files)")
    written: dict[str, Any] = {"trajectories": []}

    fig = kl_figure(metrics, model_name=settings.model)
    fig.write_html(paths["kl_html"], include_plotlyjs=True, full_html=True)
    written["kl_per_layer_html"] = paths["kl_html"].name
    if want_png:
        try:
            outputs.kl_plot_png = _png_of(fig, paths["kl_png"])
            written["kl_per_layer_png"] = paths["kl_png"].name
        except ChromiumError as err:
            log(f"      PNG export failed ({err}); the HTML files are complete")
            want_png = False

    folder = paths["trajectories"]
    folder.mkdir(parents=True, exist_ok=True)
    for number, sentence in enumerate(settings.sentences, start=1):
        try:
            figures = _trajectory_figures(model, tokenizer, lens, sentence)
        except TooShortSentenceError as err:
            log(f"      skipped: {err}")
            continue
        page = folder / f"sentence_{number}.html"
        intro = (
            f"“{sentence}” — each column is an input token, each row a layer; a cell "
            "shows the lens's top prediction for the next token, its colour the "
            "statistic, and hovering lists the top 10 predictions."
        )
        write_text_atomically(
            page, _page(f"Prediction trajectory {number}", intro, [f for _, f in figures])
        )
        outputs.trajectory_html.append(page)
        entry: dict[str, Any] = {
            "sentence": sentence,
            "html": f"trajectories/{page.name}",
            "statistics": [name for name, _ in figures],
        }
        if want_png:
            png = folder / f"sentence_{number}_entropy.png"
            try:
                outputs.trajectory_png.append(_png_of(figures[0][1], png))
                entry["png"] = f"trajectories/{png.name}"
            except ChromiumError as err:
                log(f"      PNG export failed ({err}); the HTML files are complete")
                want_png = False
        written["trajectories"].append(entry)
        log(f"      {page}")
    return written


def index_page(summary: dict[str, Any], settings: DemoSettings) -> str:
    """A small landing page (no scripts) linking every result, with the per-layer table."""
    esc = html.escape
    figures = summary["figures"]
    rows = "".join(
        f"<tr><td>{r['layer']}</td><td>{r['kl_logit']:.3f}</td><td>{r['kl_tuned']:.3f}</td>"
        f"<td>{r['ce_logit']:.3f}</td><td>{r['ce_tuned']:.3f}</td></tr>"
        for r in summary["layers"]
    )
    baseline = summary["baseline"]["ce"]
    links = [
        f'<li><a href="{esc(figures["kl_per_layer_html"])}">KL(model ‖ lens) per layer</a></li>'
    ]
    for entry in figures["trajectories"]:
        links.append(
            f'<li><a href="{esc(entry["html"])}">Prediction trajectory</a>: '
            f"“{esc(entry['sentence'])}”</li>"
        )
    pictures = []
    if "kl_per_layer_png" in figures:
        pictures.append(figures["kl_per_layer_png"])
    pictures += [entry["png"] for entry in figures["trajectories"] if "png" in entry]
    images = "".join(
        f'<p><img src="{esc(p)}" alt="{esc(p)}" style="max-width:100%"></p>' for p in pictures
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            "<title>tuned-lens demo</title>",
            "<style>body{font-family:sans-serif;margin:24px;max-width:1100px}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;"
            "text-align:right}</style>",
            "</head>",
            "<body>",
            "<h1>tuned-lens demo</h1>",
            f"<p>Model <code>{esc(settings.model)}</code>, data <code>{esc(settings.data)}</code>; "
            f"{settings.steps} training steps of {settings.tokens_per_step:,} tokens. "
            "The lens is in <code>lens/</code>, all numbers in <code>metrics.json</code>.</p>",
            f"<h2>Per layer, on {summary['eval_tokens_evaluated']:,} held-out tokens (nats)</h2>",
            "<table><tr><th>layer</th><th>KL logit lens</th><th>KL tuned lens</th>"
            "<th>CE logit lens</th><th>CE tuned lens</th></tr>",
            rows,
            f"<tr><td>model</td><td>0</td><td>0</td><td>{baseline:.3f}</td>"
            f"<td>{baseline:.3f}</td></tr></table>",
            "<h2>Figures</h2>",
            "<ul>",
            *links,
            "</ul>",
            images,
            "</body>",
            "</html>",
            "",
        ]
    )
