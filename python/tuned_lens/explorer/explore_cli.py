"""``tuned-lens explore``: an explorer page (or its JSON document) from the command line.

Two sources, one output (``-o``: an ``.html`` page, or the ``.json`` document when the name
ends in ``.json``):

* prompts run through a model and lenses loaded as ``tuned-lens serve`` loads them
  (:func:`tuned_lens.explorer.serve_cli.load_model_and_lenses`)::

      tuned-lens explore --model glassllm --lens logit --lens tuned=lens/ \\
          --text "The One Ring" -o ring.html
      tuned-lens explore --model glassllm --file prompts.txt -o prompts.html

* a saved document (this project's schema or logitlenskit's V2)::

      tuned-lens explore data.json -o page.html
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

__all__ = ["add_explore_arguments", "read_prompts", "run_explore"]


def add_explore_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tuned-lens explore``."""
    parser.add_argument(
        "data",
        nargs="?",
        default=None,
        help="a saved explorer JSON document (instead of --model and --text/--file)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="the page (.html) or document (.json)"
    )
    parser.add_argument("--model", default=None, help="model folder, Hub id, or 'glassllm'")
    parser.add_argument(
        "--lens",
        action="append",
        default=None,
        metavar="NAME=PATH | logit | PATH",
        help="a lens (repeatable): 'logit', a tuned lens folder or Hub id, or name=folder "
        "(default: logit); several lenses are stored in one page to switch and compare",
    )
    parser.add_argument("--text", action="append", default=None, help="a prompt (repeatable)")
    parser.add_argument("--file", default=None, help="a text file of prompts, one per line")
    parser.add_argument("--title", default="", help="the page's title")
    parser.add_argument("--device", default="cpu", help="where the model runs")
    parser.add_argument("--precision", default="auto", help="model precision")
    parser.add_argument("--max_tokens", type=int, default=512, help="tokens per prompt, at most")
    parser.add_argument("--topk", type=int, default=10, help="top tokens kept per cell")
    parser.set_defaults(
        flags={
            "max_tokens": "--max_tokens",
            "topk": "--topk",
            "lenses": "--lens",
        }
    )


def read_prompts(texts: list[str] | None, file: str | None) -> list[str]:
    """The prompts of ``--text`` (each one) or ``--file`` (one per non-blank line).

    Raises:
        InvalidInputError: Neither or both are given, or there is no prompt.
        FileNotFoundError: The file does not exist.
    """
    if (texts is None) == (file is None):
        raise InvalidInputError("give the prompts with either --text or --file")
    if file is not None:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
        prompts = [line for line in lines if line.strip()]
        if not prompts:
            raise InvalidInputError(f"{file} holds no prompt (one per line)")
        return prompts
    assert texts is not None
    if any(not text.strip() for text in texts):
        raise InvalidInputError("a --text prompt is empty")
    return texts


def _document_from_model(args: argparse.Namespace) -> dict[str, Any]:
    """Run the prompts through the model for every lens and build one document."""
    from ..plotting import CompactTrajectory
    from ._build import build_data
    from .serve_cli import load_model_and_lenses

    for option in ("max_tokens", "topk"):
        if getattr(args, option) < 1:
            raise InvalidInputError(
                f"{option} must be >= 1, got {getattr(args, option)}", option=option
            )
    prompts = read_prompts(args.text, args.file)
    model, tokenizer, lenses = load_model_and_lenses(
        args.model, args.lens or ["logit"], device=args.device, precision=args.precision
    )
    ids = [list(tokenizer(text).input_ids) for text in prompts]
    for n, row in enumerate(ids):
        if len(row) > args.max_tokens:
            raise InvalidInputError(
                f"prompt {n} has {len(row)} tokens; at most max_tokens={args.max_tokens} "
                "(raise it, or shorten the prompt)",
                option="max_tokens",
            )
    trajectories = {
        name: CompactTrajectory.from_lens_and_model(
            lens, model, ids, tokenizer=tokenizer, targets="next", topk=args.topk, progress=False
        )
        for name, lens in lenses.items()
    }
    return build_data(trajectories, title=args.title, model=args.model)


def run_explore(args: argparse.Namespace) -> int:
    """Write the page (or document) that ``tuned-lens explore`` asks for.

    Returns:
        0 after the file is written.

    Raises:
        InvalidInputError: Options that do not fit together, or a document that is not one.
    """
    from .page import ExplorerPage, render_html
    from .reading import load_data
    from .schema import save_data

    if args.data is not None:
        if args.model is not None or args.text is not None or args.file is not None:
            raise InvalidInputError(
                "give either a saved document or --model with --text/--file, not both",
                option="data",
            )
        data = load_data(args.data)
        if args.title:
            data["meta"]["title"] = args.title
    elif args.model is None:
        raise InvalidInputError(
            "give a saved document, or --model with --text or --file", option="data"
        )
    else:
        data = _document_from_model(args)
    output = Path(args.output)
    if output.suffix.lower() == ".json":
        save_data(data, output)
    else:
        ExplorerPage(data=data, html=render_html(data)).save(output)
    print(f"tuned-lens explore: wrote {output} ({output.stat().st_size:,} bytes)", flush=True)
    return 0
