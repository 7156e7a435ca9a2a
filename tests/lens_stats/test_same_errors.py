"""Both routes reject every bad input with the same exception class and the same message.

The Rust core (numpy or CPU tensors through :mod:`tuned_lens.lens_stats`) and the torch twin
(:mod:`tuned_lens.lens_stats._torch`, called directly on CPU tensors, as the facade calls it
with CUDA tensors) are fed the same bad inputs; the exception's type and ``str`` must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from tuned_lens import errors
from tuned_lens import lens_stats as ls
from tuned_lens.lens_stats import _torch as twin


def _lp(*shape: int, dtype: Any = np.float32) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal(shape)
    return (x - np.log(np.exp(x).sum(-1, keepdims=True))).astype(dtype)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x)


GOOD = _lp(2, 3, 5)
IDS = np.zeros((2, 3), np.int64)
ONE_PAIR = ("kl_divergence", "js_divergence", "symmetric_kl", "total_variation", "max_abs_diff")
ONE_INPUT = ("logsumexp", "entropy", "entropy_from_logits", "marginal_sums", "log_softmax")


def _two_views(shift_rows: int, vocab: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Logits (3, 5) and a C-contiguous out= buffer (3, vocab) over one bytearray, through two
    ``frombuffer`` arrays (no common numpy base), the buffer ``shift_rows`` rows further on."""
    buffer = bytearray(4 * 5 * (3 + shift_rows))
    logits = np.frombuffer(buffer, np.float32)[:15].reshape(3, 5)
    logits[...] = _lp(3, 5)
    out = np.frombuffer(memoryview(buffer), np.float32)[5 * shift_rows :][: 3 * vocab]
    return logits, out.reshape(3, vocab)


META = torch.empty(2, 3, 5, device="meta")

# (statistic, positional arguments, keyword arguments): each holds exactly one mistake.
CASES: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {}


def _overlap_case(shift_rows: int, vocab: int = 5) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    logits, out = _two_views(shift_rows, vocab)
    return ("log_softmax", (logits,), {"out": out})


for _name in ONE_INPUT:
    CASES[f"{_name}-0d"] = (_name, (np.float32(1.0),), {})
    CASES[f"{_name}-empty-vocab"] = (_name, (np.zeros((3, 0), np.float32),), {})
    CASES[f"{_name}-int64"] = (_name, (np.zeros((2, 5), np.int64),), {})
    CASES[f"{_name}-bool-tensor"] = (_name, (torch.zeros(2, 5, dtype=torch.bool),), {})
for _name in ONE_PAIR:
    CASES[f"{_name}-shapes"] = (_name, (GOOD, _lp(2, 4, 5)), {})
    CASES[f"{_name}-dtypes"] = (_name, (GOOD, GOOD.astype(np.float64)), {})
    CASES[f"{_name}-int-q"] = (_name, (GOOD, np.zeros((2, 3, 5), np.int32)), {})
    CASES[f"{_name}-empty-vocab-p"] = (_name, (np.zeros((2, 0), np.float32), GOOD), {})
