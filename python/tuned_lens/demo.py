"""``tuned-lens demo``: the whole workflow on a model and text that ship inside PyPI wheels.

With no arguments and no network it

1. loads the glassllm English model (a tiny real Llama, converted and cached on first use) and
   the tinyshakespeare text, and splits the text into training and held-out parts;
2. trains a tuned lens for about two minutes on two CPU cores, with a progress bar;
3. evaluates the tuned lens and the logit lens, layer by layer, on the held-out text and prints
   a table;
4. writes into ``./tuned-lens-demo``: the lens, the metrics (JSON), a per-layer KL plot and
   prediction-trajectory heat maps for a few sentences (standalone HTML; PNG too when a Chromium
   is installed);
5. prints where everything is and what to try next.

Run again after an interruption, it picks up where it stopped: the trainer resumes from its
last checkpoint and finished stages (a trained lens, its metrics) are reused unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuned_lens._atomic import write_text_atomically
from tuned_lens.demo_figures import draw, index_page

__all__ = ["DemoSettings", "DemoOutputs", "build_parser", "run_demo", "main"]

DEFAULT_OUTPUT = Path("tuned-lens-demo")
DEFAULT_MODEL = "glassllm"
DEFAULT_DATA = "tinyshakespeare"
# Sentences for the trajectory pictures: one in the style glassllm was trained on (Carroll), one
# from the demo's own data (Shakespeare), and one plain modern sentence.
DEFAULT_SENTENCES = (
    "Alice was beginning to get very tired of sitting by her sister.",
    "To be, or not to be, that is the question.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
)
HELD_OUT_FRACTION = 0.1
STATE_FILE = "demo_state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class Budget:
    """How much training and evaluation a run does."""

    steps: int
    tokens_per_step: int
    seq_len: int
    eval_tokens: int
    checkpoint_freq: int


# About two minutes for glassllm on two CPU cores: ~0.4-0.7 s per step of 2,048 tokens on one
# thread (see _choose_threads), plus loading, evaluation and pictures.
FULL_BUDGET = Budget(
    steps=150, tokens_per_step=2048, seq_len=128, eval_tokens=16_384, checkpoint_freq=10
)
# Models bigger than glassllm on a CPU: every token is decoded by every layer's lens through a
# large unembedding (SmolLM2: 30 layers x 576 x 49152, ~0.2 s per token on this project's
# 2-core machine), so the CPU budget is a token demonstration of a few minutes. Use a GPU
# (or --steps/--tokens-per-step) for a useful lens.
LARGE_MODEL_CPU_BUDGET = Budget(
    steps=4, tokens_per_step=256, seq_len=64, eval_tokens=256, checkpoint_freq=1
)
# Seconds: for tests and a first look.
QUICK_BUDGET = Budget(
    steps=6, tokens_per_step=512, seq_len=64, eval_tokens=1_024, checkpoint_freq=2
)


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides what the demo computes.

    Attributes:
        output: folder that receives every result.
        model: ``"glassllm"``, ``"smollm2"``, a local Hugging Face model folder, or a Hub id
            that is already in the local cache.
        data: ``"tinyshakespeare"``, or a local ``.txt``/``.jsonl`` file or folder.
        steps: optimiser steps.
        tokens_per_step: training tokens per step (a multiple of ``seq_len``).
        seq_len: tokens per training/evaluation chunk (capped by the tokenizer's maximum).
        eval_tokens: held-out tokens to evaluate on (fewer if the held-out text is shorter).
        seed: seed of the chunk order.
        checkpoint_freq: steps between training snapshots.
        sentences: texts for the trajectory pictures.
        text_column: field of ``.jsonl`` records that holds the text.
        force: redo every stage even when its results exist.
        png: also write PNG pictures when a Chromium is available.
        device: ``"cpu"``, ``"cuda"``, … (default: CUDA when available).
        threads: CPU threads for torch (default: 1 for models under 50 M parameters on the
            CPU, whose small matrix products lose more to thread start-up than they gain,
            else torch's default).
    """

    output: Path = DEFAULT_OUTPUT
    model: str = DEFAULT_MODEL
    data: str = DEFAULT_DATA
    steps: int = FULL_BUDGET.steps
    tokens_per_step: int = FULL_BUDGET.tokens_per_step
    seq_len: int = FULL_BUDGET.seq_len
    eval_tokens: int = FULL_BUDGET.eval_tokens
    seed: int = 42
    checkpoint_freq: int = FULL_BUDGET.checkpoint_freq
    sentences: tuple[str, ...] = DEFAULT_SENTENCES
    text_column: str = "text"
    force: bool = False
    png: bool = True
    device: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer, got {self.threads!r}")
        for name in ("steps", "tokens_per_step", "seq_len", "eval_tokens", "checkpoint_freq"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be at least 2, got {self.seq_len}")
        if not self.sentences or not all(isinstance(s, str) and s.strip() for s in self.sentences):
            raise ValueError("sentences must be a non-empty tuple of non-empty strings")
        if not self.model or not self.data:
            raise ValueError("model and data must be non-empty")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a trained lens depends on (a change means training again)."""
        return {
            "model": self.model,
            "data": self.data,
            "text_column": self.text_column,
            "steps": self.steps,
            "tokens_per_step": self.tokens_per_step,
            "seq_len": self.seq_len,
            "seed": self.seed,
        }


@dataclass
class DemoOutputs:
    """Paths of what a run wrote (all inside ``settings.output``)."""

    output: Path
    lens: Path
    metrics: Path
    kl_plot_html: Path
    kl_plot_png: Path | None = None
    trajectory_html: list[Path] = field(default_factory=list)
    trajectory_png: list[Path] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    model_path: str = ""
    index_html: Path | None = None


Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuned-lens demo",
        description=(
            "Train and evaluate a tuned lens end to end, offline: by default on the glassllm "
            "model and tinyshakespeare that ship inside PyPI wheels (about two minutes on "
            "two CPU cores). Results go to --output; re-running resumes."
        ),
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="folder for every result (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="glassllm (default), smollm2, a local Hugging Face model folder, or a cached Hub id",
    )
    parser.add_argument(
        "--data",
        default=DEFAULT_DATA,
        help="tinyshakespeare (default) or a local .txt/.jsonl file or folder",
    )
    parser.add_argument(
        "--text-column",
        default="text",
        help="field holding the text in .jsonl records (default: %(default)s)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimiser steps (default {FULL_BUDGET.steps}; "
        f"{QUICK_BUDGET.steps} with --quick; {LARGE_MODEL_CPU_BUDGET.steps} "
        "for models other than glassllm on a CPU)",
    )
    parser.add_argument(
        "--tokens-per-step",
        type=int,
        default=None,
        help=f"training tokens per step (default {FULL_BUDGET.tokens_per_step}; "
        f"{QUICK_BUDGET.tokens_per_step} with --quick; "
        f"{LARGE_MODEL_CPU_BUDGET.tokens_per_step} for other models on a CPU)",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help=f"tokens per chunk (default {FULL_BUDGET.seq_len}; "
        f"{QUICK_BUDGET.seq_len} with --quick; "
        f"{LARGE_MODEL_CPU_BUDGET.seq_len} for other models on a CPU)",
    )
    parser.add_argument(
        "--eval-tokens",
        type=int,
        default=None,
        help=f"held-out tokens to evaluate (default {FULL_BUDGET.eval_tokens}; "
        f"{QUICK_BUDGET.eval_tokens} with --quick; "
        f"{LARGE_MODEL_CPU_BUDGET.eval_tokens} for other models on a CPU)",
    )
    parser.add_argument("--seed", type=int, default=42, help="seed (default: %(default)s)")
    parser.add_argument(
        "--sentence",
        action="append",
        dest="sentences",
        metavar="TEXT",
        help="a sentence to draw a prediction trajectory for (repeatable)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny budget: seconds instead of minutes (for tests)"
    )
    parser.add_argument(
        "--force", action="store_true", help="redo every stage, even those whose results exist"
    )
    parser.add_argument(
        "--no-png", action="store_true", help="write HTML only, even when a Chromium is installed"
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1, … (default: CUDA when available)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 for small models such as "
        "glassllm, else torch's default)",
    )
    return parser


def default_budget(model: str, *, quick: bool, device: str | None) -> Budget:
    """The budget used for options not given: small for --quick, reduced for models bigger
    than glassllm when training runs on the CPU."""
    from tuned_lens.assets import GLASSLLM_ALIASES

    if quick:
        return QUICK_BUDGET
    if model.lower() in GLASSLLM_ALIASES:
        return FULL_BUDGET
    if device is None:
        import torch

        on_cpu = not torch.cuda.is_available()
    else:
        on_cpu = device.lower().startswith("cpu")
    return LARGE_MODEL_CPU_BUDGET if on_cpu else FULL_BUDGET


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    budget = default_budget(args.model, quick=args.quick, device=args.device)

    def pick(value: int | None, default: int) -> int:
        return default if value is None else value

    steps = pick(args.steps, budget.steps)
    return DemoSettings(
        output=args.output,
        model=args.model,
        data=args.data,
        steps=steps,
        tokens_per_step=pick(args.tokens_per_step, budget.tokens_per_step),
        seq_len=pick(args.seq_len, budget.seq_len),
        eval_tokens=pick(args.eval_tokens, budget.eval_tokens),
        seed=args.seed,
        checkpoint_freq=max(1, min(budget.checkpoint_freq, steps)),
        sentences=tuple(args.sentences) if args.sentences else DEFAULT_SENTENCES,
        text_column=args.text_column,
        force=args.force,
        png=not args.no_png,
        device=args.device,
        threads=args.threads,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tuned-lens demo`` (``python -m tuned_lens demo``)."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        _check_device(settings.device)
    except ValueError as err:
        build_parser().error(str(err))
    from tuned_lens.assets import AssetMissingError
    from tuned_lens.data import NotEnoughDataError

    try:
        outputs = run_demo(settings)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (AssetMissingError, NotEnoughDataError, FileNotFoundError) as err:
        # Problems with the user's inputs: a clear message, not a traceback.
        print(f"tuned-lens demo: error: {err}", file=sys.stderr)
        return 2
    _print_summary(settings, outputs)
    return 0


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, flush=True)


def run_demo(settings: DemoSettings, *, log: Log = _say) -> DemoOutputs:
    """Run (or resume) the whole demo and return the paths it wrote."""
    import torch

    threads_before = torch.get_num_threads()
    try:
        return _run_stages(settings, log)
    finally:
        torch.set_num_threads(threads_before)


# Below this many parameters a model's matrix products are too small to gain from several
# threads; on a busy machine, spinning OpenMP threads then make training >10x slower.
SINGLE_THREAD_BELOW_PARAMS = 50_000_000


def on_cpu_and_large(model) -> bool:
    """Whether ``model`` runs on the CPU and is over the small-model threshold."""
    on_cpu = next(model.parameters()).device.type == "cpu"
    return on_cpu and sum(p.numel() for p in model.parameters()) >= SINGLE_THREAD_BELOW_PARAMS


def _choose_threads(model, settings: DemoSettings) -> int:
    import torch

    if settings.threads is not None:
        return settings.threads
    on_cpu = next(model.parameters()).device.type == "cpu"
    small = sum(p.numel() for p in model.parameters()) < SINGLE_THREAD_BELOW_PARAMS
    return 1 if on_cpu and small else torch.get_num_threads()


def _run_stages(settings: DemoSettings, log: Log) -> DemoOutputs:
    import torch

    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    stale = _reset_if_settings_changed(out, settings, log)
    paths = _layout(out)
    outputs = DemoOutputs(
        output=out, lens=paths["lens"], metrics=paths["metrics"], kl_plot_html=paths["kl_html"]
    )
    timings: dict[str, float] = {}
    torch.manual_seed(settings.seed)

    log(f"[1/5] Loading the model {settings.model!r} and the text {settings.data!r}")
    began = time.perf_counter()
    model, tokenizer, model_path = _load_model(settings)
    outputs.model_path = model_path
    torch.set_num_threads(_choose_threads(model, settings))
    train_chunks, eval_chunks, data_info = _load_data(settings, tokenizer)
    timings["load_s"] = time.perf_counter() - began
    n_layers = int(model.config.num_hidden_layers)
    log(
        f"      {n_layers} layers, hidden size {model.config.hidden_size}, "
        f"vocabulary {model.config.vocab_size}; {data_info['train_tokens']:,} training and "
        f"{data_info['eval_tokens']:,} held-out tokens in chunks of {train_chunks.chunk_len}"
    )

    if on_cpu_and_large(model) and settings.steps <= LARGE_MODEL_CPU_BUDGET.steps:
        log(
            "      note: this model is large for a CPU, so the default budget is tiny and the "
            "lens will be rough; a GPU (--device cuda) and more --steps give a useful one"
        )
    lens_done = _lens_is_complete(paths["lens"]) and not settings.force and not stale
    if lens_done:
        log(f"[2/5] Reusing the trained lens in {paths['lens']} (pass --force to retrain)")
        outputs.reused.append("lens")
        lens = _load_lens(model, paths["lens"])
        train_info = _read_json(paths["state"]).get("training", {})
    else:
        log(
            f"[2/5] Training a tuned lens: {settings.steps} steps of "
            f"{settings.tokens_per_step:,} tokens"
        )
        # Record the settings before training, so that a run interrupted mid-training and
        # restarted with other settings is recognised (and its checkpoints discarded).
        _write_state(paths["state"], settings, model_path, training={})
        began = time.perf_counter()
        lens, train_info = _train(model, train_chunks, settings, paths)
        timings["train_s"] = time.perf_counter() - began
        _write_state(paths["state"], settings, model_path, training=train_info)

    log("[3/5] Evaluating the tuned lens and the logit lens on held-out text")
    began = time.perf_counter()
    metrics = _evaluate(model, lens, eval_chunks, settings, paths)
    timings["eval_s"] = time.perf_counter() - began
    log(format_table(metrics))

    log("[4/5] Drawing the per-layer KL plot and prediction trajectories")
    began = time.perf_counter()
    figures = draw(model, tokenizer, lens, metrics, settings, paths, outputs, log)
    timings["plots_s"] = time.perf_counter() - began

    summary = {
        "settings": {**settings.fingerprint(), "eval_tokens": settings.eval_tokens},
        "model_path": model_path,
        "data": data_info,
        "training": train_info,
        "layers": metrics["layers"],
        "baseline": metrics["baseline"],
        "units": metrics["units"],
        "eval_tokens_evaluated": metrics["tokens"],
        "nats_to_bpb": metrics["nats_to_bpb"],
        "timings_s": timings,
        "figures": figures,
    }
    _write_json(paths["metrics"], summary)
    write_text_atomically(paths["index"], index_page(summary, settings))
    outputs.index_html = paths["index"]
    log(f"[5/5] Done: results are in {out} (open {paths['index'].name} in a browser)")
    return outputs


def _layout(out: Path) -> dict[str, Path]:
    return {
        "lens": out / "lens",
        "checkpoints": out / "checkpoints",
        "eval": out / "eval",
        "metrics": out / "metrics.json",
        "kl_html": out / "kl_per_layer.html",
        "kl_png": out / "kl_per_layer.png",
        "trajectories": out / "trajectories",
        "state": out / STATE_FILE,
        "index": out / "index.html",
    }


# ----------------------------------------------------------------------------------------------
# Resume bookkeeping
# ----------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically so that an interrupted run never leaves a torn file."""
    write_text_atomically(
        path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


def _write_state(
    path: Path, settings: DemoSettings, model_path: str, *, training: dict[str, Any]
) -> None:
    _write_json(
        path,
        {
            "version": STATE_VERSION,
            "settings": settings.fingerprint(),
            "model_path": model_path,
            "training": training,
        },
    )


def _reset_if_settings_changed(out: Path, settings: DemoSettings, log: Log) -> bool:
    """Remove results of an earlier run with other settings (or all of them with --force).

    Only the demo's own sub-folders and files are removed. Returns whether anything stale was
    found.
    """
    paths = _layout(out)
    state = _read_json(paths["state"])
    changed = bool(state) and state.get("settings") != settings.fingerprint()
    leftovers = paths["lens"].exists() or paths["checkpoints"].exists()
    if settings.force or changed or (leftovers and not state and _lens_is_complete(paths["lens"])):
        if changed and not settings.force:
            log(f"      settings differ from the earlier run in {out}; starting over")
        for key in ("lens", "checkpoints", "eval", "trajectories"):
            shutil.rmtree(paths[key], ignore_errors=True)
        for key in ("metrics", "kl_html", "kl_png", "state", "index"):
            paths[key].unlink(missing_ok=True)
        return True
    return False


def _lens_is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "params.safetensors").is_file()


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def _check_device(device: str | None) -> None:
    """Reject a device torch cannot use here, before anything is loaded."""
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r} is not a torch device: {err}") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: this torch build or machine has no CUDA device")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device!r}: MPS is not available here")
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {device!r}: the demo runs on cpu, cuda or mps")


