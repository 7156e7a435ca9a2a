"""Lens-training throughput: tokens per second of ``train_lens``, fused vs unfused loss, beside
the matmul floor measured in the same run, and peak memory per step (not part of the tests).

CPU: glassllm (4 layers, d 128, vocab 1024) and SmolLM2-135M (30 layers, d 576, vocab 49152)
in float32 at small step budgets. CUDA (when a GPU is present): the same models with the frozen
model in bfloat16 (autocast for the lens, float32 master weights), plus peak GPU memory.

Each case runs one untimed warm-up step, then ``--steps`` timed optimiser steps on
tinyshakespeare, once with the materialised loss (``unfused``) and once with the fused, chunked
unembedding + loss (``fused``, :mod:`tuned_lens.training.fused_loss`); the figure is training
tokens per second of wall time (model forward, per-layer lens forward and backward, optimiser
step).

**Matmul floor** (measured before and after each case's timed steps; the faster counts, as
interference on a shared machine only slows it down). FLOPs per training token = the model
forward (2 × in × out of every
``nn.Linear``, the tied head included, plus 4 × T × d per attention layer for scores and
values, causal: halved) + for each lens layer the unembedding forward and its input-gradient
backward (2 × 2 × d × V) and the translator forward and weight gradient (2 × 2 × d²). The same
run times torch's sgemm at the unembedding's shapes, ``(N × d)·(d × V)`` and
``(N × V)·(V × d)`` with ``N`` the tokens of one micro-batch, and at ``2048³`` (``8192³`` on
CUDA), best of 5 each; the floor is the faster rate divided by the FLOPs per token (so a loss
that stacks several layers' rows into bigger matmuls is still held to the machine's best).
``ratio`` = tokens/s / floor.

**Peak memory.** One fresh process per case and loss (so that freed memory of earlier cases
cannot hide new allocations), with glibc's mmap threshold fixed at 128 KiB (every tensor of that
size its own mapping, unmapped on free, so the resident set follows live tensors instead of heap
fragmentation; the CLI's allocator tuning is not applied there): load, make the lens, one
warm-up step (the lens's gradients and optimiser state now exist), collect garbage, give free
heap pages back to the system (``malloc_trim``), read VmRSS, reset the kernel's high-water mark
(``echo 5 > /proc/self/clear_refs``), one more step of the same lens, read VmHWM. Reported:
VmHWM − VmRSS, the memory one step makes resident (the model's own ``(N, V)`` logits included; tracemalloc does not see
torch's allocations). CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps.
``--vocab-sweep`` measures the loss alone (``layer_losses`` over 2 layers, random inputs, the
model logits allocated before the measurement) at several V the same way, to show that the fused
peak does not grow with V beyond one chunk.

Usage::

    .venv/bin/python benches/bench_train.py                # CPU cases (+ CUDA when available)
    .venv/bin/python benches/bench_train.py --models glassllm --steps 2 --json out.json
    .venv/bin/python benches/bench_train.py --models none --vocab-sweep 8192,65536,262144
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import re
import subprocess
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
    fused: bool
    tokens_per_second: float
    seconds_per_step: float
    floor_tokens_per_second: float
    gflop_per_token: float
    sgemm_gflops: float
    peak_mib: float | None
    threads: int

    @property
    def ratio(self) -> float:
        return self.tokens_per_second / self.floor_tokens_per_second


KEEP_MALLOC = False
CHUNK_SIZE: int | None = None

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


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _fixed_mmap_threshold() -> None:
    """Serve every block of 128 KiB or more by its own mmap, returned on free (no dynamic
    threshold), so that the resident set follows live tensors rather than heap fragmentation."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def _with_floor(m: Measurement, floor: tuple[float, float]) -> Measurement:
    gflops, flop = floor
    m.sgemm_gflops, m.gflop_per_token = gflops, flop / 1e9
    m.floor_tokens_per_second = gflops * 1e9 / flop
    return m


