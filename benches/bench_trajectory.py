"""Prediction trajectories at scale: the compact path against the full array and the original.

SmolLM2-135M (30 layers, vocab 49,152) with the logit lens, over prompts cut from
tinyshakespeare. Three methods, each in its own process so that peak memory (the resident
high-water mark, VmHWM) belongs to that method alone:

* ``compact``: ``CompactTrajectory.from_lens_and_model`` over all prompts (layer by layer,
  per-cell statistics only), then entropy, cross entropy, rank, forward KL and max
  probability with top-10 labels.
* ``full``: ``PredictionTrajectory.from_lens_and_model`` (the whole ``(N, 31, T, V)`` float32
  array) on a few prompts, then the same statistics (Rust kernels, top-k computed once).
* ``numpy``: the original library's numpy formulas on the same full array (``np.exp`` of the
  whole array, double argsort for the rank, argpartition for the top-10 labels, which the
  original recomputes for every statistic).

At the default size the full array would be 64 × 31 × 256 × 49,152 × 4 B ≈ 100 GB, so the full
and numpy methods run on fewer prompts and are extrapolated linearly in the number of prompts.

Usage:
    python benches/bench_trajectory.py                       # 64 prompts × 256 tokens
    python benches/bench_trajectory.py --prompts 8 --tokens 128 --full-prompts 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

N_ROWS_EXTRA = 1  # the model-output row
TOPK = 10


# ----------------------------------------------------------------------------- measurement
def _status_bytes(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def _prompts(tokenizer: Any, n_prompts: int, n_tokens: int) -> Any:
    import numpy as np
    from tuned_lens.assets import tinyshakespeare_text

    text = tinyshakespeare_text()
    needed = n_prompts * n_tokens
    chars = needed * 6
    while True:
        ids = tokenizer(text[:chars]).input_ids
        if len(ids) >= needed or chars >= len(text):
            break
        chars *= 2
    if len(ids) < needed:
        raise SystemExit(f"tinyshakespeare has only {len(ids)} tokens, {needed} needed")
    return np.asarray(ids[:needed], dtype=np.int64).reshape(n_prompts, n_tokens)


def _next_targets(ids: Any, eos: int) -> Any:
    import numpy as np

    return np.concatenate([ids[:, 1:], np.full((ids.shape[0], 1), eos, dtype=ids.dtype)], 1)


# ----------------------------------------------------------------------------- the original
def _original_top_k_labels(log_probs: Any, tokenizer: Any, k: int) -> Any:
    """The original's label builder: argpartition + sort of k, values from np.exp of all."""
    import numpy as np

    probs = np.exp(log_probs)
    index = np.argpartition(log_probs, -k, axis=-1)[..., -k:]
    top_lp = np.take_along_axis(log_probs, index, axis=-1)
    top_probs = np.take_along_axis(probs, index, axis=-1)
    order = np.argsort(-top_lp, axis=-1)
    index = np.take_along_axis(index, order, axis=-1)
    top_probs = np.take_along_axis(top_probs, order, axis=-1)
    tokens = np.array(tokenizer.convert_ids_to_tokens(index.ravel().tolist())).reshape(index.shape)
    return tokens[..., 0], top_probs


def _original_statistics(log_probs: Any, targets: Any) -> dict[str, Any]:
    import numpy as np

    select = targets[:, None, :, None]
    index = np.broadcast_to(select, log_probs.shape[:-1] + (1,))

    def entropy() -> Any:
        return -np.sum(np.exp(log_probs) * log_probs, axis=-1).mean(0)

    def forward_kl() -> Any:
        model = log_probs[:, -1:, :, :]
        return np.sum(np.exp(model) * (model - log_probs), axis=-1).mean(0)

    def cross_entropy() -> Any:
        return (-np.take_along_axis(log_probs, index, axis=-1)[..., 0]).mean(0)

    def rank() -> Any:
        ranks = np.argsort(np.argsort(-log_probs, axis=-1), axis=-1)
        return (np.take_along_axis(ranks, index, axis=-1)[..., 0] + 1).mean(0)

    return {
        "entropy": entropy,
        "forward_kl": forward_kl,
        "cross_entropy": cross_entropy,
        "rank": rank,
    }