def _device(settings: DemoSettings):
    import torch

    if settings.device is not None:
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_model(settings: DemoSettings):
    import torch

    from tuned_lens.assets import load_model, resolve_model

    device = _device(settings)
    model_path = resolve_model(settings.model)
    model, tokenizer = load_model(model_path, dtype=torch.float32, device=device)
    model.requires_grad_(False)
    return model, tokenizer, model_path


def split_documents(
    docs: Sequence[str], *, held_out: float = HELD_OUT_FRACTION
) -> tuple[list[str], list[str]]:
    """Split documents into training and held-out parts.

    One document (a plain text file) is cut at a line break near ``1 - held_out`` of its length;
    several documents are split by count (the last ``held_out`` fraction, at least one).

    Raises:
        ValueError: nothing to split.
    """
    if not 0.0 < held_out < 1.0:
        raise ValueError(f"held_out must be in (0, 1), got {held_out}")
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError("no non-empty documents to split")
    if len(docs) == 1:
        text = docs[0]
        cut = int(len(text) * (1.0 - held_out))
        newline = text.rfind("\n", 0, cut)
        if newline > cut // 2:  # prefer a line boundary when one is reasonably close
            cut = newline + 1
        if cut <= 0 or cut >= len(text):
            raise ValueError("the text is too short to hold some of it out for evaluation")
        return [text[:cut]], [text[cut:]]
    n_eval = max(1, math.ceil(len(docs) * held_out))
    return docs[:-n_eval], docs[-n_eval:]


