"""What the demo shows at the end: the per-layer table, ``index.html`` and the closing message."""

from __future__ import annotations

import html

from tuned_lens.demo.resume import JsonObject
from tuned_lens.demo.settings import DemoOutputs, DemoSettings

__all__ = ["format_table", "index_page", "summary_text"]


RECIPE_NAMES = {
    "fast": "the fast recipe (least squares + whitened SGD)",
    "original": "the original tuned-lens recipe (identity + SGD)",
}


def format_table(metrics: JsonObject, *, recipe: str | None = None) -> str:
    """A plain-text table of the per-layer metrics (nats per token).

    Args:
        metrics: ``{"tokens", "layers": [{"layer", "kl_logit", "kl_tuned", "ce_logit",
            "ce_tuned"}, …], "baseline": {"ce"}}``.
        recipe: the recipe that trained the tuned lens (named above the table when given).
    """
    head = (
        f"{'layer':>5}  {'KL logit':>9}  {'KL tuned':>9}  {'CE logit':>9}  "
        f"{'CE tuned':>9}   (nats/token, {metrics['tokens']:,} held-out tokens)"
    )
    lines = [f"tuned lens trained with {RECIPE_NAMES.get(recipe, recipe)}"] if recipe else []
    lines += [head, "-" * len(head)]
    for row in metrics["layers"]:
        lines.append(
            f"{row['layer']:>5}  {row['kl_logit']:>9.3f}  {row['kl_tuned']:>9.3f}  "
            f"{row['ce_logit']:>9.3f}  {row['ce_tuned']:>9.3f}"
        )
    lines.append(
        f"{'model':>5}  {0.0:>9.3f}  {0.0:>9.3f}  {metrics['baseline']['ce']:>9.3f}  "
        f"{metrics['baseline']['ce']:>9.3f}"
    )
    return "\n".join(lines)


def _figure_links(figures: JsonObject) -> tuple[list[str], str]:
    esc = html.escape
    links = [
        f'<li><a href="{esc(figures["kl_per_layer_html"])}">KL(model ‖ lens) per layer</a></li>'
    ]
    for entry in figures["trajectories"]:
        lenses = " vs ".join(entry.get("lenses", []))
        links.append(
            f'<li><a href="{esc(entry["html"])}">Trajectory explorer</a>'
            f"{f' ({esc(lenses)})' if lenses else ''}: “{esc(entry['sentence'])}”</li>"
        )
    pictures = []
    if "kl_per_layer_png" in figures:
        pictures.append(figures["kl_per_layer_png"])
    pictures += [entry["png"] for entry in figures["trajectories"] if "png" in entry]
    images = "".join(
        f'<p><img src="{esc(p)}" alt="{esc(p)}" style="max-width:100%"></p>' for p in pictures
    )
    return links, images


_EXPLORER_HELP = (
    "<p>Each sentence has an interactive explorer page (one self-contained file, no server): "
    "layers × positions coloured by a statistic, the top token in each cell. Click a cell for "
    "its top-10; click a token there to pin it and follow its probability and rank across "
    "layers; switch between the tuned and the logit lens, or compare them (KL, JS, Δp of a "
    "pinned token). The view is kept in the URL, so a link reopens it.</p>"
)


def _explorer_frame(figures: JsonObject) -> str:
    """The first sentence's explorer, shown in the index page itself (an iframe, no script)."""
    if not figures["trajectories"]:
        return ""
    first = figures["trajectories"][0]
    return (
        f'<iframe src="{html.escape(first["html"])}" title="trajectory explorer: '
        f'{html.escape(first["sentence"])}" style="width:100%;height:860px;'
        'border:1px solid #ccc"></iframe>'
    )