# ----------------------------------------------------------------------------- workers
def worker(method: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from tuned_lens import lens_stats
    from tuned_lens.assets import load_smollm2
    from tuned_lens.nn.lenses import LogitLens
    from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory

    torch.set_num_threads(args.threads)
    lens_stats.set_num_threads(args.threads)
    (model, tokenizer), load_s = _timed(load_smollm2)
    lens = LogitLens.from_model(model)
    n_prompts = args.prompts if method == "compact" else args.full_prompts
    ids = _prompts(tokenizer, n_prompts, args.tokens)
    eos = tokenizer.eos_token_id or 0
    targets = _next_targets(ids, eos)
    rss_model = _status_bytes("VmRSS")
    timings: dict[str, float] = {}
    n_rows = model.config.num_hidden_layers + N_ROWS_EXTRA
    vocab = model.config.vocab_size

    if method == "compact":
        traj, timings["build"] = _timed(
            lambda: CompactTrajectory.from_lens_and_model(
                lens,
                model,
                ids,
                tokenizer=tokenizer,
                targets=targets,
                batch_size=args.batch_size,
                topk=TOPK,
                progress=not args.quiet,
            )
        )
        for name in ("entropy", "cross_entropy", "rank", "forward_kl", "max_probability"):
            _, timings[name] = _timed(lambda name=name: getattr(traj, name)(topk=TOPK))
        _, timings["figure"] = _timed(lambda: traj.entropy(topk=TOPK).figure())
        kept = traj.nbytes
    elif method == "full":
        traj, timings["build"] = _timed(
            lambda: PredictionTrajectory.from_lens_and_model(
                lens, model, ids, tokenizer=tokenizer, targets=targets
            )
        )
        for name in ("entropy", "cross_entropy", "rank", "forward_kl", "max_probability"):
            _, timings[name] = _timed(lambda name=name: getattr(traj, name)(topk=TOPK))
        kept = traj.log_probs.nbytes
    elif method == "numpy":
        traj, timings["build"] = _timed(
            lambda: PredictionTrajectory.from_lens_and_model(lens, model, ids, targets=targets)
        )
        for name, fn in _original_statistics(traj.log_probs, traj.targets).items():
            _, timings[name] = _timed(fn)
        _, timings["top10_labels"] = _timed(
            lambda: _original_top_k_labels(traj.log_probs, tokenizer, TOPK)
        )
        kept = traj.log_probs.nbytes
    else:
        raise SystemExit(f"unknown method {method!r}")

    return {
        "method": method,
        "prompts": int(n_prompts),
        "tokens": int(args.tokens),
        "rows": int(n_rows),
        "vocab": int(vocab),
        "threads": args.threads,
        "model_load_s": load_s,
        "timings_s": timings,
        "rss_after_model_bytes": rss_model,
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "kept_bytes": int(kept),
        "full_array_bytes": int(n_prompts * n_rows * args.tokens * vocab * 4),
    }


# ----------------------------------------------------------------------------- driver
def _run_worker(method: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--prompts",
        str(args.prompts),
        "--tokens",
        str(args.tokens),
        "--full-prompts",
        str(args.full_prompts if method == "full" else args.baseline_prompts),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
    ]
    if args.quiet:
        command.append("--quiet")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        return {"method": method, "error": f"exit status {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    ok = {r["method"]: r for r in results if "error" not in r}
    lines = [
        f"# Prediction trajectories: SmolLM2-135M, logit lens, {args.prompts} prompts × "
        f"{args.tokens} tokens, {args.threads} threads",
        "",
        "| method | prompts | build s | statistics s | peak RSS | RSS after model load | "
        "kept arrays |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method in ("compact", "full", "numpy"):
        r = ok.get(method)
        if r is None:
            continue
        t = dict(r["timings_s"])
        build = t.pop("build")
        if method == "numpy":  # the original recomputes the top-10 labels in every method
            stats = sum(v for k, v in t.items() if k != "top10_labels") + 4 * t["top10_labels"]
        else:
            stats = sum(t.values())
        lines.append(
            f"| {method} | {r['prompts']} | {build:.1f} | {stats:.1f} | "
            f"{_gb(r['peak_rss_bytes'])} | {_gb(r['rss_after_model_bytes'])} | "
            f"{_gb(r['kept_bytes'])} |"
        )
    lines.append("")
    for r in ok.values():
        per = ", ".join(f"{k} {v:.2f}" for k, v in r["timings_s"].items())
        lines.append(f"- {r['method']} ({r['prompts']} prompts) seconds: {per}")
    target = args.prompts
    shape_source = next(iter(ok.values()), {"rows": 31, "vocab": 49152})
    full_bytes = target * shape_source["rows"] * args.tokens * shape_source["vocab"] * 4
    lines += ["", f"Full float32 array at {target} × {args.tokens}: {_gb(full_bytes)}."]
    compact = ok.get("compact")
    if compact:
        share = compact["peak_rss_bytes"] / full_bytes
        lines.append(
            f"Compact path peak RSS {_gb(compact['peak_rss_bytes'])} = {100 * share:.2f}% of it "
            f"(target < 5%: {'met' if share < 0.05 else 'NOT met'}); its arrays "
            f"{_gb(compact['kept_bytes'])}."
        )
    for method in ("full", "numpy"):
        r = ok.get(method)
        if not r:
            continue
        scale = target / r["prompts"]
        per_prompt = (r["peak_rss_bytes"] - r["rss_after_model_bytes"]) / r["prompts"]
        total_time = sum(r["timings_s"].values())
        if method == "numpy":
            total_time += 3 * r["timings_s"]["top10_labels"]
        lines.append(
            f"{method}: extrapolated to {target} prompts ≈ {total_time * scale:.0f} s and "
            f"≈ {_gb(r['rss_after_model_bytes'] + per_prompt * target)} peak RSS "
            f"(measured on {r['prompts']}; linear in prompts)."
        )
    for r in results:
        if "error" in r:
            lines.append(f"{r['method']}: FAILED ({r['error']})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts for the compact path")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per prompt")
    parser.add_argument("--full-prompts", type=int, default=2, help="prompts for the full path")
    parser.add_argument(
        "--baseline-prompts", type=int, default=1, help="prompts for the numpy original"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--methods", default="compact,full,numpy", help="comma-separated subset to run"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.worker:
        print(json.dumps(worker(args.worker, args)))
        return
    results = [_run_worker(m, args) for m in args.methods.split(",") if m]
    text = report(results, args)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results, "report": text}, indent=2))


if __name__ == "__main__":
    main()
