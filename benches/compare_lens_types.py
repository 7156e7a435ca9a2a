"""Every lens type on held-out glassllm text, with what each costs to fit (issue 14's table).

Fits, on glassllm + tinyshakespeare with the project's split (the first nine tenths, cut at a
paragraph break, train; the last tenth is held out; :func:`recipe_curve._split`):

* ``logit``: the logit lens (no fit);
* ``tuned``: the tuned lens, original recipe, the original's budget (40 steps of 8,192 tokens in
  128-token chunks, micro-batch 8: :func:`tuned_lens.training.train_loop.train_lens`);
* ``tuned_fast``: the same budget with ``recipe="fast"`` (least squares + whitened SGD);
* ``lowrank_r``: low-rank tuned lenses (``TrainConfig(rank=r)``, original recipe, same budget);
* ``shortcut``: the linear shortcut (:class:`LinearShortcutLens`, least squares) on the first
  ``--shortcut-tokens`` training tokens (whole 128-token rows);
* ``jacobian``: the Jacobian lens (``JacobianLens.fit``, the reference's defaults) on the first
  ``--jacobian-prompts`` training rows of 128 tokens.

Each fit is timed (wall clock, after the model and data are loaded). Then one
:func:`tuned_lens.evaluate` call scores all of them on every held-out row (the model runs once
per batch for all lenses): per layer KL(model ‖ lens) in nats and bits per byte, CE, entropy,
top-1 agreement, overlap@10 and rank, each with a 95% bootstrap interval over rows. Written into
``--out``: ``comparison.{md,json,html}`` (the full table and figure), ``fit_costs.json`` and
``summary.md`` (per-layer KL, layer-3 interval, top-1 and overlap, and the fit cost per lens).

Usage::

    python benches/compare_lens_types.py --out lens_types            # the issue's table
    python benches/compare_lens_types.py --out /tmp/smoke --steps 2 --ranks 4 \\
        --jacobian-prompts 2 --shortcut-tokens 1024 --eval-rows 8    # a quick check
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_curve import _split  # noqa: E402  (the project's split, one definition)

FULL_STEPS = 40
TOKENS_PER_STEP = 8192
BATCH = 8
CHUNK = 128  # _split's chunk length


def _train_tuned(model: Any, train: Any, *, steps: int, recipe: str, rank: int | None) -> Any:
    """A tuned lens trained with ``train_lens`` on the original's step size."""
    import torch
    from tuned_lens.nn import TunedLens
    from tuned_lens.training.train_config import TrainConfig
    from tuned_lens.training.train_loop import train_lens

    torch.manual_seed(42)
    lens = TunedLens.from_model(model, rank=rank)
    config = TrainConfig(
        num_steps=steps,
        tokens_per_step=TOKENS_PER_STEP,
        per_gpu_batch_size=BATCH,
        recipe=recipe,
        rank=rank,
        progress=False,
    )
    train_lens(model, lens, train, config)
    return lens


