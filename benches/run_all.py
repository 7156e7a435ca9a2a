"""The statistics benchmark suite: ``make bench`` (= ``.venv/bin/python benches/run_all.py``).

For every statistic and size it times ``tuned_lens.lens_stats`` against the original library's
numpy formulas and against torch on the CPU, relates the throughput to this machine's memory
read bandwidth measured in the same run, measures the call's peak extra memory in a fresh
process, and prints a markdown table with PASS/MISS against the issue's targets.
See benches/README.md for the columns and the method.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _ceiling import in_cache_gbps, small_inputs  # noqa: E402
from _inputs import BenchInputs, make_float32, to_bfloat16  # noqa: E402
from _membw import measure_read_bandwidth, plain_copy_seconds, plain_read_seconds  # noqa: E402
from bench_stats import CASES, CASES_BY_NAME, TARGETS, Case, K, Workspace  # noqa: E402
from tuned_lens import lens_stats as ls  # noqa: E402

Shape = tuple[int, int, int]
SIZES: dict[str, list[tuple[Shape, str]]] = {
    "small": [((13, 128, 50304), "float32")],
    "default": [
        ((13, 128, 50304), "float32"),
        ((13, 512, 50304), "float32"),
        ((13, 512, 50304), "bfloat16"),
    ],
    "large": [((25, 256, 151936), "float32")],
    "all": [
        ((13, 128, 50304), "float32"),
        ((13, 512, 50304), "float32"),
        ((13, 512, 50304), "bfloat16"),
        ((25, 256, 151936), "float32"),
    ],
}


@dataclass
class Timing:
    """Wall-clock seconds of each run (after any warm-up)."""

    runs: list[float] = field(default_factory=list)
    capped: bool = False  # fewer runs than --repeat (a slow baseline)
    skipped: str = ""  # why no number, if none

    @property
    def median(self) -> float | None:
        return statistics.median(self.runs) if self.runs else None


@dataclass
class Row:
    name: str
    shape: Shape
    dtype: str
    input_bytes: int
    ours: Timing
    original: Timing
    torch_cpu: Timing
    original_peak_bytes: int | None = None
    peak_extra_bytes: int | None = None
    peak_detail: dict[str, Any] | None = None
    f32_median: float | None = None  # the float32 row of the same shape, for bf16 rows
    paired_pct: float | None = None  # median over runs of (statistic / plain read just before)
    paired_basis: str = "read"  # what paired_pct is a share of: "read" or "copy"
    ceiling_gbps: float | None = None  # the same call on inputs in cache (_ceiling.py)
    targets: list[tuple[str, str]] = field(default_factory=list)  # (label, PASS/MISS/n/a)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def time_runs(fn: Callable[[], Any], runs: int, *, warmup: bool) -> list[float]:
    if warmup:
        fn()
    times = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    return times


def against_copy(case: Case, work: Workspace) -> bool:
    """Whether the case's paired share is taken against a plain copy: a call that writes a
    float32 array as large as its float32 input (a bfloat16 input reads half of what it
    writes, and is paired with a read as every other case)."""
    return case.writes_output and work.t_lp.dtype == torch.float32


def paired_share(case: Case, work: Workspace, args: argparse.Namespace) -> float:
    """Median over ``--repeat`` pairs of the statistic's GB/s over the GB/s of a plain read of
    its input arrays timed right before it (``_membw.plain_read_seconds``), in percent; where
    ``against_copy``, of a plain copy of its input into torch's output buffer instead
    (``_membw.plain_copy_seconds``: the same bytes read and written)."""
    inputs = work.inputs
    arrays = [inputs.lp] if case.n_arrays < 2 else [inputs.lp, inputs.lq]
    read_bytes = len(arrays) * inputs.array_bytes
    shares = []
    for _ in range(args.repeat):
        gc.collect()
        if against_copy(case, work):
            plain = plain_copy_seconds(work.t_lp, work.t_out, threads=args.threads)
        else:
            plain = plain_read_seconds(arrays, threads=args.threads)
        start = time.perf_counter()
        result = case.ours(work)
        took = time.perf_counter() - start
        del result
        shares.append(100 * (case.input_bytes(inputs) / took) / (read_bytes / plain))
    return statistics.median(shares)


def time_original(case: Case, work: Workspace, runs: int) -> tuple[list[float], int]:
    """Time the original's numpy; its first run also records tracemalloc's peak (numpy's
    allocations; a handful of huge ones, so tracing costs nothing measurable)."""
    assert case.original is not None
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    result = case.original(work)
    times = [time.perf_counter() - start]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del result
    times += time_runs(lambda: case.original(work), runs - 1, warmup=False)
    return times, int(peak)


def peak_memory(case: Case, shape: Shape, dtype: str, threads: int) -> dict[str, Any] | None:
    cmd = [
        sys.executable,
        str(HERE / "_peak_memory.py"),
        case.name,
        ",".join(map(str, shape)),
        dtype,
        str(threads),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        log(f"  peak memory of {case.name} failed: {done.stderr.strip()[-500:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(
    case: Case,
    work: Workspace,
    args: argparse.Namespace,
    f32_medians: dict[tuple[str, Shape], float],
) -> Row:
    inputs = work.inputs
    shape, dtype = inputs.shape, inputs.dtype
    n_bytes = case.input_bytes(inputs)
    row = Row(case.name, shape, dtype, n_bytes, Timing(), Timing(), Timing())

    row.ours.runs = time_runs(lambda: case.ours(work), args.repeat, warmup=True)
    log(f"  {case.name:<20} ours  {1e3 * row.ours.median:9.1f} ms")
    if not case.reads_one_value_per_row:
        row.paired_pct = paired_share(case, work, args)
        row.paired_basis = "copy" if against_copy(case, work) else "read"
        log(
            f"  {case.name:<20} paired {row.paired_pct:7.0f}% of the {row.paired_basis} just before"
        )
        small = Workspace(small_inputs(inputs, case.ceiling_rows))
        row.ceiling_gbps = in_cache_gbps(
            lambda: case.ours(small), case.input_bytes(small.inputs), threads=args.threads
        )
        log(f"  {case.name:<20} in cache {row.ceiling_gbps:5.1f} GB/s")

    # The baselines allocate full-size temporaries: skip one that would not fit in memory.
    need = case.original_extra * inputs.array_bytes * max(1, case.n_arrays)
    fits = need < 0.8 * mem_available_bytes()
    baseline_runs = min(args.repeat, args.baseline_repeat)

    if not fits:
        row.torch_cpu.skipped = "memory"
    else:
        try:
            row.torch_cpu.runs = time_runs(lambda: case.torch_cpu(work), baseline_runs, warmup=True)
        except (RuntimeError, TypeError, MemoryError) as err:  # a baseline must not sink the run
            row.torch_cpu.skipped = "error"
            log(f"  {case.name:<20} torch failed: {err}")
        else:
            row.torch_cpu.capped = baseline_runs < args.repeat
            log(f"  {case.name:<20} torch {1e3 * row.torch_cpu.median:9.1f} ms")

    if dtype != "float32" or case.original is None:
        row.original.skipped = "n/a"
    elif case.slow_original and args.skip_slow_baselines:
        row.original.skipped = "skipped"
    elif not fits:
        row.original.skipped = "memory"
    else:
        runs = 1 if case.slow_original else baseline_runs
        try:
            row.original.runs, row.original_peak_bytes = time_original(case, work, runs)
        except MemoryError as err:
            row.original.skipped = "error"
            log(f"  {case.name:<20} numpy failed: {err!r}")
        else:
            row.original.capped = runs < args.repeat
            log(f"  {case.name:<20} numpy {1e3 * row.original.median:9.1f} ms")

    # The memory probe rebuilds the inputs in a child process while this one still holds its
    # own copies: at 25x256x151936 (3.9 GB per array) the two together exceed 24 GB and the
    # kernel's OOM killer ends the whole suite. Probe only when the child's copies fit.
    child_bytes = (max(1, case.n_arrays) + 1) * inputs.array_bytes
    if args.peak_memory and child_bytes > 0.8 * mem_available_bytes():
        log(f"  {case.name:<20} peak memory skipped: the probe's copy of the inputs would not fit")
    elif args.peak_memory:
        detail = peak_memory(case, shape, dtype, args.threads)
        if detail is not None:
            row.peak_detail = detail
            row.peak_extra_bytes = max(detail["rss_extra"], detail["traced_peak"])
    if dtype == "bfloat16":
        row.f32_median = f32_medians.get((case.name, shape))
    else:
        f32_medians[(case.name, shape)] = row.ours.median
    return row


# ------------------------------------------------------------------------------------------
# Targets and the table


def _ratio(baseline: Timing, ours: Timing) -> float | None:
    if baseline.median is None or ours.median is None:
        return None
    return baseline.median / ours.median


def evaluate_targets(row: Row, case: Case, bandwidth_gbps: float) -> None:
    def verdict(value: float | None, threshold: float) -> str:
        if value is None:
            return "n/a"
        return "PASS" if value >= threshold else "MISS"

    gbps = row.input_bytes / row.ours.median / 1e9
    # The bandwidth targets are judged on the paired share where there is one: the ceiling of
    # the same moment, not the best of two moments minutes apart.
    pct = row.paired_pct if row.paired_pct is not None else 100 * gbps / bandwidth_gbps
    vs_numpy, vs_torch = _ratio(row.original, row.ours), _ratio(row.torch_cpu, row.ours)
    checks: list[tuple[str, str]] = []
    if row.dtype == "bfloat16":
        speedup = row.f32_median / row.ours.median if row.f32_median else None
        checks.append(("bf16 ≥1.6× f32", verdict(speedup, 1.6)))
    else:
        for target in case.targets:
            if target == "bw70":
                # Issue 17's goal for CPUs without AVX-512: 70% at one exp/log per element, 50%
                # at two or more (JS: three).
                floor = 50 if ls.simd_level() == "avx2" and case.transcendentals >= 2 else 70
                checks.append((f"BW ≥{floor}%", verdict(pct, floor)))
            elif target == "bw40":
                checks.append(("BW ≥40%", verdict(pct, 40)))
            elif target == "explog":
                checks += [("≥8× np", verdict(vs_numpy, 8)), ("≥3× torch", verdict(vs_torch, 3))]
            elif target == "select":
                checks += [
                    ("≥100× np", verdict(vs_numpy, 100)),
                    ("≥3× torch", verdict(vs_torch, 3)),
                ]
            elif target == "no_slower":
                checks += [("≥1× np", verdict(vs_numpy, 1)), ("≥1× torch", verdict(vs_torch, 1))]
    if row.peak_extra_bytes is None:
        checks.append(("mem ≤1%", "n/a"))
    else:
        checks.append(
            ("mem ≤1%", "PASS" if row.peak_extra_bytes <= 0.01 * row.input_bytes else "MISS")
        )
    row.targets = checks


def _fmt_ratio(baseline: Timing, ours: Timing) -> str:
    if baseline.skipped:
        return baseline.skipped
    value = _ratio(baseline, ours)
    if value is None:
        return "—"
    text = f"{value:.1f}×" if value < 100 else f"{value:.0f}×"
    return text + ("†" if baseline.capped else "")


def _fmt_mb(n: int | None) -> str:
    return "—" if n is None else f"{n / 1e6:.1f} MB"


def format_table(rows: list[Row], bandwidth_gbps: float) -> str:
    header = (
        "| statistic | shape | dtype | median ms | GB/s | % BW | % BW paired | in cache (% BW) "
        "| × numpy (orig) | × torch | peak extra (% input) | targets |"
    )
    lines = [header, "|" + "---|" * 12]
    for row in rows:
        name = f"{row.name}({K})" if row.name.startswith("top_k") else row.name
        median = row.ours.median
        case = CASES_BY_NAME[row.name]
        paired_text = "—" if row.paired_pct is None else f"{row.paired_pct:.0f}%"
        if row.paired_basis == "copy" and row.paired_pct is not None:
            paired_text += " of a copy"
        ceiling = row.ceiling_gbps
        ceiling_text = (
            "—" if ceiling is None else f"{ceiling:.1f} ({100 * ceiling / bandwidth_gbps:.0f}%)"
        )
        if case.reads_one_value_per_row:
            gbps_text = pct_text = "— (1 value/row)"
        else:
            gbps = row.input_bytes / median / 1e9
            gbps_text, pct_text = f"{gbps:.1f}", f"{100 * gbps / bandwidth_gbps:.0f}%"
        if row.peak_extra_bytes is None:
            peak = "—"
        else:
            peak = f"{_fmt_mb(row.peak_extra_bytes)} ({100 * row.peak_extra_bytes / row.input_bytes:.2f}%)"
        bf16 = ""
        if row.dtype == "bfloat16" and row.f32_median:
            bf16 = f" ({row.f32_median / median:.2f}× f32)"
        targets = ", ".join(f"{label} {verdict}" for label, verdict in row.targets)
        lines.append(
            f"| {name} | {'×'.join(map(str, row.shape))} | {row.dtype}{bf16} | {1e3 * median:.1f} "
            f"| {gbps_text} | {pct_text} | {paired_text} | {ceiling_text} "
            f"| {_fmt_ratio(row.original, row.ours)} "
            f"| {_fmt_ratio(row.torch_cpu, row.ours)} | {peak} | {targets} |"
        )
    return "\n".join(lines)


def machine_summary() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
    }


# ------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", choices=sorted(SIZES), default="default")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of ours (median), ≥ 1")
    parser.add_argument(
        "--baseline-repeat",
        type=int,
        default=2,
        help="runs of each baseline (capped by --repeat; slow numpy baselines run once)",
    )
    parser.add_argument("--only", default="", help="comma-separated statistics (default: all)")
    parser.add_argument("--threads", type=int, default=2, help="lens_stats and torch threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument(
        "--skip-slow-baselines",
        action="store_true",
        help="no numpy rank/top-k (tens of seconds each)",
    )
    parser.add_argument(
        "--no-peak-memory",
        dest="peak_memory",
        action="store_false",
        help="skip the per-case memory subprocesses",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.baseline_repeat < 1 or args.threads < 1:
        parser.error("--repeat, --baseline-repeat and --threads must be ≥ 1")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CASES_BY_NAME]
    if unknown:
        parser.error(f"unknown statistics {unknown}; known: {', '.join(CASES_BY_NAME)}")
    args.cases = [CASES_BY_NAME[n] for n in names] if names else list(CASES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    np.seterr(all="ignore")
    ls.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    started = time.time()
    load_before = os.getloadavg()
    log(f"measuring memory read bandwidth ({args.threads} threads) ...")
    bw_start = measure_read_bandwidth(threads=args.threads)
    log(f"  {bw_start['gbps']:.1f} GB/s ({bw_start['method']})")

    rows: list[Row] = []
    f32_medians: dict[tuple[str, Shape], float] = {}
    f32_inputs: BenchInputs | None = None
    for shape, dtype in SIZES[args.sizes]:
        if dtype == "float32":
            f32_inputs = None
            gc.collect()
            log(f"building float32 inputs {shape} ...")
            inputs = make_float32(shape)
            f32_inputs = inputs
        else:
            if f32_inputs is None or f32_inputs.shape != shape:
                log(f"building float32 inputs {shape} for the bfloat16 copy ...")
                f32_inputs = make_float32(shape)
            inputs = to_bfloat16(f32_inputs)
            f32_inputs = None
            gc.collect()
            # The bf16 target compares with float32 of the same shape: time it if not done yet.
            missing = [c for c in args.cases if (c.name, shape) not in f32_medians]
            if missing:
                log("timing float32 of the same shape for the bf16 comparison ...")
                f32_work = Workspace(make_float32(shape))
                for case in missing:
                    runs = time_runs(lambda c=case, w=f32_work: c.ours(w), args.repeat, warmup=True)
                    f32_medians[(case.name, shape)] = statistics.median(runs)
                del f32_work
                gc.collect()
        log(f"{'×'.join(map(str, shape))} {dtype}: {inputs.array_bytes / 1e9:.2f} GB per array")
        work = Workspace(inputs)
        for case in args.cases:
            rows.append(run_case(case, work, args, f32_medians))
            work.release_buffers()
            gc.collect()
        del work, inputs
        gc.collect()

    log("measuring memory read bandwidth again ...")
    bw_end = measure_read_bandwidth(threads=args.threads)
    bandwidth = max(bw_start["gbps"], bw_end["gbps"])
    for row in rows:
        evaluate_targets(row, CASES_BY_NAME[row.name], bandwidth)

    print(f"## lens_stats benchmarks ({args.threads} threads, median of {args.repeat} runs)\n")
    summary = machine_summary()
    print(
        f"{summary['cpu']}, {summary['cpus']} CPUs, lens_stats copy {ls.simd_level()}; "
        f"memory read bandwidth {bandwidth:.1f} GB/s "
        f"(best of start {bw_start['gbps']:.1f} / end {bw_end['gbps']:.1f} GB/s, "
        f"{bw_start['method']}); load average {load_before[0]:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end.\n"
    )
    print(format_table(rows, bandwidth))
    print(
        "\n† capped baseline (fewer runs than --repeat). Ratios are baseline median / ours median "
        "(> 1 = ours faster). Targets:"
    )
    for name, text in TARGETS.items():
        print(f"- {name}: {text}")
    print(f"\n({time.time() - started:.0f} s in all)")

    if args.json is not None:
        payload = {
            "machine": summary,
            "args": {k: v for k, v in vars(args).items() if k != "cases"}
            | {"json": str(args.json)},
            "bandwidth": {"start": bw_start, "end": bw_end, "used_gbps": bandwidth},
            "load_average": {"start": load_before, "end": os.getloadavg()},
            "rows": [asdict(r) | {"median_s": r.ours.median} for r in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
