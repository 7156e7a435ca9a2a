"""Command line: ``tuned-lens {train,eval,demo} …`` (also ``python -m tuned_lens``).

The flag names are the original tuned-lens CLI's, so existing scripts keep working
(``--model.name``, ``--data.name``, ``--per_gpu_batch_size``, ``--loss KL``, ``--optimizer SGD``…).
Enum values are accepted in any case; boolean options take ``--flag``, ``--flag true|false`` or
``--noflag``.

``train`` and ``eval`` run through :func:`tuned_lens.cli.run_command`: a user error prints one
line naming the flag as typed here (``--num_steps``) and exits 2; a bug keeps its traceback.
Logging goes through :func:`tuned_lens.cli.configure_logging` (our records only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens.cli import configure_logging, run_command

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.training.commands import DistSpec
    from tuned_lens.training.ingredients import DataSpec, ModelSpec

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on", "t", "y"):
        return True
    if value in ("0", "false", "no", "off", "f", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_bool(
    parser: argparse._ActionsContainer,
    name: str,
    *,
    default: bool,
    help: str,
    dest: str | None = None,
) -> None:
    """Add ``--name [true|false]`` and its negation ``--noname`` to a parser or argument group."""
    dest = dest or name.lstrip("-").replace(".", "_")
    parser.add_argument(
        name,
        dest=dest,
        nargs="?",
        const=True,
        default=default,
        type=_parse_bool,
        metavar="true|false",
        help=f"{help} (default: {str(default).lower()})",
    )
    bare = name.lstrip("-")
    parser.add_argument(f"--no{bare}", dest=dest, action="store_false", help=argparse.SUPPRESS)


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper()
        if value not in choices:
            raise argparse.ArgumentTypeError(
                f"invalid choice {text!r} (choose from {', '.join(choices)}, any case)"
            )
        return value

    parse.__name__ = "choice"
    return parse


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model.name",
        dest="model_name",
        required=True,
        help="model folder, Hugging Face id (cache only when offline), or 'glassllm'/'smollm2'",
    )
    group.add_argument(
        "--precision",
        type=str.lower,
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16", "int8"),
        help="model precision; auto = float32 on the CPU, the checkpoint's dtype on GPUs",
    )
    group.add_argument("--model.revision", dest="model_revision", default=None)
    _add_bool(group, "--slow_tokenizer", default=False, help="use a slow tokenizer")
    group.add_argument("--tokenizer", default=None, help="tokenizer name/folder override")
    group.add_argument(
        "--tokenizer_type",
        default=None,
        help="accepted for compatibility; the tokenizer class is picked automatically",
    )


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data.name",
        dest="data_name",
        nargs="+",
        default=["tinyshakespeare"],
        help="a .jsonl/.json/.txt file or folder, 'tinyshakespeare' (bundled), or the "
        "arguments of datasets.load_dataset (default: tinyshakespeare)",
    )
    group.add_argument("--split", default="validation", help="Hugging Face data set split")
    group.add_argument("--text_column", default="text", help="field holding the text")
    group.add_argument("--data.revision", dest="data_revision", default=None)
    group.add_argument("--max_seq_len", type=int, default=2048, help="chunk length cap")
    _add_bool(group, "--dataset_shuffle", default=False, help="shuffle documents before packing")
    group.add_argument("--dataset_shuffle_seed", type=int, default=42)


def _add_dist_args(parser: argparse.ArgumentParser, *, batch_flag: str) -> None:
    group = parser.add_argument_group("distributed")
    _add_bool(group, "--fsdp", default=False, help="shard the model with FSDP2 (torchrun)")
    _add_bool(group, "--cpu_offload", default=False, help="offload FSDP shards to the CPU")
    group.add_argument("--nccl_timeout", type=int, default=1200, help="process-group timeout, s")
    group.add_argument(
        batch_flag,
        dest="per_gpu_batch_size",
        type=int,
        default=None,
        help="chunks per micro-batch on each process (default 1)",
    )
    _add_bool(group, "--dataloader_shuffle", default=True, help="shuffle the packed chunks")
    group.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    """The ``tuned-lens`` parser: ``--log_level`` and the ``train``/``eval``/``demo`` commands.

    ``train`` and ``eval`` carry ``flags`` (Python option name -> flag) in their namespace.
    """
    parser = argparse.ArgumentParser(
        prog="tuned-lens",
        description="Train and evaluate tuned lenses (Belrose et al. 2023).",
    )
    parser.add_argument("--log_level", type=str.upper, default="INFO", choices=LOG_LEVELS)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{train,eval,demo,serve,explore}"
    )
    train = sub.add_parser(
        "train", help="train a tuned lens", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    _add_train_args(train)
    ev = sub.add_parser(
        "eval",
        help="evaluate the logit lens and a tuned lens",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_eval_args(ev)
    sub.add_parser("demo", help="run the demo (options: tuned-lens demo --help)", add_help=False)
    from tuned_lens.explorer.serve_cli import add_serve_arguments

    add_serve_arguments(sub.add_parser("serve", help="the local explorer app on 127.0.0.1"))
    from tuned_lens.explorer.explore_cli import add_explore_arguments

    add_explore_arguments(sub.add_parser("explore", help="write an explorer page (.html/.json)"))
    for command in (train, ev):
        command.set_defaults(flags=flag_spellings(command))
    return parser


def _add_train_args(train: argparse.ArgumentParser) -> None:
    """Flags of ``tuned-lens train``."""
    train.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="folder for config.json + params.safetensors",
    )
    _add_model_args(train)
    _add_data_args(train)
    _add_dist_args(train, batch_flag="--per_gpu_batch_size")
    t = train.add_argument_group("training")
    t.add_argument("--seed", type=int, default=42, help="seed of the chunk order")
    t.add_argument("-l", "--lens_name_or_path", default=None, help="warm-start from this lens")
    _add_bool(t, "--bias_only", default=False, help="train the translators' biases only")
    t.add_argument("--num_steps", type=int, default=250)
    t.add_argument("--tokens_per_step", type=int, default=2**18)
    t.add_argument("--wandb", default=None, metavar="RUN_NAME", help="log to W&B as this run")
    t.add_argument(
        "--token_shift", type=int, default=None, help="label shift (default 0 for KL, 1 for CE)"
    )
    t.add_argument("--checkpoint_freq", type=int, default=None, help="steps between snapshots")
    t.add_argument(
        "--checkpoint_dir",
        type=Path,
        default=None,
        help="snapshot folder (default <output>/checkpoints)",
    )
    t.add_argument("--loss", type=_choice(("KL", "CE")), default="KL")
    t.add_argument(
        "--rank", type=int, default=None, help="low-rank translators h + U V^T h + b of this rank"
    )
    o = train.add_argument_group("optimizer")
    o.add_argument("--weight_decay", type=float, default=1e-3)
    o.add_argument("--lr_scale", type=float, default=1.0)
    o.add_argument("--momentum", type=float, default=0.9)
    _add_bool(o, "--zero", default=False, help="accepted for compatibility; has no effect")
    o.add_argument(
        "--optimizer",
        type=_choice(("SGD", "ADAM", "MUON", "WHITENED")),
        default="SGD",
        help="MUON: torch.optim.Muon on the matrices, SGD on the biases (torch >= 2.9); "
        "WHITENED: input-whitened SGD (needs --init least_squares)",
    )
    t.add_argument(
        "--init",
        type=_choice(("IDENTITY", "LEAST_SQUARES")),
        default="IDENTITY",
        help="translator start: identity (the original's) or the least-squares shortcut",
    )
    t.add_argument(
        "--init_tokens",
        type=int,
        default=None,
        help="tokens of the stream the least-squares fit reads (default: one step's); "
        "they count toward the budget",
    )
    t.add_argument(
        "--recipe",
        type=_choice(("ORIGINAL", "FAST")),
        default="ORIGINAL",
        help="fast: the measured preset (see docs/training.md); it sets --init, --optimizer, "
        "--lr_scale, --warmup_steps and --weight_decay",
    )
    o.add_argument(
        "--warmup_steps",
        type=int,
        default=None,
        help="default: min(1000, num_steps // 5) for ADAM, 0 for SGD",
    )
    _add_bool(t, "--progress", default=True, help="show a progress bar")
    _add_fused_loss_args(t)


def _add_fused_loss_args(t: argparse._ArgumentGroup) -> None:
    """``train``'s switches of the fused, chunked loss."""
    _add_bool(
        t,
        "--fused_loss",
        default=True,
        help="the loss fused with the unembedding, a chunk of the vocabulary at a time "
        "(--nofused_loss: materialise each layer's logits; same lens, more memory)",
    )
    t.add_argument(
        "--loss_chunk_size",
        type=int,
        default=None,
        help="vocabulary rows per chunk of the fused loss (default: automatic)",
    )