def _fit_all(model: Any, train: Any, args: argparse.Namespace) -> tuple[dict, dict]:
    """``(lenses, costs)``: name -> lens and name -> what its fit used and took."""
    from tuned_lens.nn import JacobianLens, LinearShortcutLens, LogitLens

    lenses: dict[str, Any] = {"logit": LogitLens.from_model(model)}
    costs: dict[str, dict[str, Any]] = {"logit": {"fit": "none", "fit_s": 0.0, "tokens": 0}}
    budget = args.steps * TOKENS_PER_STEP
    tuned = [("tuned", "original", None), ("tuned_fast", "fast", None)]
    tuned += [(f"lowrank_{r}", "original", r) for r in args.ranks]
    for name, recipe, rank in tuned:
        start = time.perf_counter()
        lenses[name] = _train_tuned(model, train, steps=args.steps, recipe=recipe, rank=rank)
        costs[name] = {
            "fit": f"train_lens, recipe {recipe}"
            + (f", rank {rank}" if rank else "")
            + f", {args.steps} steps x {TOKENS_PER_STEP} tokens",
            "fit_s": time.perf_counter() - start,
            "tokens": budget,
        }
        print(f"{name}: {costs[name]['fit_s']:.1f} s", flush=True)
    rows = train.input_ids[: max(1, args.shortcut_tokens // CHUNK)].tolist()
    start = time.perf_counter()
    lenses["shortcut"] = LinearShortcutLens.fit(model, rows, ridge=args.ridge, progress=False)
    costs["shortcut"] = {
        "fit": f"least squares, ridge {args.ridge:g}, first {len(rows)} training rows",
        "fit_s": time.perf_counter() - start,
        "tokens": lenses["shortcut"].n_tokens,
    }
    print(f"shortcut: {costs['shortcut']['fit_s']:.1f} s", flush=True)
    prompts = train.input_ids[: args.jacobian_prompts].tolist()
    start = time.perf_counter()
    lenses["jacobian"] = JacobianLens.fit(model, prompts, progress=False)
    costs["jacobian"] = {
        "fit": f"JacobianLens.fit defaults (skip_first 16, dim_batch 8), {len(prompts)} rows",
        "fit_s": time.perf_counter() - start,
        "tokens": len(prompts) * CHUNK,
        "prompts": len(prompts),
    }
    print(f"jacobian: {costs['jacobian']['fit_s']:.1f} s", flush=True)
    return lenses, costs


def _cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _summary(result: Any, costs: dict[str, dict[str, Any]], header: str) -> str:
    """The closing table: KL per layer (bits/byte and nats), layer-3 details, fit cost."""
    layers = sorted({j for per in result.lenses.values() for j in per})
    last = layers[-1]
    head = (
        "| lens | KL bits/byte, layer "
        + " / ".join(map(str, layers))
        + " | KL nats, layer "
        + " / ".join(map(str, layers))
        + f" | L{last} KL nats [95% CI] | L{last} top-1 | L{last} overlap@{result.k} "
        "| fit (s) | fit data |"
    )
    lines = [header, "", head, "| --- " * 8 + "|"]
    for name, per in result.lenses.items():
        bpb = " / ".join(f"{per[j]['kl_bpb'].mean:.3f}" if j in per else "—" for j in layers)
        nats = " / ".join(f"{per[j]['kl'].mean:.3f}" if j in per else "—" for j in layers)
        kl, cost = per[last]["kl"], costs[name]
        data = f"{cost['tokens']:,} tokens" if cost["tokens"] else "—"
        lines.append(
            f"| {name} | {bpb} | {nats} | {kl.mean:.3f} [{kl.low:.3f}, {kl.high:.3f}] "
            f"| {per[last]['top1'].mean:.3f} | {per[last]['overlap'].mean:.3f} "
            f"| {cost['fit_s']:.1f} | {data} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Fit every lens, evaluate them together, write the tables and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--steps", type=int, default=FULL_STEPS, help="tuned-lens steps")
    parser.add_argument("--ranks", default="4,16,64", help="comma list of low-rank ranks")
    parser.add_argument("--shortcut-tokens", type=int, default=40_960)
    parser.add_argument("--ridge", type=float, default=1e-6, help="the shortcut's ridge")
    parser.add_argument("--jacobian-prompts", type=int, default=64)
    parser.add_argument("--eval-rows", type=int, default=0, help="0: every held-out row")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    args.ranks = [int(r) for r in args.ranks.split(",") if r]

    import torch
    from tuned_lens import evaluate
    from tuned_lens._atomic import write_json_atomically, write_text_atomically
    from tuned_lens.evaluation.report import write_comparison

    torch.set_num_threads(args.threads)
    model, train, held_out = _split()
    lenses, costs = _fit_all(model, train, args)
    rows = held_out.input_ids[: args.eval_rows or None]
    start = time.perf_counter()
    result = evaluate(model, lenses, rows, batch_size=BATCH, nats_to_bpb=held_out.nats_to_bpb)
    eval_s = time.perf_counter() - start
    print(f"evaluate: {eval_s:.1f} s", flush=True)
    write_comparison(result, args.out)
    machine = f"{_cpu_name()}, torch threads {args.threads}"
    meta = {
        "costs": costs,
        "eval_s": eval_s,
        "train_rows": int(train.input_ids.shape[0]),
        "held_out_rows": int(rows.shape[0]),
        "machine": machine,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    write_json_atomically(args.out / "fit_costs.json", meta)
    header = (
        f"glassllm, held-out tinyshakespeare: {result.tokens:,} scored tokens in "
        f"{result.documents} rows of {CHUNK}; evaluate {eval_s:.0f} s; {machine}; "
        f"{meta['date']}"
    )
    summary = _summary(result, costs, header)
    write_text_atomically(args.out / "summary.md", summary)
    print(summary)


if __name__ == "__main__":
    main()
