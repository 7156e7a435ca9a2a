"""``tuned-lens demo``'s command line: its flags, their defaults, and :func:`main`.

Errors are reported the way every ``tuned-lens`` command reports them
(:func:`tuned_lens.cli.run_command`): one line naming the option as this command spells it
(``--text-column``, ``--seq-len``), exit status 2, no traceback. A flag value the settings reject
is reported by the argument parser (usage, then that line). Only the library's own log records
reach the terminal (:func:`tuned_lens.cli.configure_logging`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from tuned_lens.cli import EXIT_INTERRUPTED, configure_logging, run_command, user_message
from tuned_lens.demo.budget import FULL_BUDGET, LARGE_MODEL_CPU_BUDGET, QUICK_BUDGET, default_budget
from tuned_lens.demo.pipeline import run_demo
from tuned_lens.demo.report import summary_text
from tuned_lens.demo.settings import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    DEFAULT_OUTPUT,
    DEFAULT_SENTENCES,
    DEMO_RECIPES,
    DemoSettings,
)
from tuned_lens.demo.stages import check_device
from tuned_lens.errors import InvalidInputError

__all__ = ["FLAGS", "build_parser", "main", "settings_from_args"]

#: Python option names (of the demo's settings and of the library functions it calls) -> the
#: flag as ``tuned-lens demo`` spells it, for error messages.
FLAGS = {
    "output": "--output",
    "model": "--model",
    "model_name": "--model",
    "data": "--data",
    "data_name": "--data",
    "text_column": "--text-column",
    "steps": "--steps",
    "num_steps": "--steps",
    "tokens_per_step": "--tokens-per-step",
    "seq_len": "--seq-len",
    "max_seq_len": "--seq-len",
    "eval_tokens": "--eval-tokens",
    "tokens": "--eval-tokens",
    "seed": "--seed",
    "sentences": "--sentence",
    "device": "--device",
    "threads": "--threads",
}


def _budget_help(what: str, pick: str) -> str:
    full, quick, large = (
        getattr(b, pick) for b in (FULL_BUDGET, QUICK_BUDGET, LARGE_MODEL_CPU_BUDGET)
    )
    return f"{what} (default {full}; {quick} with --quick; {large} for models other than glassllm on a CPU)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tuned-lens demo``'s flags."""
    parser = argparse.ArgumentParser(
        prog="tuned-lens demo",
        description=(
            "Train and evaluate a tuned lens end to end, offline: by default on the glassllm "
            "model and tinyshakespeare that ship inside PyPI wheels (about two minutes on "
            "two CPU cores). Results go to --output; re-running resumes."
        ),
    )
    add = parser.add_argument
    add(
        "-o",
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help="folder for every result (default: %(default)s)",
    )
    add(
        "--model",
        default=DEFAULT_MODEL,
        help="glassllm (default), smollm2, a local Hugging Face model folder, or a cached Hub id",
    )
    add(
        "--data",
        default=DEFAULT_DATA,
        help="tinyshakespeare (default) or a local .txt/.jsonl file or folder",
    )
    add(
        "--text-column",
        default="text",
        help="field holding the text in .jsonl records (default: %(default)s)",
    )
    add("--steps", type=int, default=None, help=_budget_help("optimiser steps", "steps"))
    add(
        "--tokens-per-step",
        type=int,
        default=None,
        help=_budget_help("training tokens per step", "tokens_per_step"),
    )
    add("--seq-len", type=int, default=None, help=_budget_help("tokens per chunk", "seq_len"))
    add(
        "--eval-tokens",
        type=int,
        default=None,
        help=_budget_help("held-out tokens to evaluate", "eval_tokens"),
    )
    add("--seed", type=int, default=42, help="seed (default: %(default)s)")
    add(
        "--recipe",
        choices=DEMO_RECIPES,
        default="fast",
        help="fast (least squares + whitened SGD; default) or original (the original "
        "tuned-lens recipe); see docs/training.md",
    )
    add(
        "--sentence",
        action="append",
        dest="sentences",
        metavar="TEXT",
        help="a sentence to draw a prediction trajectory for (repeatable)",
    )
    add(
        "--quick", action="store_true", help="a tiny budget: seconds instead of minutes (for tests)"
    )
    add("--force", action="store_true", help="redo every stage, even those whose results exist")
    add("--no-png", action="store_true", help="write HTML only, even when a Chromium is installed")
    add("--device", default=None, help="cpu, cuda, cuda:1, … (default: CUDA when available)")
    add(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: 1 for small models such as glassllm, else torch's default)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """The settings the parsed flags ask for, with the budget's defaults for those not given.

    Raises:
        InvalidInputError: a value the settings reject.
    """
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
        recipe=args.recipe,
        checkpoint_freq=max(1, min(budget.checkpoint_freq, steps)),
        sentences=tuple(args.sentences) if args.sentences else DEFAULT_SENTENCES,
        text_column=args.text_column,
        force=args.force,
        png=not args.no_png,
        device=args.device,
        threads=args.threads,
    )


@contextlib.contextmanager
def _our_logs_only() -> Iterator[None]:
    """Our log records on stderr, third-party INFO chatter dropped, for the block only.

    When a caller (``tuned-lens --log_level … demo``) configured logging already, that stays;
    otherwise the set-up is undone afterwards, so calling :func:`main` from Python leaves the
    process's logging as it was.
    """
    ours = logging.getLogger("tuned_lens")
    if any(getattr(handler, "_tuned_lens_cli", False) for handler in ours.handlers):
        yield
        return
    root = logging.getLogger()
    handlers, level, propagate, root_level = (
        list(ours.handlers),
        ours.level,
        ours.propagate,
        root.level,
    )
    configure_logging("INFO")
    try:
        yield
    finally:
        ours.handlers[:] = handlers
        ours.setLevel(level)
        ours.propagate = propagate
        root.setLevel(root_level)


def _run(settings: DemoSettings) -> int:
    try:
        outputs = run_demo(settings)
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary_text(settings, outputs), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tuned-lens demo`` (``python -m tuned_lens demo``).

    Returns:
        0 on success, 2 after a user error (one line on stderr), 130 after Ctrl-C. A flag
        value the settings reject exits through the argument parser (status 2).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        check_device(settings.device)
    except InvalidInputError as err:
        parser.error(user_message(err, FLAGS))
    with _our_logs_only():
        debug = logging.getLogger("tuned_lens").isEnabledFor(logging.DEBUG)
        return run_command("demo", lambda: _run(settings), flags=FLAGS, debug=debug)
