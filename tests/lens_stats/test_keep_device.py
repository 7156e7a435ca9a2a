"""``keep_device=True``: results come back as torch tensors on the input's device."""

from __future__ import annotations

import inspect
from typing import Any

import _contract_checks as cc
import numpy as np
import pytest
import torch
from tuned_lens import lens_stats as ls

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _log_probs(*shape: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(*shape, generator=gen), dim=-1)


class KeepDevice:
    """``lens_stats`` called with tensors on ``device`` and ``keep_device=True``; every array
    result must be a tensor on that device, and is handed to the contract checks as numpy."""

    def __init__(self, device: str) -> None:
        self.device = device

    def _result(self, value: Any) -> Any:
        if isinstance(value, tuple):
            return tuple(self._result(v) for v in value)
        if isinstance(value, int):
            return value
        assert isinstance(value, torch.Tensor) and value.device.type == self.device, value
        return value.cpu().numpy()

    def __getattr__(self, name: str) -> Any:
        fn = getattr(ls, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            moved = [a.to(self.device) if isinstance(a, torch.Tensor) else a for a in args]
            return self._result(fn(*moved, keep_device=True, **kwargs))

        return call


def test_every_statistic_takes_keep_device() -> None:
    for name, fn in ls.STATISTICS.items():
        param = inspect.signature(fn).parameters["keep_device"]
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is False, name


def test_every_statistic_has_a_contract_check() -> None:
    assert set(ls.STATISTICS) <= set(cc.CHECKS)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", cc.CHECK_NAMES)
def test_results_stay_on_the_device(name: str, device: str) -> None:
    """The contract checks, run on bfloat16 tensors with ``keep_device=True``."""
    data = cc.cached_inputs(1000, "bfloat16-torch")
    cc.run_checks(cc.CHECKS[name](KeepDevice(device), data), f"{name} keep_device {device}")


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
