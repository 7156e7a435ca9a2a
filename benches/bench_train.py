"""Lens-training throughput: tokens per second of ``train_lens`` (not part of the tests).

CPU: glassllm (4 layers, d 128, vocab 1024) and SmolLM2-135M (30 layers, d 576, vocab 49152)
in float32 at small step budgets. CUDA (when a GPU is present): the same models with the frozen
model in bfloat16 (autocast for the lens, float32 master weights), plus peak GPU memory.

Each case runs one untimed warm-up step, then ``--steps`` timed optimiser steps on
tinyshakespeare; the figure is training tokens per second of wall time (model forward, per-layer
lens forward and backward, optimiser step).

Usage::

    .venv/bin/python benches/bench_train.py                # CPU cases (+ CUDA when available)
    .venv/bin/python benches/bench_train.py --models glassllm --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))

import torch  # noqa: E402


@dataclass
class Case:
    model: str
    device: str
    dtype: str
    seq_len: int
    batch: int
    micro_batches: int
    steps: int


@dataclass
class Measurement:
    case: Case
    tokens_per_second: float
    seconds_per_step: float
    peak_gpu_mib: float | None
    threads: int


KEEP_MALLOC = False

CPU_CASES = [
    Case("glassllm", "cpu", "float32", seq_len=128, batch=8, micro_batches=2, steps=6),
    Case("smollm2", "cpu", "float32", seq_len=64, batch=2, micro_batches=1, steps=2),
]
CUDA_CASES = [
    Case("glassllm", "cuda", "bfloat16", seq_len=128, batch=64, micro_batches=2, steps=20),
    Case("smollm2", "cuda", "bfloat16", seq_len=2048, batch=4, micro_batches=2, steps=10),
]


def _load(name: str, dtype: torch.dtype, device: str):
    from tuned_lens.assets import load_glassllm, load_smollm2

    loader = load_glassllm if name == "glassllm" else load_smollm2
    model, tokenizer = loader(dtype=dtype, device=device)
    model.requires_grad_(False)
    return model, tokenizer


def run_case(case: Case) -> Measurement:
    from tuned_lens.assets import tinyshakespeare_text
    from tuned_lens.data import chunk_and_tokenize
    from tuned_lens.nn import TunedLens
    from tuned_lens.training.ingredients import DistContext, tune_cpu_allocator
    from tuned_lens.training.train_loop import TrainConfig, train_lens

    if case.device == "cpu" and not KEEP_MALLOC:
        tune_cpu_allocator()  # what the CLI does on the CPU
    dtype = getattr(torch, case.dtype)
    model, tokenizer = _load(case.model, dtype, case.device)
    chunks = chunk_and_tokenize([tinyshakespeare_text()], tokenizer, max_seq_len=case.seq_len)
    tokens_per_step = case.seq_len * case.batch * case.micro_batches
    ctx = DistContext(device=torch.device(case.device))

    def steps(n: int):
        lens = TunedLens.from_model(model)
        config = TrainConfig(
            num_steps=n,
            tokens_per_step=tokens_per_step,
            per_gpu_batch_size=case.batch,
            progress=False,
        )
        return train_lens(model, lens, chunks, config, ctx=ctx)

    steps(1)  # warm-up: allocator, kernels, caches
    if case.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    steps(case.steps)
    if case.device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated() / 2**20 if case.device == "cuda" else None
    return Measurement(
        case=case,
        tokens_per_second=case.steps * tokens_per_step / elapsed,
        seconds_per_step=elapsed / case.steps,
        peak_gpu_mib=peak,
        threads=torch.get_num_threads(),
    )


def _table(results: list[Measurement]) -> str:
    head = (
        "| model | device | dtype | seq × batch × micro-batches | steps | tokens/s | s/step "
        "| peak GPU MiB |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in results:
        c = r.case
        peak = "—" if r.peak_gpu_mib is None else f"{r.peak_gpu_mib:,.0f}"
        lines.append(
            f"| {c.model} | {c.device} | {c.dtype} | {c.seq_len} × {c.batch} × {c.micro_batches} "
            f"| {c.steps} | {r.tokens_per_second:,.0f} | {r.seconds_per_step:.2f} | {peak} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="glassllm,smollm2", help="comma-separated subset of glassllm,smollm2"
    )
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated: cpu,cuda")
    parser.add_argument("--steps", type=int, default=None, help="override timed steps per case")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument(
        "--keep-malloc",
        action="store_true",
        help="leave glibc's allocator thresholds alone (A/B of the CLI's tuning)",
    )
    args = parser.parse_args(argv)
    global KEEP_MALLOC
    KEEP_MALLOC = args.keep_malloc
    models = set(args.models.split(","))
    devices = set(args.devices.split(","))
    cases = [c for c in CPU_CASES if "cpu" in devices]
    if "cuda" in devices:
        if torch.cuda.is_available():
            cases += CUDA_CASES
        else:
            print("no CUDA device: GPU cases skipped", file=sys.stderr)
    results = []
    for case in cases:
        if case.model not in models:
            continue
        if args.steps is not None:
            case.steps = args.steps
        print(f"running {case.model} on {case.device} ({case.dtype}) …", file=sys.stderr)
        results.append(run_case(case))
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )
    print(_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
