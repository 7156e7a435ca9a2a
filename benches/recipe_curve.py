"""The budget curve of lens-training recipes: held-out KL per layer against training tokens.

Trains one tuned lens per (recipe, budget, seed) on glassllm + tinyshakespeare (the first nine
tenths, cut at a paragraph break) with the original's step size (8,192 tokens of 128-token chunks,
micro-batch 8) and evaluates each on the whole held-out tenth, in bits per byte. Each finished run
is one JSON line in ``--out`` (appended, so an interrupted sweep resumes where it stopped); the
summary table (mean and spread over seeds, and each recipe's ratio to the original recipe at the
largest budget run) is printed from that file.

Usage::

    python benches/recipe_curve.py --out curve.jsonl            # the issue's sweep
    python benches/recipe_curve.py --out curve.jsonl --summary  # the table only
    python benches/recipe_curve.py --recipes fast,muon --steps 5 --seeds 1 --lr-scales 0.5,1,2
    python benches/recipe_curve.py --model smollm2 --tokens-per-step 1024 --batch 4 \
        --steps 3 --seeds 1 --eval-tokens 2048 --out smollm2.jsonl   # what 2 CPU cores afford

A recipe name is ``original``, ``fast`` (the preset), or ``key=value+key=value`` over
``TrainConfig`` / ``OptimizerConfig`` fields (``init=least_squares+optimizer=muon+lr_scale=2``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

FULL_STEPS = 40
CHUNK = 128
OPTIMIZER_FIELDS = ("optimizer", "lr_scale", "momentum", "warmup_steps", "weight_decay")


def _split(model_name: str = "glassllm") -> tuple[Any, Any, Any]:
    """``(model, training chunks, held-out chunks)``: tinyshakespeare cut at a paragraph break."""
    from tuned_lens.assets import load_glassllm, load_smollm2, tinyshakespeare_text
    from tuned_lens.data import pack_documents

    model, tokenizer = load_smollm2() if model_name == "smollm2" else load_glassllm()
    text = tinyshakespeare_text()
    cut = text.index("\n\n", int(len(text) * 0.9)) + 2
    train = pack_documents([text[:cut]], tokenizer, max_seq_len=CHUNK)
    held_out = pack_documents([text[cut:]], tokenizer, max_seq_len=CHUNK)
    return model, train, held_out


def _config(
    recipe: str, steps: int, seed: int, lr_scale: float | None, tokens: int, batch: int
) -> Any:
    from tuned_lens.training.optim import OptimizerConfig
    from tuned_lens.training.train_config import TrainConfig

    train: dict[str, Any] = {}
    optim: dict[str, Any] = {}
    if recipe == "fast":
        train["recipe"] = "fast"
    elif recipe != "original":
        for item in recipe.split("+"):
            key, value = item.split("=", 1)
            parsed: Any = value
            for cast in (int, float):
                try:
                    parsed = cast(value)
                    break
                except ValueError:
                    pass
            (optim if key in OPTIMIZER_FIELDS else train)[key] = parsed
    if lr_scale is not None:
        optim["lr_scale"] = lr_scale
    return TrainConfig(
        num_steps=steps,
        tokens_per_step=tokens,
        per_gpu_batch_size=batch,
        seed=seed,
        progress=False,
        optimizer=OptimizerConfig(**optim),
        **train,
    )


def _run(
    model: Any, train: Any, held_out: Any, key: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    import torch
    from tuned_lens.nn import TunedLens
    from tuned_lens.training.eval_loop import EvalConfig, evaluate_lenses
    from tuned_lens.training.train_loop import train_lens

    torch.manual_seed(key["seed"])
    lens = TunedLens.from_model(model)
    config = _config(
        key["recipe"], key["steps"], key["seed"], key["lr_scale"], args.tokens_per_step, args.batch
    )
    start = time.perf_counter()
    train_lens(model, lens, train, config)
    train_s = time.perf_counter() - start
    cfg = EvalConfig(tokens=args.eval_tokens, per_gpu_batch_size=args.batch, progress=False)
    kl = evaluate_lenses(model, {"tuned": lens}, held_out, cfg).aggregate["tuned"]["kl"]
    layers = sorted(kl, key=lambda name: int(name.split("_")[-1]))
    bpb = [kl[name] * held_out.nats_to_bpb for name in layers]
    return {**key, "kl_bpb": bpb, "train_s": round(train_s, 2)}


def _summary(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, Any, int], list[list[float]]] = {}
    for row in rows:
        groups.setdefault((row["recipe"], row["lr_scale"], row["steps"]), []).append(row["kl_bpb"])
    most = max((steps for recipe, _, steps in groups if recipe == "original"), default=FULL_STEPS)
    base = groups.get(("original", None, most))
    base_mean = [statistics.mean(col) for col in zip(*base)] if base else None
    lines = [
        "| recipe | lr_scale | steps | seeds | KL bits/byte per layer: mean ± spread (max−min) "
        f"| ratio to original at {most} steps |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (recipe, lr, steps), runs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        cols = list(zip(*runs))
        means = [statistics.mean(c) for c in cols]
        cells = " / ".join(f"{m:.3f}±{max(c) - min(c):.3f}" for m, c in zip(means, cols))
        ratio = " / ".join(f"{m / b:.2f}" for m, b in zip(means, base_mean)) if base_mean else "—"
        lines.append(f"| {recipe} | {lr} | {steps} | {len(runs)} | {cells} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipes", default="original,fast")
    parser.add_argument("--steps", default="5,10,20,40")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr-scales", default="", help="comma list; empty = each recipe's own")
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    parser.add_argument("--model", choices=("glassllm", "smollm2"), default="glassllm")
    parser.add_argument("--tokens-per-step", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8, help="chunks per micro-batch")
    parser.add_argument("--eval-tokens", type=int, default=None, help="default: all held out")
    args = parser.parse_args()
    done = (
        [json.loads(line) for line in args.out.read_text().splitlines()]
        if args.out.exists()
        else []
    )
    if not args.summary:
        model, train, held_out = _split(args.model)
        lrs: list[float | None] = [float(x) for x in args.lr_scales.split(",") if x] or [None]
        for steps in (int(s) for s in args.steps.split(",")):
            for recipe in args.recipes.split(","):
                for lr in lrs:
                    for seed in range(42, 42 + args.seeds):
                        key = {"recipe": recipe, "lr_scale": lr, "steps": steps, "seed": seed}
                        if any(all(row.get(k) == v for k, v in key.items()) for row in done):
                            continue
                        row = _run(model, train, held_out, key, args)
                        print(json.dumps(row), flush=True)
                        done.append(row)
                        with args.out.open("a") as file:
                            file.write(json.dumps(row) + "\n")
    print(_summary(done))


if __name__ == "__main__":
    main()