def _load_data(settings: DemoSettings, tokenizer):
    from tuned_lens.data import NotEnoughDataError, load_documents

    docs = load_documents(settings.data, text_column=settings.text_column)
    train_docs, eval_docs = split_documents(docs)
    # Tokenise only about what the budget can use (plenty of margin: no tokenizer needs more
    # than CHARS_PER_TOKEN_BOUND characters per token), and everything if that falls short.
    train_need = settings.steps * settings.tokens_per_step
    train = _chunk_capped(train_docs, tokenizer, settings.seq_len, train_need)
    try:
        held_out = _chunk_capped(eval_docs, tokenizer, settings.seq_len, settings.eval_tokens)
    except NotEnoughDataError as err:
        raise NotEnoughDataError(
            f"the held-out part of {settings.data!r} (the last {HELD_OUT_FRACTION:.0%}) is "
            f"shorter than one chunk of {settings.seq_len} tokens; use more text or a smaller "
            "--seq-len"
        ) from err
    info = {
        "name": settings.data,
        "documents": len(docs),
        "train_documents": len(train_docs),
        "eval_documents": len(eval_docs),
        "train_tokens": len(train) * train.chunk_len,
        "eval_tokens": len(held_out) * held_out.chunk_len,
        "chunk_len": train.chunk_len,
        "nats_to_bpb": train.nats_to_bpb,
    }
    return train, held_out, info