CASES.update(
    {
        "max_probability-logits-0d": ("max_probability", (np.float32(0),), {"from_logits": True}),
        "max_probability-complex": ("max_probability", (np.zeros((2, 3), np.complex64),), {}),
        "entropy-float16-big-endian": ("entropy", (np.zeros((2, 3), ">f2"),), {}),
        "entropy-str": ("entropy", (np.array([["a", "b"]]),), {}),
        "entropy-complex-tensor": ("entropy", (torch.zeros(2, 5, dtype=torch.complex64),), {}),
        "entropy-float8-tensor": ("entropy", (torch.zeros(2, 5).to(torch.float8_e4m3fn),), {}),
        "target_log_prob-float-ids": ("target_log_prob", (GOOD, np.zeros((2, 3))), {}),
        "target_log_prob-uint32-ids": ("target_log_prob", (GOOD, IDS.astype(np.uint32)), {}),
        "target_log_prob-bool-ids": ("target_log_prob", (GOOD, IDS.astype(bool)), {}),
        "target_log_prob-ids-shape": ("target_log_prob", (GOOD, np.zeros((3, 2), np.int64)), {}),
        "target_log_prob-ids-layers": (
            "target_log_prob",
            (_lp(2, 4, 3, 5), np.zeros((2, 3), np.int64)),
            {},
        ),
        "target_log_prob-too-many-axes": ("target_log_prob", (GOOD, np.zeros((1, 2, 3), int)), {}),
        "target_log_prob-id-high": ("target_log_prob", (GOOD, IDS + 5), {}),
        "target_log_prob-id-negative": ("target_log_prob", (GOOD, np.array([0, -1, 2])), {}),
        "target_log_prob-id-huge": ("target_log_prob", (GOOD, np.array([2**40, 0, 1])), {}),
        "target_log_prob-0d-values": ("target_log_prob", (np.float32(1), np.int64(0)), {}),
        "target_log_prob-int-values": ("target_log_prob", (IDS, IDS), {}),
        "cross_entropy-id-high": ("cross_entropy", (GOOD, np.array([[0, 9, 0]])), {}),
        "cross_entropy-float-ids-tensor": ("cross_entropy", (_t(GOOD), torch.zeros(2, 3)), {}),
        "target_rank-id-high": ("target_rank", (GOOD, np.int32(7)), {}),
        "target_rank-ids-list": ("target_rank", (GOOD, [0, 1, 7]), {}),
        "log_prob_diff-anti-high": ("log_prob_diff", (GOOD, IDS, IDS + 6), {}),
        "log_prob_diff-both-high": ("log_prob_diff", (GOOD, IDS - 1, IDS + 6), {}),
        "log_prob_diff-anti-float": ("log_prob_diff", (GOOD, IDS + 9, IDS * 1.0), {}),
        "log_prob_diff-anti-shape": ("log_prob_diff", (GOOD, IDS, np.zeros(4, np.int64)), {}),
        "forward_kl-two-axes": ("forward_kl", (_lp(3, 5), _lp(5)), {}),
        "forward_kl-reference-shape": ("forward_kl", (_lp(4, 3, 5), _lp(4, 5)), {}),
        "forward_kl-batch-shape": ("forward_kl", (_lp(2, 4, 3, 5), _lp(4, 3, 5)), {}),
        "forward_kl-dtypes": ("forward_kl", (_lp(4, 3, 5), _lp(3, 5, dtype=np.float64)), {}),
        "forward_kl-int-reference": ("forward_kl", (_lp(4, 3, 5), np.zeros((3, 5), int)), {}),
        "forward_kl-empty-vocab-reference": (
            "forward_kl",
            (_lp(4, 3, 5), np.zeros((3, 0), np.float32)),
            {},
        ),
        "top_k-k-zero": ("top_k", (GOOD, 0), {}),
        "top_k-k-negative": ("top_k", (GOOD, -3), {}),
        "top_k-k-above-vocab": ("top_k", (GOOD, 6), {}),
        "top_k-k-above-max": ("top_k", (_lp(2, 100), ls.MAX_K + 1), {}),
        "top_k-k-float": ("top_k", (GOOD, 2.5), {}),
        "top_k-k-str": ("top_k", (GOOD, "3"), {}),
        "top_k-k-huge": ("top_k", (GOOD, 2**70), {}),
        "top_k-int-values": ("top_k", (np.zeros((2, 5), np.int16), 1), {}),
        "top_k-empty-vocab": ("top_k", (np.zeros((2, 0), np.float32), 1), {}),
        "top_k_delta-shapes": ("top_k_delta", (GOOD, _lp(2, 3, 6), 2), {}),
        "top_k_delta-k": ("top_k_delta", (GOOD, GOOD, 0), {}),
        "top_k_delta-dtypes": ("top_k_delta", (GOOD, GOOD.astype(np.float16), 2), {}),
        "top_k_delta-k-float-and-shapes": ("top_k_delta", (GOOD, _lp(2, 3, 6), 1.0), {}),
        "log_softmax-out-dtype": ("log_softmax", (GOOD,), {"out": np.empty((2, 3, 5))}),
        "log_softmax-out-shape": ("log_softmax", (GOOD,), {"out": np.empty((2, 3, 4), "f4")}),
        "log_softmax-out-list": ("log_softmax", (GOOD,), {"out": [[0.0] * 5] * 6}),
        "log_softmax-out-and-0d": ("log_softmax", (np.float32(0),), {"out": np.empty((), "f4")}),
        "log_softmax-out-overlaps-one-row-on": _overlap_case(1),
        "log_softmax-out-overlaps-same-bytes": _overlap_case(0),
        "log_softmax-out-overlaps-and-bad-shape": _overlap_case(1, vocab=4),
        "entropy-conj-complex-tensor": (
            "entropy",
            (torch.zeros(2, 5, dtype=torch.complex64).conj(),),
            {},
        ),
        "entropy-meta": ("entropy", (META,), {}),
        "top_k-meta": ("top_k", (META, 2), {}),
        "kl_divergence-meta-q": ("kl_divergence", (GOOD, META), {}),
        "forward_kl-meta-reference": ("forward_kl", (_lp(4, 3, 5), META[0]), {}),
        "target_log_prob-meta-ids": (
            "target_log_prob",
            (_t(GOOD), torch.zeros(2, 3, dtype=torch.int64, device="meta")),
            {},
        ),
        "log_softmax-meta-out": ("log_softmax", (GOOD,), {"out": META}),
    }
)


def _twin_args(value: Any) -> Any:
    """The twin is called on tensors where the facade would hand it tensors (CUDA inputs)."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.dtype.isnative:
        return torch.from_numpy(value)
    return value


def _raised(call: Callable[[], Any]) -> BaseException:
    with pytest.raises(errors.LensStatsError) as info:
        call()
    return info.value


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_core_and_twin_raise_the_same(case: str) -> None:
    name, args, kwargs = CASES[case]
    core = _raised(lambda: getattr(ls, name)(*args, **kwargs))
    targs = tuple(_twin_args(a) for a in args)
    tkwargs = {k: _twin_args(v) for k, v in kwargs.items()}
    other = _raised(lambda: getattr(twin, name)(*targs, **tkwargs))
    assert (type(other), str(other)) == (type(core), str(core))
    # The message starts with the argument at fault.
    assert str(core).split(":", 1)[0] in {
        "logits",
        "log_probs",
        "log_p",
        "log_q",
        "reference",
        "targets",
        "anti_targets",
        "k",
        "out",
    }, str(core)


@pytest.mark.parametrize("case", [c for c in CASES if "-" in c][:20])
def test_the_twin_also_agrees_on_numpy_inputs(case: str) -> None:
    """Called with the very same numpy arrays, the twin still answers as the core does."""
    name, args, kwargs = CASES[case]
    if "out" in kwargs:
        pytest.skip("the twin writes into tensors only")
    core = _raised(lambda: getattr(ls, name)(*args, **kwargs))
    other = _raised(lambda: getattr(twin, name)(*args, **kwargs))
    assert (type(other), str(other)) == (type(core), str(core))


def test_classes_are_the_one_hierarchy() -> None:
    from tuned_lens.lens_stats import errors as stats_errors

    for name in ("LensStatsError", "ShapeError", "DTypeError", "TargetIndexError"):
        assert getattr(ls, name) is getattr(stats_errors, name) is getattr(errors, name)
    assert issubclass(errors.LensStatsError, errors.TunedLensError)