def _add_eval_args(ev: argparse.ArgumentParser) -> None:
    """Flags of ``tuned-lens eval``."""
    ev.add_argument("-o", "--output", type=Path, required=True, help="folder for the results")
    _add_model_args(ev)
    _add_data_args(ev)
    _add_dist_args(ev, batch_flag="--dist.per_gpu_batch_size")
    e = ev.add_argument_group("evaluation")
    e.add_argument("-l", "--lens_name", default=None, help="tuned lens folder to evaluate")
    _add_bool(e, "--logit", default=True, help="also evaluate the logit lens")
    e.add_argument(
        "--lens",
        dest="lenses",
        action="append",
        default=None,
        metavar="[NAME=]KIND[:PATH]",
        help="compare lenses (repeatable): logit, tuned:PATH, jacobian:PATH, shortcut:PATH; "
        "writes comparison.{json,md,html} instead of the classic result files",
    )
    e.add_argument("--top_k", type=int, default=10, help="k of overlap@k (with --lens)")
    e.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (--lens)")
    e.add_argument("--seed", type=int, default=42)
    e.add_argument("--tokens", type=int, default=None, help="tokens to evaluate (default: all)")
    e.add_argument("--token_shift", type=int, default=1)
    e.add_argument(
        "--per_gpu_batch_size",
        dest="eval_batch_alias",
        type=int,
        default=None,
        help="same as --dist.per_gpu_batch_size",
    )
    _add_bool(e, "--layer_transfer", default=False, help="translator i on layer j, all i, j")
    _add_bool(
        e,
        "--record_logit_stats",
        default=False,
        help="write the mean predicted distribution per layer",
    )
    _add_bool(e, "--progress", default=True, help="show a progress bar")