def _rss_checkpoint() -> int:
    """Collect garbage, return free heap to the system, reset VmHWM; returns VmRSS in KiB."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    rss = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    return rss


class _Trainer:
    """One model and its data, ready to train fresh lenses for ``n`` steps, fused or not."""

    def __init__(self, case: Case):
        from tuned_lens.assets import tinyshakespeare_text
        from tuned_lens.data import pack_documents
        from tuned_lens.training.ingredients import DistContext, tune_cpu_allocator

        if case.device == "cpu" and not KEEP_MALLOC:
            tune_cpu_allocator()  # what the CLI does on the CPU
        self.case = case
        self.model, tokenizer = _load(case.model, getattr(torch, case.dtype), case.device)
        text = tinyshakespeare_text()
        self.chunks = pack_documents([text], tokenizer, max_seq_len=case.seq_len)
        self.tokens_per_step = case.seq_len * case.batch * case.micro_batches
        self.ctx = DistContext(device=torch.device(case.device))

    def new_lens(self):
        from tuned_lens.nn import TunedLens

        return TunedLens.from_model(self.model)

    def steps(self, n: int, fused: bool, lens=None):
        """Train ``lens`` (default: a fresh one) for ``n`` steps."""
        from tuned_lens.training.train_loop import TrainConfig, train_lens

        config = TrainConfig(
            num_steps=n,
            tokens_per_step=self.tokens_per_step,
            per_gpu_batch_size=self.case.batch,
            progress=False,
            fused_loss=fused,
            loss_chunk_size=CHUNK_SIZE,
        )
        lens = self.new_lens() if lens is None else lens
        return train_lens(self.model, lens, self.chunks, config, ctx=self.ctx)


def _flop_per_token(model: torch.nn.Module, seq_len: int) -> float:
    """Training FLOPs per token: model forward + per lens layer unembedding fwd/bwd, translator."""
    from tuned_lens.nn.unembed import Unembed

    linear = sum(m.in_features * m.out_features for m in model.modules() if _is_linear(m))
    unembed = Unembed(model)
    d, vocab = unembed.unembedding.in_features, unembed.vocab_size
    d_model = unembed.d_model
    layers = _num_layers(model)
    attention = layers * 4 * seq_len * d_model / 2
    lens = layers * (4 * d * vocab + 4 * d_model * d_model)
    return 2 * linear + attention + lens


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def _num_layers(model: torch.nn.Module) -> int:
    from tuned_lens.architectures import resolve_architecture

    return len(resolve_architecture(model).layers)


def _best_gflops(a: torch.Tensor, b: torch.Tensor, device: str, repeats: int = 5) -> float:
    """Best-of-``repeats`` GFLOP/s of ``a @ b`` (one untimed warm-up)."""
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / min(times[1:]) / 1e9


def _sgemm_gflops(n: int, d: int, vocab: int, device: str, dtype: torch.dtype) -> dict:
    """torch's matmul throughput now, GFLOP/s, at the shapes that bound a lens step.

    ``lens``: the unembedding's two matmuls for one micro-batch, ``(n×d)·(d×V)`` then
    ``(n×V)·(V×d)`` (what a per-layer loss runs). ``square``: ``2048³`` (``8192³`` on CUDA), a shape
    sgemm is at its best at. The floor uses the best of the two, so that a loss that batches its matmuls better than
    one micro-batch (the fused loss stacks layers) is still measured against the machine.
    """
    gen = torch.Generator(device=device).manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=device, dtype=dtype, generator=gen)

    z, w, g = rand(n, d), rand(vocab, d), rand(n, vocab)
    forward, backward = _best_gflops(z, w.T, device), _best_gflops(g, w, device)
    lens = 2 / (1 / forward + 1 / backward)  # equal FLOPs: the harmonic mean
    del z, w, g
    side = 2048 if device == "cpu" else 8192
    square = _best_gflops(rand(side, side), rand(side, side), device)
    return {"lens": lens, "square": square, "best": max(lens, square)}


def _floor(trainer: _Trainer) -> tuple[float, float]:
    """``(sgemm GFLOP/s, training FLOPs per token)`` of the case, measured now."""
    from tuned_lens.nn.unembed import Unembed

    case = trainer.case
    unembed = Unembed(trainer.model)
    # The lens's matmuls run in float32 on the CPU and under bfloat16 autocast on CUDA.
    mm_dtype = torch.float32 if case.device == "cpu" else torch.bfloat16
    n = case.seq_len * case.batch
    rates = _sgemm_gflops(
        n, unembed.unembedding.in_features, unembed.vocab_size, case.device, mm_dtype
    )
    print(
        f"  sgemm now: lens shapes {rates['lens']:.0f}, 2048³ {rates['square']:.0f} GFLOP/s",
        flush=True,
    )
    return rates["best"], _flop_per_token(trainer.model, case.seq_len)


def run_case(
    trainer: _Trainer, fused: bool, floor: tuple[float, float], peak_mib: float | None
) -> Measurement:
    case = trainer.case
    trainer.steps(1, fused)  # warm-up: allocator, kernels, caches
    if case.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    trainer.steps(case.steps, fused)
    if case.device == "cuda":
        torch.cuda.synchronize()
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    elapsed = time.perf_counter() - began
    gflops, flop = floor
    return Measurement(
        case=case,
        fused=fused,
        tokens_per_second=case.steps * trainer.tokens_per_step / elapsed,
        seconds_per_step=elapsed / case.steps,
        floor_tokens_per_second=gflops * 1e9 / flop,
        gflop_per_token=flop / 1e9,
        sgemm_gflops=gflops,
        peak_mib=peak_mib,
        threads=torch.get_num_threads(),
    )


def _child_step_peak(case: Case, fused: bool) -> dict:
    """(In a fresh process.) Resident memory one training step adds, after a warm-up step of
    the same lens (so the lens, its gradients and the optimiser's state exist already)."""
    trainer = _Trainer(case)
    lens = trainer.new_lens()
    trainer.steps(1, fused, lens)
    rss = _rss_checkpoint()
    trainer.steps(1, fused, lens)
    return {"peak_mib": (_status_kib("VmHWM") - rss) / 1024}


def _child_loss_peak(vocab: int, fused: bool, tokens: int, d: int) -> dict:
    """(In a fresh process.) Resident memory of ``layer_losses`` over 2 layers at vocabulary V."""
    from tuned_lens.training.fused_loss import FusedHead
    from tuned_lens.training.lens_loss import layer_losses

    gen = torch.Generator().manual_seed(0)
    head = FusedHead(torch.randn(vocab, d, generator=gen) / d**0.5, torch.zeros(vocab))
    model_logits = torch.randn(1, tokens, vocab, generator=gen)
    ids = torch.zeros(1, tokens, dtype=torch.long)
    states = torch.randn(2, 1, tokens, d, generator=gen, requires_grad=True)

    def run() -> None:
        states.grad = None
        values = layer_losses(
            model_logits,
            ids,
            lambda layer: states[layer] @ head.weight.T + head.bias,
            2,
            loss="KL",
            token_shift=0,
            scale=1.0,
            head=head,
            lens_state_fn=lambda layer: states[layer],
            fused=fused,
            **({} if CHUNK_SIZE is None else {"chunk_size": CHUNK_SIZE}),
        )
        for _ in values:
            pass

    run()
    rss = _rss_checkpoint()
    run()
    return {"peak_mib": (_status_kib("VmHWM") - rss) / 1024}


def _in_child(payload: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(payload)]
    if CHUNK_SIZE is not None:
        cmd += ["--chunk-size", str(CHUNK_SIZE)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _table(results: list[Measurement]) -> str:
    head = (
        "| model | device | dtype | seq × batch × micro-batches | loss | tokens/s | s/step "
        "| GFLOP/token | sgemm GFLOP/s | floor tokens/s | ratio | peak MiB/step |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in results:
        c = r.case
        peak = "—" if r.peak_mib is None else f"{r.peak_mib:,.0f}"
        lines.append(
            f"| {c.model} | {c.device} | {c.dtype} | {c.seq_len} × {c.batch} × {c.micro_batches} "
            f"| {'fused' if r.fused else 'unfused'} | {r.tokens_per_second:,.1f} "
            f"| {r.seconds_per_step:.2f} | {r.gflop_per_token:.3f} | {r.sgemm_gflops:.0f} "
            f"| {r.floor_tokens_per_second:,.1f} | {r.ratio:.0%} | {peak} |"
        )
    return "\n".join(lines)


def _vocab_sweep(vocabs: list[int], tokens: int, d: int) -> tuple[str, list[dict]]:
    rows, lines = (
        [],
        [
            f"loss alone (layer_losses, KL, 2 layers, N={tokens}, d={d}): peak MiB beyond its inputs",
            "| V | (N, V) float32 MiB | unfused | fused |",
            "|---|---|---|---|",
        ],
    )
    for vocab in vocabs:
        peaks = {}
        for fused in (False, True):
            spec = {"kind": "loss", "vocab": vocab, "fused": fused, "tokens": tokens, "d": d}
            peaks[fused] = _in_child(spec)["peak_mib"]
        rows.append({"vocab": vocab, "unfused_mib": peaks[False], "fused_mib": peaks[True]})
        lines.append(
            f"| {vocab:,} | {tokens * vocab * 4 / 2**20:,.1f} | {peaks[False]:,.1f} "
            f"| {peaks[True]:,.1f} |"
        )
    return "\n".join(lines), rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default="glassllm,smollm2", help="comma-separated subset of glassllm,smollm2"
    )
    parser.add_argument("--devices", default="cpu,cuda", help="comma-separated: cpu,cuda")
    parser.add_argument("--steps", type=int, default=None, help="override timed steps per case")
    parser.add_argument("--losses", default="unfused,fused", help="comma-separated: unfused,fused")
    parser.add_argument("--chunk-size", type=int, default=None, help="fused loss chunk rows")
    parser.add_argument(
        "--vocab-sweep", default="", help="comma-separated V for the loss-alone memory sweep"
    )
    parser.add_argument("--sweep-tokens", type=int, default=512, help="N of the sweep")
    parser.add_argument("--no-peak-memory", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument("--json", type=Path, default=None, help="also write results as JSON")
    parser.add_argument(
        "--keep-malloc",
        action="store_true",
        help="leave glibc's allocator thresholds alone (A/B of the CLI's tuning)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    global KEEP_MALLOC, CHUNK_SIZE
    KEEP_MALLOC, CHUNK_SIZE = args.keep_malloc, args.chunk_size
    if args.child is not None:
        _fixed_mmap_threshold()
        KEEP_MALLOC = True  # the child keeps the fixed threshold (no CLI tuning)
        spec = json.loads(args.child)
        if spec["kind"] == "loss":
            out = _child_loss_peak(spec["vocab"], spec["fused"], spec["tokens"], spec["d"])
        else:
            out = _child_step_peak(Case(**spec["case"]), spec["fused"])
        print(json.dumps(out))
        return 0
    models = set(args.models.split(","))
    devices = set(args.devices.split(","))
    variants = [v == "fused" for v in args.losses.split(",")]
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
        trainer = _Trainer(case)
        floor = _floor(trainer)  # before and after the case's timed steps; the faster counts
        timed = []
        for fused in variants:
            print(
                f"running {case.model} on {case.device} ({case.dtype}, fused={fused}) …",
                file=sys.stderr,
            )
            peak = None
            if case.device == "cpu" and not args.no_peak_memory:
                peak = _in_child({"kind": "step", "case": asdict(case), "fused": fused})["peak_mib"]
            timed.append(run_case(trainer, fused, floor, peak))
        floor = max(floor, _floor(trainer))
        results += [_with_floor(m, floor) for m in timed]
        del trainer
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads"
    )
    print(_table(results))
    sweep: list[dict] = []
    if args.vocab_sweep:
        vocabs = [int(v) for v in args.vocab_sweep.split(",")]
        text, sweep = _vocab_sweep(vocabs, args.sweep_tokens, 576)
        print()
        print(text)
    if args.json is not None:
        payload = {
            "results": [{**asdict(r), "ratio": r.ratio} for r in results],
            "vocab_sweep": sweep,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
