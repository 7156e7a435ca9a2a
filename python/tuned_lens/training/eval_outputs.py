"""The files of ``tuned-lens eval``: metrics in JSON (nats, and bits per byte), per-batch
records, mean predicted distributions, and the per-layer figure (HTML, PNG when a browser can
draw it). Every file is written atomically."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuned_lens._atomic import atomic_path, write_json_atomically, write_text_atomically

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.training.eval_loop import EvalResult

__all__ = ["scale_tree", "write_outputs", "write_plots"]

logger = logging.getLogger(__name__)


def scale_tree(tree: dict[str, Any], factor: float) -> dict[str, Any]:
    """Multiply every leaf of a metrics tree by ``factor`` (nats → bits per byte)."""
    return {
        k: scale_tree(v, factor) if isinstance(v, dict) else v * factor for k, v in tree.items()
    }


def write_outputs(result: EvalResult, output: Path) -> dict[str, Path]:
    """Write ``aggregate_metrics.json``, ``batches.jsonl``, the plots and ``logit_stats.json``.

    Returns:
        The files written, by kind.
    """
    output.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    aggregate = {
        **result.aggregate,
        "units": "nats per token (the 'bits_per_byte' tree holds the same metrics in bits/byte)",
        "bits_per_byte": scale_tree(result.aggregate, result.nats_to_bpb),
        "nats_to_bpb": result.nats_to_bpb,
        "tokens": result.tokens,
        "num_batches": len(result.batches),
    }
    path = output / "aggregate_metrics.json"
    write_json_atomically(path, aggregate)
    written["aggregate"] = path

    path = output / "batches.jsonl"
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for index, record in enumerate(result.batches):
            handle.write(json.dumps({"batch": index, "units": "nats", **record}) + "\n")
    written["batches"] = path

    if result.logit_stats is not None:
        stats: dict[str, Any] = {}
        for name, per_key in result.logit_stats.items():
            stats[name] = {"logit_stats": {k: v.tolist() for k, v in per_key.items()}}
        path = output / "logit_stats.json"
        write_text_atomically(path, json.dumps(stats) + "\n")
        written["logit_stats"] = path

    written.update(write_plots(result, output))
    return written


def write_plots(result: EvalResult, output: Path) -> dict[str, Path]:
    """Per-layer curves of KL, CE and entropy: HTML always, PNG when a Chromium can render."""
    from tuned_lens.plotting.export import write_html, write_png
    from tuned_lens.plotting.per_layer import per_layer_figure, per_layer_from_aggregate

    metrics = ("kl", "ce", "entropy")
    values, baseline = per_layer_from_aggregate(result.aggregate, result.lens_names, metrics)
    fig = per_layer_figure(
        values,
        metrics=metrics,
        baseline=baseline,
        title="Lens quality per layer (mean over tokens, nats)",
        width=1200,
        height=420,
    )
    written: dict[str, Path] = {"html": write_html(fig, output / "per_layer_metrics.html")}
    png = output / "per_layer_metrics.png"
    try:
        written["png"] = write_png(fig, png)
    except Exception as err:  # no Chromium, or it failed: the HTML is enough
        logger.debug("PNG export skipped: %s", err)
        png.unlink(missing_ok=True)
    return written
