"""``keep_device=True``: results come back as torch tensors on the input's device."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch
from tuned_lens import lens_stats as ls

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _log_probs(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(*shape, generator=gen), dim=-1)


def _calls(lp: torch.Tensor, lq: torch.Tensor, ids: torch.Tensor) -> dict[str, tuple[Any, ...]]:
    return {
        "log_softmax": (lp,),
        "logsumexp": (lp,),
        "entropy": (lp,),
        "entropy_from_logits": (lp,),
        "max_probability": (lp,),
        "target_log_prob": (lp, ids),
        "cross_entropy": (lp, ids),
        "log_prob_diff": (lp, ids, ids.flip(-1)),
        "target_rank": (lp, ids),
        "kl_divergence": (lp, lq),
        "forward_kl": (lp, lq[0]),
        "js_divergence": (lp, lq),
        "symmetric_kl": (lp, lq),
        "total_variation": (lp, lq),
        "max_abs_diff": (lp, lq),
        "top_k": (lp, 4),
        "top_k_delta": (lp, lq, 4),
        "marginal_sums": (lp,),
    }


def _flat(result: Any) -> list[Any]:
    return list(result) if isinstance(result, tuple) else [result]


def test_every_statistic_takes_keep_device() -> None:
    lp = _log_probs(3, 4, 11)
    assert set(_calls(lp, lp, torch.zeros(3, 4, dtype=torch.int64))) == set(ls.STATISTICS)
    for name, fn in ls.STATISTICS.items():
        param = inspect.signature(fn).parameters["keep_device"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is False, name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(ls.STATISTICS))
def test_results_stay_on_the_device(name: str, device: str) -> None:
    lp, lq = _log_probs(3, 4, 11).to(device), _log_probs(3, 4, 11, seed=1).to(device)
    ids = torch.tensor([[0, 3, 10, 5]] * 3, device=device)
    args = _calls(lp, lq, ids)[name]
    kept = _flat(getattr(ls, name)(*args, keep_device=True))
    host = _flat(getattr(ls, name)(*args))
    assert len(kept) == len(host)
    for k, h in zip(kept, host):
        if isinstance(h, int):
            assert k == h
            continue
        assert isinstance(h, np.ndarray)
        assert isinstance(k, torch.Tensor) and k.device.type == device, name
        np.testing.assert_array_equal(k.cpu().numpy(), h)


def test_cpu_results_are_the_core_arrays_without_a_copy() -> None:
    lp = _log_probs(5, 17)
    kept = ls.entropy(lp, keep_device=True)
    assert isinstance(kept, torch.Tensor)
    kept[0] = 123.0  # the tensor owns the core's buffer: nothing else refers to it
    ids, probs = ls.top_k(lp, 3, keep_device=True)
    assert ids.dtype == torch.int64 and probs.dtype == torch.float32


def test_numpy_inputs_give_numpy_even_with_keep_device() -> None:
    lp = _log_probs(2, 9).numpy()
    assert isinstance(ls.entropy(lp, keep_device=True), np.ndarray)


def test_log_softmax_writes_into_a_cpu_tensor() -> None:
    logits = torch.randn(4, 13)
    out = torch.full((4, 13), float("nan"))
    assert ls.log_softmax(logits, out=out) is out
    torch.testing.assert_close(out, torch.log_softmax(logits, dim=-1))
    numpy_out = np.empty((4, 13), np.float32)
    assert ls.log_softmax(logits, out=numpy_out, keep_device=True) is numpy_out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_log_softmax_into_cuda_and_host_buffers() -> None:
    logits = torch.randn(4, 13, device="cuda")
    out = torch.empty(4, 13, device="cuda")
    assert ls.log_softmax(logits, out=out) is out
    host = np.empty((4, 13), np.float32)
    assert ls.log_softmax(logits, out=host) is host
    np.testing.assert_allclose(host, out.cpu().numpy(), rtol=1e-6, atol=1e-6)
