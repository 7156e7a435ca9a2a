"""The pure-torch twin ``tuned_lens.lens_stats._torch`` against the float64 oracle and the Rust core.

The twin speaks torch; ``NumpyTwin`` wraps it so that the shared contract checks (written for the
numpy-speaking ``lens_stats``) run on it unchanged, on the CPU and, when one is present, on CUDA.
"""

from __future__ import annotations

from typing import Any

import _contract_checks as cc
import numpy as np
import pytest
import torch
from _stats_inputs import assert_close, make_inputs
from tuned_lens.lens_stats import _torch as _torch_stats
from tuned_lens.lens_stats import errors

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _to_torch(x: Any, device: str) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, np.ndarray):
        if x.dtype == np.uint16:  # raw bfloat16 bits
            return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16).to(device)
        return torch.from_numpy(x).to(device)
    return x


def _to_numpy(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, tuple):
        return tuple(_to_numpy(v) for v in x)
    return x


class NumpyTwin:
    """The twin behind lens_stats' calling convention: numpy/torch in, numpy out."""

    def __init__(self, device: str) -> None:
        self.device = device
        for name in ("LensStatsError", "ShapeError", "DTypeError", "TargetIndexError"):
            setattr(self, name, getattr(errors, name))

    def __getattr__(self, name: str) -> Any:
        fn = getattr(_torch_stats, name)

        def call(*args: Any, out: np.ndarray | None = None, **kwargs: Any) -> Any:
            targs = [_to_torch(a, self.device) for a in args]
            if out is None:
                return _to_numpy(fn(*targs, **kwargs))
            # out= must receive the caller's buffer: write through a shared CPU view.
            tout = torch.empty(out.shape, dtype=torch.float32, device=self.device)
            fn(*targs, out=tout, **kwargs)
            out[...] = tout.cpu().numpy()
            return out

        return call


@pytest.fixture(params=DEVICES)
def twin(request: pytest.FixtureRequest) -> NumpyTwin:
    return NumpyTwin(request.param)


@pytest.mark.parametrize("vocab", cc.VOCABS)
@pytest.mark.parametrize("name", cc.CHECK_NAMES)
def test_float32_every_vocab(twin: NumpyTwin, name: str, vocab: int) -> None:
    cc.case_float32_every_vocab(twin, name, vocab)


@pytest.mark.parametrize("dtype", cc.OTHER_DTYPES)
@pytest.mark.parametrize("name", cc.CHECK_NAMES)
def test_other_dtypes(twin: NumpyTwin, name: str, dtype: str) -> None:
    cc.case_other_dtypes(twin, name, 1000, dtype)


def test_full_precision_float64_values(twin: NumpyTwin) -> None:
    cc.case_full_precision_float64_values(twin)


@pytest.mark.parametrize("target_dtype", ("int32", "int64"))
def test_target_dtypes_and_broadcast(twin: NumpyTwin, target_dtype: str) -> None:
    cc.case_target_dtypes_and_broadcast(twin, target_dtype)


@pytest.mark.parametrize("bad", (-1, 1000))
def test_target_ids_are_range_checked(twin: NumpyTwin, bad: int) -> None:
    cc.case_target_ids_are_range_checked(twin, bad)


def test_log_softmax_out(twin: NumpyTwin) -> None:
    cc.case_log_softmax_out(twin)


@pytest.mark.parametrize("view", cc.VIEWS)
def test_non_contiguous_inputs(twin: NumpyTwin, view: str) -> None:
    cc.case_non_contiguous_inputs(twin, view)


@pytest.mark.parametrize("vocab", (7, 1000))
def test_masked_tokens(twin: NumpyTwin, vocab: int) -> None:
    cc.case_masked_tokens(twin, vocab)


def test_q_zero_under_positive_p_gives_inf(twin: NumpyTwin) -> None:
    cc.case_q_zero_under_positive_p_gives_inf(twin)


def test_nan_row_is_nan_only_there(twin: NumpyTwin) -> None:
    cc.case_nan_row_is_nan_only_there(twin)


def test_marginal_sums_merge_across_batches(twin: NumpyTwin) -> None:
    cc.case_marginal_sums_merge_across_batches(twin)


def test_vocab_of_one(twin: NumpyTwin) -> None:
    cc.case_vocab_of_one(twin)


