"""``tuned-lens serve``: the local explorer app from the command line.

``tuned-lens serve --model glassllm --lens logit --lens tuned=path/to/lens`` loads the model and
the lenses once and serves :mod:`tuned_lens.explorer.server` on 127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import InvalidInputError

__all__ = ["add_serve_arguments", "load_model_and_lenses", "run_serve"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``tuned-lens serve``."""
    parser.add_argument(
        "--model", required=True, help="model folder, Hugging Face id, or 'glassllm'/'smollm2'"
    )
    parser.add_argument(
        "--lens",
        action="append",
        default=None,
        metavar="NAME=PATH | logit | PATH",
        help="a lens to offer (repeatable): 'logit', a tuned lens folder or Hub id, or "
        "name=folder (default: logit)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    parser.add_argument("--device", default="cpu", help="where the model runs")
    parser.add_argument("--precision", default="auto", help="model precision")
    parser.add_argument("--max_tokens", type=int, default=512, help="tokens per prompt")
    parser.add_argument("--max_prompts", type=int, default=8, help="prompts per request")
    parser.add_argument(
        "--max_concurrent", type=int, default=4, help="requests computed at once (others wait)"
    )
    parser.add_argument("--topk", type=int, default=10, help="top tokens kept per cell")
    parser.set_defaults(
        flags={
            "max_tokens": "--max_tokens",
            "max_prompts": "--max_prompts",
            "max_concurrent": "--max_concurrent",
            "topk": "--topk",
            "lenses": "--lens",
        }
    )


def _lenses(model: Any, specs: list[str]) -> dict[str, Any]:
    from ..nn.lenses import LogitLens, TunedLens

    lenses: dict[str, Any] = {}
    for spec in specs:
        name, _, where = spec.partition("=") if "=" in spec else (spec, "", spec)
        if not name or not where:
            raise InvalidInputError(
                f"lens {spec!r} must be NAME=PATH, logit or PATH", option="lenses"
            )
        if where == "logit":
            lenses[name] = LogitLens.from_model(model)
        else:
            lenses[name] = TunedLens.from_model_and_pretrained(model, where)
    return lenses


def load_model_and_lenses(
    model_name: str, lens_specs: list[str], *, device: str = "cpu", precision: str = "auto"
) -> tuple[Any, Any, dict[str, Any]]:
    """The model, its tokenizer and ``{name: lens}`` (for ``serve`` and ``explore``).

    Args:
        model_name: A model folder, Hugging Face id, or ``glassllm`` / ``smollm2``.
        lens_specs: ``logit``, a tuned lens folder or Hub id, or ``name=folder`` each.
        device: Where the model runs.
        precision: The model's precision.

    Returns:
        ``(model, tokenizer, lenses)``.
    """
    from ..assets import resolve_model
    from ..model_loading import load_model, load_tokenizer

    path = resolve_model(model_name)
    model = load_model(path, device=device, precision=precision)
    return model, load_tokenizer(path), _lenses(model, lens_specs)


def run_serve(args: argparse.Namespace) -> int:
    """Load the model and lenses once, then serve until interrupted.

    Returns:
        0 when the server stops.
    """
    from .server import ExplorerApp, ServerLimits, start_server

    for option in ("max_tokens", "max_prompts", "max_concurrent", "topk"):
        if getattr(args, option) < 1:
            raise InvalidInputError(
                f"{option} must be >= 1, got {getattr(args, option)}", option=option
            )
    model, tokenizer, lenses = load_model_and_lenses(
        args.model, args.lens or ["logit"], device=args.device, precision=args.precision
    )
    limits = ServerLimits(
        max_tokens=args.max_tokens,
        max_prompts=args.max_prompts,
        max_concurrent=args.max_concurrent,
    )
    app = ExplorerApp(
        model,
        tokenizer,
        lenses,
        limits=limits,
        topk=args.topk,
        model_name=args.model,
    )
    server, thread = start_server(app, args.host, args.port)
    print(f"tuned-lens serve: http://{args.host}:{server.server_port}/ (Ctrl-C stops)", flush=True)
    try:
        thread.join()
    finally:
        server.shutdown()
        app.close()
    return 0