def flag_spellings(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Python option name -> the flag that sets it in ``parser`` (``model_name`` ->
    ``--model.name``), for :func:`tuned_lens.cli.run_command`'s messages.

    The library names options by the Python names the parser stores them under, so each
    destination maps to its first long flag.
    """
    flags: dict[str, str] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
        if longs and action.dest not in flags and action.dest != "help":
            flags[action.dest] = longs[0]
    if "eval_batch_alias" in flags:  # eval: both flags set the one per_gpu_batch_size
        flags["per_gpu_batch_size"] = f"{flags['per_gpu_batch_size']}/--per_gpu_batch_size"
    return flags


def _run_demo(argv: list[str]) -> int:
    try:
        from tuned_lens.demo import main as demo_main
    except ImportError as err:
        print(f"tuned-lens demo is not available in this installation: {err}", file=sys.stderr)
        return 2
    result = demo_main(argv)
    return int(result) if isinstance(result, int) else 0


def _train(args: argparse.Namespace) -> int:
    from tuned_lens.training import flags
    from tuned_lens.training.commands import run_train

    model_spec, data_spec, dist_spec = flags.specs(args)
    run_train(
        model_spec=model_spec,
        data_spec=data_spec,
        config=flags.train_config(args),
        output=args.output,
        lens_name_or_path=args.lens_name_or_path,
        dist_spec=dist_spec,
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from tuned_lens.training import flags
    from tuned_lens.training.commands import run_eval

    model_spec, data_spec, dist_spec = flags.specs(args)
    flags.checked_eval_batch(args)  # before --lens: the checks hold for every evaluation
    if args.lenses:
        return _compare(args, model_spec, data_spec, dist_spec)
    run_eval(
        model_spec=model_spec,
        data_spec=data_spec,
        config=flags.eval_config(args),
        output=args.output,
        lens_name=args.lens_name,
        logit=args.logit,
        dist_spec=dist_spec,
    )
    return 0


def _compare(
    args: argparse.Namespace, model_spec: ModelSpec, data_spec: DataSpec, dist_spec: DistSpec
) -> int:
    """``eval --lens …``: the listed lenses (and ``-l``'s tuned lens) on the same documents."""
    from tuned_lens.evaluation.command import run_compare

    specs = list(args.lenses) + ([f"tuned:{args.lens_name}"] if args.lens_name else [])
    a, b = args.per_gpu_batch_size, args.eval_batch_alias  # checked by _eval (>= 1)
    batch = a if a is not None else b if b is not None else 8
    run_compare(
        model_spec=model_spec,
        data_spec=data_spec,
        lens_specs=specs,
        output=args.output,
        tokens=args.tokens,
        batch_size=batch,
        top_k=args.top_k,
        bootstrap=args.bootstrap,
        seed=args.seed,
        dist_spec=dist_spec,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tuned-lens`` and ``python -m tuned_lens``.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The process exit status (2 after a user error).
    """
    as_program = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    # The demo parses its own options: hand it everything after the word "demo".
    if "demo" in argv:
        at = argv.index("demo")
        head = argv[:at]
        if all(a.startswith("--log_level") or a.upper() in LOG_LEVELS for a in head):
            parser = build_parser()
            top = parser.parse_args([*head, "demo"])
            configure_logging(top.log_level)
            return _run_demo(argv[at + 1 :])
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    if as_program:
        # Process-wide allocator tuning (faster CPU steps); not when called from other code.
        from tuned_lens.training.ingredients import tune_cpu_allocator

        tune_cpu_allocator()
    from tuned_lens.explorer.explore_cli import run_explore
    from tuned_lens.explorer.serve_cli import run_serve

    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "train": _train,
        "eval": _eval,
        "serve": run_serve,
        "explore": run_explore,
    }
    if args.command not in commands:  # pragma: no cover - "demo" is handled above
        return _run_demo([])
    return run_command(
        args.command,
        lambda: commands[args.command](args),
        flags=args.flags,
        debug=args.log_level == "DEBUG",
    )


if __name__ == "__main__":
    sys.exit(main())