def index_page(summary: JsonObject, settings: DemoSettings) -> str:
    """A small landing page (no scripts of its own) linking every result, with the per-layer
    table and the first sentence's explorer in a frame.

    Args:
        summary: the content of ``metrics.json`` (``layers``, ``baseline``, ``figures``,
            ``eval_tokens_evaluated``).
        settings: the run's settings.
    """
    esc = html.escape
    rows = "".join(
        f"<tr><td>{r['layer']}</td><td>{r['kl_logit']:.3f}</td><td>{r['kl_tuned']:.3f}</td>"
        f"<td>{r['ce_logit']:.3f}</td><td>{r['ce_tuned']:.3f}</td></tr>"
        for r in summary["layers"]
    )
    baseline = summary["baseline"]["ce"]
    links, images = _figure_links(summary["figures"])
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
            f"{settings.steps} training steps of {settings.tokens_per_step:,} tokens with "
            f"{esc(RECIPE_NAMES.get(settings.recipe, settings.recipe))}. "
            "The lens is in <code>lens/</code>, all numbers in <code>metrics.json</code>.</p>",
            f"<h2>Per layer, on {summary['eval_tokens_evaluated']:,} held-out tokens (nats)</h2>",
            "<table><tr><th>layer</th><th>KL logit lens</th><th>KL tuned lens</th>"
            "<th>CE logit lens</th><th>CE tuned lens</th></tr>",
            rows,
            f"<tr><td>model</td><td>0</td><td>0</td><td>{baseline:.3f}</td>"
            f"<td>{baseline:.3f}</td></tr></table>",
            "<h2>Prediction trajectories and figures</h2>",
            _EXPLORER_HELP,
            "<ul>",
            *links,
            "</ul>",
            _explorer_frame(summary["figures"]),
            images,
            "</body>",
            "</html>",
            "",
        ]
    )


def summary_text(settings: DemoSettings, outputs: DemoOutputs) -> str:
    """The closing message: where everything is and what to try next."""
    out = outputs.output
    lines = [
        "",
        "Everything is in " + str(out.resolve()) + ":",
        "  index.html             start here: links to every figure, the per-layer table",
        "  lens/                  the trained tuned lens (config.json + params.safetensors)",
        "  metrics.json           per-layer KL / cross-entropy / entropy, settings, timings",
        "  eval/                  the evaluator's full output (aggregate_metrics.json, ...)",
        "  kl_per_layer.html      KL(model ‖ lens) per layer, tuned vs logit lens"
        + (" (+ .png)" if outputs.kl_plot_png else ""),
        f"  trajectories/          trajectory explorers for {len(outputs.trajectory_html)} "
        "sentences, tuned vs logit lens (open the .html in a browser; click the cells)",
        "",
        "Next, try:",
        f"  python -m tuned_lens demo --model smollm2 --output {out}-smollm2   "
        "# a real 135M model (first run dequantizes it, ~30 s)",
        f"  python -m tuned_lens demo --data my_text.jsonl --output {out}-mine",
        f"  python -m tuned_lens train --model.name {settings.model} --data.name {settings.data} "
        f"--num_steps 50 --tokens_per_step 2048 --per_gpu_batch_size 16 -o {out}-cli",
        f"  python -m tuned_lens eval --model.name {settings.model} -l {out / 'lens'} "
        f"--data.name {settings.data} --tokens 16384 -o {out}-eval",
        "  python - <<'EOF'",
        "  from tuned_lens.assets import load_glassllm",
        "  from tuned_lens.nn import TunedLens",
        "  from tuned_lens.plotting import PredictionTrajectory",
        "  model, tok = load_glassllm()",
        f"  lens = TunedLens.from_model_and_pretrained(model, '{out / 'lens'}')",
        "  ids = tok('Alice opened the door').input_ids",
        "  traj = PredictionTrajectory.from_lens_and_model(lens, model, ids, tokenizer=tok)",
        "  traj.explore('alice.html')  # the interactive explorer; .entropy().figure(): plotly",
        "  EOF",
        f"  python -m tuned_lens explore --model {settings.model} --lens logit "
        f"--lens tuned={out / 'lens'} --text 'Alice opened the door' -o alice.html",
    ]
    return "\n".join(lines)