def test_small_blocks_walk_non_mergeable_axes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force tiny row blocks so the block walker's copy and recursion paths are exercised."""
    monkeypatch.setattr(_torch_stats, "_BLOCK_BUDGET_BYTES", 1000 * 4 * 4 * 2 * 3)  # 3 rows
    data = make_inputs((4, 5, 3), 1000, seed=11)
    lp = torch.from_numpy(np.ascontiguousarray(data.lp.transpose(1, 0, 2, 3)))  # (5, 4, 3, V)
    lq = torch.from_numpy(np.ascontiguousarray(data.lq.transpose(1, 0, 2, 3)))
    lp_view, lq_view = lp.transpose(0, 1), lq.transpose(0, 1)  # (4, 5, 3, V), not mergeable
    import _oracle as oracle

    assert_close(_torch_stats.entropy(lp_view), oracle.entropy(data.lp64))
    assert_close(
        _torch_stats.kl_divergence(lp_view, lq_view), oracle.kl_divergence(data.lp64, data.lq64)
    )
    assert_close(
        _torch_stats.forward_kl(lp_view, lq_view[..., 0, :, :]),
        oracle.forward_kl(data.lp64, data.lq64[..., 0, :, :]),
    )
    out = torch.empty(lp_view.shape).transpose(0, 1)  # a non-contiguous out=
    _torch_stats.log_softmax(torch.from_numpy(data.logits).transpose(0, 1), out=out)
    assert_close(out, oracle.log_softmax(data.logits64.transpose(1, 0, 2, 3)))
    ids, _ = _torch_stats.top_k(lp_view, 5)
    np.testing.assert_array_equal(ids.numpy(), oracle.top_k(data.lp64, 5)[0])


def test_agrees_with_rust_core() -> None:
    """Twin and Rust core on the same float32 CPU tensors (both within the oracle's tolerance)."""
    from tuned_lens import lens_stats

    data = make_inputs((3, 4, 5), 2000, seed=5)
    lp, lq = torch.from_numpy(data.lp), torch.from_numpy(data.lq)
    targets = torch.from_numpy(data.targets)
    pairs = [
        (_torch_stats.entropy(lp), lens_stats.entropy(lp)),
        (_torch_stats.kl_divergence(lp, lq), lens_stats.kl_divergence(lp, lq)),
        (_torch_stats.js_divergence(lp, lq), lens_stats.js_divergence(lp, lq)),
        (_torch_stats.forward_kl(lp, lq[:, -1]), lens_stats.forward_kl(lp, lq[:, -1])),
        (_torch_stats.cross_entropy(lp, targets), lens_stats.cross_entropy(lp, targets)),
    ]
    for twin_value, rust_value in pairs:
        assert_close(twin_value, np.asarray(rust_value, dtype=np.float64), rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(
        _torch_stats.target_rank(lp, targets).numpy(), lens_stats.target_rank(lp, targets)
    )
    np.testing.assert_array_equal(
        _torch_stats.top_k(lp, 10)[0].numpy(), lens_stats.top_k(lp, 10)[0]
    )


def test_edge_rows_agree_with_rust_core() -> None:
    """Rows with no distribution (all -inf, a +inf logit), masked tokens and ties."""
    from tuned_lens import lens_stats

    x = np.array(
        [[-np.inf] * 4, [0, 1, np.inf, 2], [0, 1, 2, 3], [1, -np.inf, 1, -np.inf]], np.float32
    )
    t = torch.from_numpy(x)
    for name in ("logsumexp", "log_softmax", "entropy_from_logits"):
        twin_value = getattr(_torch_stats, name)(t).numpy()
        rust_value = np.asarray(getattr(lens_stats, name)(x))
        np.testing.assert_allclose(twin_value, rust_value, rtol=1e-6, err_msg=name)
    twin_prob, twin_ids = _torch_stats.max_probability(t, from_logits=True)
    rust_prob, rust_ids = lens_stats.max_probability(x, from_logits=True)
    np.testing.assert_allclose(twin_prob.numpy(), rust_prob, rtol=1e-6)
    np.testing.assert_array_equal(twin_ids.numpy()[2:], rust_ids[2:])
    lp = lens_stats.log_softmax(x[2:])
    for k in (1, 2, 4):
        twin_ids, twin_probs = _torch_stats.top_k(torch.from_numpy(lp), k)
        rust_ids, rust_probs = lens_stats.top_k(lp, k)
        np.testing.assert_array_equal(twin_ids.numpy(), rust_ids)
        np.testing.assert_allclose(twin_probs.numpy(), rust_probs, rtol=1e-6)
