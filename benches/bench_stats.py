"""The benchmark cases: one per statistic, with its three implementations and its targets.

Each case knows how to call ``tuned_lens.lens_stats`` ("ours"), the original library's numpy
formulas (``_original_numpy``) and plain torch on the CPU, how many input bytes one call reads,
and which of the issue's targets apply to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import _original_numpy as orig
import numpy as np
import torch
from _inputs import BenchInputs
from tuned_lens import lens_stats as ls

K = 10

# Target names, their thresholds and what they mean (printed under the table).
TARGETS: dict[str, str] = {
    "bw70": "single-pass statistic: ≥ 70% of the measured read bandwidth (the AVX2 copy: ≥ 70% "
    "with at most one exp/log per element, ≥ 50% with two or more, issue 17); log_softmax, "
    "which writes as much as it reads: ≥ 70% of a plain copy timed just before it",
    "bw40": "top-k: ≥ 40% of the measured read bandwidth",
    "explog": "exp/log statistic: ≥ 8× the original numpy and ≥ 3× torch",
    "select": "rank / top-k: ≥ 100× the original numpy and ≥ 3× torch",
    "no_slower": "max probability: no slower than numpy or torch (≥ 1×)",
    "mem1": "peak extra memory ≤ 1% of the input",
    "bf16": "bfloat16 input ≥ 1.6× faster than float32 of the same shape",
}


@dataclass
class Workspace:
    """Per-size state shared by the cases: inputs, their torch views, the log_softmax buffer."""

    inputs: BenchInputs
    t_lp: torch.Tensor = field(init=False)
    t_lq: torch.Tensor = field(init=False)
    t_targets: torch.Tensor = field(init=False)
    _out: np.ndarray | None = None
    _t_out: torch.Tensor | None = None

    def __post_init__(self) -> None:
        inp = self.inputs
        self.t_lp = inp.lp if isinstance(inp.lp, torch.Tensor) else torch.from_numpy(inp.lp)
        self.t_lq = inp.lq if isinstance(inp.lq, torch.Tensor) else torch.from_numpy(inp.lq)
        layers, positions, _ = inp.shape
        self.t_targets = torch.from_numpy(inp.targets).expand(layers, positions)[..., None]

    @property
    def out(self) -> np.ndarray:
        """A float32 (L, T, V) buffer for log_softmax(out=), allocated on first use."""
        if self._out is None:
            self._out = np.empty(self.inputs.shape, dtype=np.float32)
            self._out.fill(0.0)  # touch every page now, not inside a timed call
        return self._out

    @property
    def t_out(self) -> torch.Tensor:
        """The same for torch (its own buffer, so that results never alias)."""
        if self._t_out is None:
            self._t_out = torch.zeros(self.inputs.shape, dtype=torch.float32)
        return self._t_out

    def release_buffers(self) -> None:
        self._out = None
        self._t_out = None


Call = Callable[[Workspace], Any]


@dataclass(frozen=True)
class Case:
    """One statistic.

    Attributes:
        name: the lens_stats function name (top_k/top_k_delta with k = 10).
        ours: the lens_stats call.
        original: the original library's numpy formulas (None where not applicable).
        torch_cpu: plain torch on the CPU.
        n_arrays: how many (L, T, V) arrays one call reads (forward_kl adds one (T, V) slab).
        targets: which TARGETS apply (mem1 applies to every case, bf16 to every bf16 row).
        slow_original: the original's version takes tens of seconds (argsorts, argpartition).
        original_extra: the original's peak temporaries, in multiples of the input (a memory
            guard: the baseline is skipped when it would not fit).
        reads_one_value_per_row: GB/s and bandwidth targets are meaningless (cross-entropy).
        transcendentals: exp/log evaluations per element (per pair for two-input statistics),
            which sets the AVX2 copy's bandwidth target.
        ceiling_rows: positions of the in-cache run (`_ceiling.py`): more where a call's fixed
            cost per task (marginal sums: 32 KiB of column sums per 1024 columns) would
            otherwise be timed instead of its arithmetic.
        writes_output: the call writes an array as large as its input (``log_softmax(out=)``):
            its ceiling is a plain copy, not a read, and its paired share is taken against one.
    """

    name: str
    ours: Call
    original: Call | None
    torch_cpu: Call
    n_arrays: int = 1
    targets: tuple[str, ...] = ()
    slow_original: bool = False
    original_extra: float = 2.0
    reads_one_value_per_row: bool = False
    transcendentals: int = 1
    ceiling_rows: int = 16
    writes_output: bool = False

    def input_bytes(self, inputs: BenchInputs) -> int:
        extra = 0
        if self.name == "forward_kl":
            _, positions, vocab = inputs.shape
            extra = positions * vocab * inputs.itemsize
        return self.n_arrays * inputs.array_bytes + extra


def _np(x: Any) -> np.ndarray:
    return x if isinstance(x, np.ndarray) else x.numpy()


def _torch_entropy(lp: torch.Tensor) -> torch.Tensor:
    return -(lp.exp() * lp).sum(-1)


def _torch_kl(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    return (lp.exp() * (lp - lq)).sum(-1)


def _torch_marginal_sums(w: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    rows = w.t_lp.reshape(-1, w.t_lp.shape[-1])
    return rows.exp().sum(0, dtype=torch.float64), rows.sum(0, dtype=torch.float64)


def _torch_js(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    p, q = lp.exp(), lq.exp()
    log_m = (0.5 * (p + q)).log()
    return 0.5 * (p * (lp - log_m)).sum(-1) + 0.5 * (q * (lq - log_m)).sum(-1)


def _torch_top_k_delta(w: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    delta = w.t_lq.exp() - w.t_lp.exp()
    ids = delta.abs().topk(K, dim=-1).indices
    return ids, delta.gather(-1, ids)


def _torch_rank(w: Workspace) -> torch.Tensor:
    at_target = w.t_lp.gather(-1, w.t_targets)
    return (w.t_lp > at_target).sum(-1) + 1


CASES: list[Case] = [
    Case(
        "log_softmax",
        ours=lambda w: ls.log_softmax(w.inputs.lp, out=w.out),
        original=lambda w: orig.log_softmax(_np(w.inputs.lp)),
        torch_cpu=lambda w: torch.log_softmax(w.t_lp, -1, dtype=torch.float32, out=w.t_out),
        targets=("bw70", "explog"),
        writes_output=True,
    ),
    Case(
        "entropy",
        ours=lambda w: ls.entropy(w.inputs.lp),
        original=lambda w: orig.entropy(_np(w.inputs.lp)),
        torch_cpu=lambda w: _torch_entropy(w.t_lp),
        targets=("bw70", "explog"),
        original_extra=2.0,
    ),
    Case(
        "entropy_from_logits",
        ours=lambda w: ls.entropy_from_logits(w.inputs.lp),
        original=lambda w: orig.entropy_from_logits(_np(w.inputs.lp)),
        torch_cpu=lambda w: _torch_entropy(torch.log_softmax(w.t_lp, -1)),
        targets=("bw70", "explog"),
        original_extra=4.0,
    ),
    Case(
        "max_probability",
        ours=lambda w: ls.max_probability(w.inputs.lp),
        original=lambda w: orig.max_probability(_np(w.inputs.lp)),
        torch_cpu=lambda w: w.t_lp.max(-1),
        targets=("bw70", "no_slower"),
        original_extra=0.0,
        transcendentals=0,
    ),
    Case(
        "target_rank",
        ours=lambda w: ls.target_rank(w.inputs.lp, w.inputs.targets),
        original=lambda w: orig.target_rank(_np(w.inputs.lp), w.inputs.targets),
        torch_cpu=_torch_rank,
        targets=("bw70", "select"),
        slow_original=True,
        original_extra=5.0,
        transcendentals=0,
    ),
    Case(
        "cross_entropy",
        ours=lambda w: ls.cross_entropy(w.inputs.lp, w.inputs.targets),
        original=lambda w: orig.cross_entropy(_np(w.inputs.lp), w.inputs.targets),
        torch_cpu=lambda w: -w.t_lp.gather(-1, w.t_targets)[..., 0],
        original_extra=0.0,
        reads_one_value_per_row=True,
        transcendentals=0,
    ),
    Case(
        "forward_kl",
        ours=lambda w: ls.forward_kl(w.inputs.lp, w.inputs.lp[-1]),
        original=lambda w: orig.forward_kl(_np(w.inputs.lp), _np(w.inputs.lp)[-1]),
        torch_cpu=lambda w: _torch_kl(w.t_lp[-1], w.t_lp),
        targets=("bw70", "explog"),
    ),
    Case(
        "kl_divergence",
        ours=lambda w: ls.kl_divergence(w.inputs.lp, w.inputs.lq),
        original=lambda w: orig.kl_divergence(_np(w.inputs.lp), _np(w.inputs.lq)),
        torch_cpu=lambda w: _torch_kl(w.t_lp, w.t_lq),
        n_arrays=2,
        targets=("bw70", "explog"),
    ),
    Case(
        "js_divergence",
        ours=lambda w: ls.js_divergence(w.inputs.lp, w.inputs.lq),
        original=lambda w: orig.js_divergence(_np(w.inputs.lp), _np(w.inputs.lq)),
        torch_cpu=lambda w: _torch_js(w.t_lp, w.t_lq),
        n_arrays=2,
        targets=("bw70", "explog"),
        original_extra=4.0,
        transcendentals=3,
    ),
    Case(
        "symmetric_kl",
        ours=lambda w: ls.symmetric_kl(w.inputs.lp, w.inputs.lq),
        original=lambda w: orig.symmetric_kl(_np(w.inputs.lp), _np(w.inputs.lq)),
        torch_cpu=lambda w: 0.5 * _torch_kl(w.t_lp, w.t_lq) + 0.5 * _torch_kl(w.t_lq, w.t_lp),
        n_arrays=2,
        targets=("bw70", "explog"),
        transcendentals=2,
    ),
    Case(
        "total_variation",
        ours=lambda w: ls.total_variation(w.inputs.lp, w.inputs.lq),
        original=lambda w: orig.total_variation(_np(w.inputs.lp), _np(w.inputs.lq)),
        torch_cpu=lambda w: 0.5 * (w.t_lp.exp() - w.t_lq.exp()).abs().sum(-1),
        n_arrays=2,
        targets=("bw70", "explog"),
        transcendentals=2,
    ),
    Case(
        "max_abs_diff",
        ours=lambda w: ls.max_abs_diff(w.inputs.lp, w.inputs.lq),
        original=lambda w: orig.max_abs_diff(_np(w.inputs.lp), _np(w.inputs.lq)),
        torch_cpu=lambda w: (w.t_lp.exp() - w.t_lq.exp()).abs().amax(-1),
        n_arrays=2,
        targets=("bw70", "explog"),
        transcendentals=2,
    ),
    Case(
        "marginal_sums",
        ours=lambda w: ls.marginal_sums(w.inputs.lp),
        original=None,
        torch_cpu=_torch_marginal_sums,
        targets=("bw70",),
        original_extra=0.0,
        ceiling_rows=64,
    ),
    Case(
        "top_k",
        ours=lambda w: ls.top_k(w.inputs.lp, K),
        original=lambda w: orig.top_k(_np(w.inputs.lp), K),
        torch_cpu=lambda w: w.t_lp.topk(K, dim=-1),
        targets=("bw40", "select"),
        slow_original=True,
        original_extra=4.0,
        transcendentals=0,
    ),
    Case(
        "top_k_delta",
        ours=lambda w: ls.top_k_delta(w.inputs.lp, w.inputs.lq, K),
        original=lambda w: orig.top_k_delta(_np(w.inputs.lp), _np(w.inputs.lq), K),
        torch_cpu=_torch_top_k_delta,
        n_arrays=2,
        targets=("bw40", "select"),
        slow_original=True,
        original_extra=5.0,
        transcendentals=2,
    ),
]

CASES_BY_NAME = {case.name: case for case in CASES}
