"""The order of the demo's steps: load, train (or reuse), evaluate, draw, summarise.

:func:`run_demo` is the whole demo without its command line; the steps themselves are in
:mod:`tuned_lens.demo.stages` (computing), :mod:`tuned_lens.demo.figures` (pictures),
:mod:`tuned_lens.demo.report` (pages and text) and :mod:`tuned_lens.demo.resume` (what to reuse).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens._atomic import write_text_atomically
from tuned_lens.demo import stages
from tuned_lens.demo.budget import LARGE_MODEL_CPU_BUDGET
from tuned_lens.demo.figures import DrawnFigures, draw
from tuned_lens.demo.report import format_table, index_page
from tuned_lens.demo.resume import (
    JsonObject,
    layout,
    lens_is_complete,
    read_json,
    reset_if_settings_changed,
    write_json,
    write_state,
)
from tuned_lens.demo.settings import DemoOutputs, DemoSettings, Log
from tuned_lens.demo.threads import choose_threads, on_cpu_and_large, threads_restored

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuned_lens.data import PackedChunks
    from tuned_lens.nn import TunedLens

__all__ = ["run_demo", "say"]


def say(message: str) -> None:
    """The default :data:`~tuned_lens.demo.settings.Log`: print and flush."""
    print(message, flush=True)


@dataclass(frozen=True)
class _Loaded:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_path: str
    train: PackedChunks
    held_out: PackedChunks
    data_info: JsonObject


def run_demo(settings: DemoSettings, *, log: Log = say) -> DemoOutputs:
    """Run (or resume) the whole demo and return the paths it wrote.

    Torch's number of threads is put back as it was afterwards.
    """
    with threads_restored():
        return _run_steps(settings, log)


def _timed(timings: dict[str, float], key: str, began: float) -> None:
    timings[key] = time.perf_counter() - began


def _load(settings: DemoSettings, log: Log, timings: dict[str, float]) -> _Loaded:
    import torch

    log(f"[1/5] Loading the model {settings.model!r} and the text {settings.data!r}")
    began = time.perf_counter()
    model, tokenizer, model_path = stages.load_model(settings)
    torch.set_num_threads(choose_threads(model, settings.threads))
    train_chunks, held_out, data_info = stages.load_data(settings, tokenizer)
    _timed(timings, "load_s", began)
    config = model.config
    log(
        f"      {int(config.num_hidden_layers)} layers, hidden size {config.hidden_size}, "
        f"vocabulary {config.vocab_size}; {data_info['train_tokens']:,} training and "
        f"{data_info['eval_tokens']:,} held-out tokens in chunks of {train_chunks.chunk_len}"
    )
    if on_cpu_and_large(model) and settings.steps <= LARGE_MODEL_CPU_BUDGET.steps:
        log(
            "      note: this model is large for a CPU, so the default budget is tiny and the "
            "lens will be rough; a GPU (--device cuda) and more --steps give a useful one"
        )
    return _Loaded(model, tokenizer, model_path, train_chunks, held_out, data_info)


def _lens(
    loaded: _Loaded,
    settings: DemoSettings,
    paths: dict[str, Path],
    *,
    reuse: bool,
    log: Log,
    timings: dict[str, float],
) -> tuple[TunedLens, JsonObject]:
    """The finished lens of an earlier run when ``reuse``, else a freshly trained one."""
    if reuse:
        log(f"[2/5] Reusing the trained lens in {paths['lens']} (pass --force to retrain)")
        return stages.load_lens(loaded.model, paths["lens"]), read_json(paths["state"]).get(
            "training", {}
        )
    log(
        f"[2/5] Training a tuned lens: {settings.steps} steps of {settings.tokens_per_step:,} tokens"
    )
    # Record the settings before training, so that a run interrupted mid-training and
    # restarted with other settings is recognised (and its checkpoints discarded).
    write_state(paths["state"], settings, loaded.model_path, training={})
    began = time.perf_counter()
    lens, train_info = stages.train(loaded.model, loaded.train, settings, paths)
    _timed(timings, "train_s", began)
    write_state(paths["state"], settings, loaded.model_path, training=train_info)
    return lens, train_info


def _summary(
    settings: DemoSettings,
    loaded: _Loaded,
    train_info: JsonObject,
    metrics: JsonObject,
    figures: DrawnFigures,
    timings: dict[str, float],
) -> JsonObject:
    """The content of ``metrics.json``."""
    return {
        "settings": {**settings.fingerprint(), "eval_tokens": settings.eval_tokens},
        "model_path": loaded.model_path,
        "data": loaded.data_info,
        "training": train_info,
        "layers": metrics["layers"],
        "baseline": metrics["baseline"],
        "units": metrics["units"],
        "eval_tokens_evaluated": metrics["tokens"],
        "nats_to_bpb": metrics["nats_to_bpb"],
        "timings_s": timings,
        "figures": figures.to_json(),
    }


def _run_steps(settings: DemoSettings, log: Log) -> DemoOutputs:
    import torch

    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    stale = reset_if_settings_changed(out, settings, log)
    paths = layout(out)
    timings: dict[str, float] = {}
    torch.manual_seed(settings.seed)

    loaded = _load(settings, log, timings)
    reuse = lens_is_complete(paths["lens"]) and not settings.force and not stale
    lens, train_info = _lens(loaded, settings, paths, reuse=reuse, log=log, timings=timings)

    log("[3/5] Evaluating the tuned lens and the logit lens on held-out text")
    began = time.perf_counter()
    metrics = stages.evaluate(loaded.model, lens, loaded.held_out, settings, paths)
    _timed(timings, "eval_s", began)
    log(format_table(metrics, recipe=settings.recipe))

    log("[4/5] Drawing the per-layer KL plot and prediction trajectories")
    began = time.perf_counter()
    figures = draw(loaded.model, loaded.tokenizer, lens, metrics, settings, paths, log)
    _timed(timings, "plots_s", began)

    summary = _summary(settings, loaded, train_info, metrics, figures, timings)
    write_json(paths["metrics"], summary)
    write_text_atomically(paths["index"], index_page(summary, settings))
    log(f"[5/5] Done: results are in {out} (open {paths['index'].name} in a browser)")
    return DemoOutputs(
        output=out,
        lens=paths["lens"],
        metrics=paths["metrics"],
        kl_plot_html=figures.kl_html,
        kl_plot_png=figures.kl_png,
        trajectory_html=[page.html for page in figures.trajectories],
        trajectory_png=[page.png for page in figures.trajectories if page.png is not None],
        reused=["lens"] if reuse else [],
        model_path=loaded.model_path,
        index_html=paths["index"],
    )