CHARS_PER_TOKEN_BOUND = 16


def _cap_characters(docs: Sequence[str], limit: int) -> list[str]:
    """The first ``limit`` characters of the documents (whole documents, the last one cut)."""
    kept: list[str] = []
    left = limit
    for doc in docs:
        if left <= 0:
            break
        kept.append(doc[:left])
        left -= len(kept[-1])
    return kept


def _chunk_capped(docs: Sequence[str], tokenizer, seq_len: int, tokens_needed: int):
    from tuned_lens.data import chunk_and_tokenize

    limit = (tokens_needed + 2 * seq_len) * CHARS_PER_TOKEN_BOUND
    if sum(len(d) for d in docs) > limit:
        chunks = chunk_and_tokenize(_cap_characters(docs, limit), tokenizer, max_seq_len=seq_len)
        if len(chunks) * chunks.chunk_len >= tokens_needed:
            return chunks
    return chunk_and_tokenize(docs, tokenizer, max_seq_len=seq_len)


def _load_lens(model, folder: Path):
    from tuned_lens.nn import TunedLens

    return TunedLens.from_model_and_pretrained(model, str(folder))


def _train(model, chunks, settings: DemoSettings, paths: dict[str, Path]):
    from tuned_lens.nn import TunedLens
    from tuned_lens.scripts.train_loop import TrainConfig, train_lens

    chunk_len = chunks.chunk_len
    tokens_per_step = settings.tokens_per_step
    if tokens_per_step % chunk_len:
        # The tokenizer may cap the chunk below --seq-len; keep the step size a multiple of it.
        tokens_per_step = max(1, round(tokens_per_step / chunk_len)) * chunk_len
    samples = tokens_per_step // chunk_len
    config = TrainConfig(
        num_steps=settings.steps,
        tokens_per_step=tokens_per_step,
        # One micro-batch per step (capped): the CPU is fastest with a few rows at once.
        per_gpu_batch_size=_largest_divisor_at_most(samples, 16),
        checkpoint_freq=settings.checkpoint_freq,
        checkpoint_dir=paths["checkpoints"],
        seed=settings.seed,
    )
    lens = TunedLens.from_model(model)
    result = train_lens(model, lens, chunks, config)
    _save_lens_atomically(lens, paths["lens"])
    losses = result.losses
    info = {
        "steps": settings.steps,
        "tokens_per_step": tokens_per_step,
        "resumed_from_step": result.start_step,
        "tokens_per_second": result.tokens_per_second,
        "first_step_kl_nats": losses[0] if losses and result.start_step == 0 else None,
        "last_step_kl_nats": losses[-1] if losses else None,
    }
    return lens, info


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _save_lens_atomically(lens, folder: Path) -> None:
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    lens.save(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def _evaluate(
    model, lens, chunks, settings: DemoSettings, paths: dict[str, Path]
) -> dict[str, Any]:
    """Per-layer KL, cross-entropy and entropy of both lenses on held-out chunks (nats)."""
    from tuned_lens.nn import LogitLens
    from tuned_lens.scripts.eval_loop import EvalConfig, evaluate_lenses, write_outputs

    chunk_len = chunks.chunk_len
    available = len(chunks) * chunk_len
    tokens = min(settings.eval_tokens, available)
    rows = max(1, tokens // chunk_len)
    batch = _largest_divisor_at_most(rows, 8)
    config = EvalConfig(tokens=rows * chunk_len, per_gpu_batch_size=batch, seed=settings.seed)
    result = evaluate_lenses(
        model, {"logit": LogitLens.from_model(model), "tuned": lens}, chunks, config
    )
    write_outputs(result, paths["eval"])
    agg = result.aggregate
    layers = []
    for j in range(result.num_layers):
        key = f"layer_{j}"
        layers.append(
            {
                "layer": j,
                **{
                    f"{metric}_{name}": float(agg[name][metric][key])
                    for name in ("logit", "tuned")
                    for metric in ("kl", "ce", "entropy")
                },
            }
        )
    return {
        "layers": layers,
        "baseline": {
            "ce": float(agg["baseline"]["ce"]["final"]),
            "entropy": float(agg["baseline"]["entropy"]["final"]),
        },
        "units": "nats per token (multiply by nats_to_bpb for bits per byte)",
        "nats_to_bpb": float(result.nats_to_bpb),
        "tokens": int(result.tokens),
    }


def format_table(metrics: dict[str, Any]) -> str:
    """A plain-text table of the per-layer metrics (nats per token)."""
    head = (
        f"{'layer':>5}  {'KL logit':>9}  {'KL tuned':>9}  {'CE logit':>9}  "
        f"{'CE tuned':>9}   (nats/token, {metrics['tokens']:,} held-out tokens)"
    )
    lines = [head, "-" * len(head)]
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


# ----------------------------------------------------------------------------------------------
# The closing message
# ----------------------------------------------------------------------------------------------


def _print_summary(settings: DemoSettings, outputs: DemoOutputs) -> None:
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
        f"  trajectories/          prediction trajectories for {len(outputs.trajectory_html)} "
        "sentences (open the .html in a browser and hover the cells)",
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
        "  traj.entropy().figure(title='entropy').write_html('entropy.html')",
        "  EOF",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
