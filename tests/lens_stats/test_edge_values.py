"""Edge values and edge tensors with one defined answer, the same on the core and the twin.

``logsumexp`` of a row holding ``+inf`` is ``+inf`` (as ``torch.logsumexp``); ``top_k`` and
``top_k_delta`` of a row holding a NaN give ids ``0..k-1`` and NaN values; tensors with the
negative (or conjugate) bit set are read; an ``out=`` buffer overlapping the logits through
another base object is refused (the refusal's message is compared in test_same_errors.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from tuned_lens import lens_stats as ls
from tuned_lens.lens_stats import _torch as twin

ROUTES = {"core": ls, "twin": twin}
INF, NAN = math.inf, math.nan


def _values(rows: list[list[float]], dtype: torch.dtype, route: str) -> Any:
    t = torch.tensor(rows, dtype=dtype)
    return t if route == "twin" or dtype == torch.bfloat16 else t.numpy()


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_logsumexp_of_a_row_with_inf_is_inf(route: str, dtype: torch.dtype) -> None:
    rows = [
        [1.0, INF, 2.0, 0.5],  # +inf among finite logits
        [-INF, INF, -INF, 0.0],  # +inf and -inf
        [INF, INF, INF, INF],  # +inf only
        [NAN, INF, 0.0, 1.0],  # a NaN wins
        [-INF, -INF, -INF, -INF],  # no mass: -inf
        [0.0, 0.0, 0.0, 0.0],
    ]
    # Long rows too (SIMD body and tail), with the +inf late in the row.
    long = [[0.0] * 37 + [INF] + [1.0] * 3] * 3
    got = np.asarray(ROUTES[route].logsumexp(_values(rows, dtype, route)))
    expected = torch.logsumexp(torch.tensor(rows, dtype=torch.float64), -1).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert np.isnan(got[3]) and got[4] == -INF and (got[:3] == INF).all()
    long_got = ROUTES[route].logsumexp(_values(long, dtype, route))
    assert (np.asarray(long_got) == INF).all()


@pytest.mark.parametrize("route", list(ROUTES))
def test_logsumexp_inf_rows_agree_between_routes(route: str) -> None:
    """Normalisers stay NaN: log_softmax of a row with +inf has no distribution."""
    logits = torch.tensor([[1.0, INF, 2.0], [1.0, 2.0, 3.0]])
    lp = ROUTES[route].log_softmax(logits if route == "twin" else logits.numpy())
    assert np.isnan(np.asarray(lp)[0]).all() and np.isfinite(np.asarray(lp)[1]).all()


def _nan_rows_log_probs(vocab: int) -> np.ndarray:
    lp = np.log(np.random.default_rng(3).dirichlet(np.ones(vocab), size=(4, 3))).astype("f4")
    lp[0, 1, vocab - 2] = np.nan  # late in the row
    lp[2, 0, 0] = np.nan  # first entry
    lp[3, 2, :] = np.nan  # all NaN
    return lp


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("vocab", [5, 200, 5000])
def test_top_k_of_a_nan_row_gives_ids_in_order_and_nan(route: str, vocab: int) -> None:
    lp = _nan_rows_log_probs(vocab)
    nan_rows = np.isnan(lp).any(-1)
    stats = ROUTES[route]
    arg = torch.from_numpy(lp) if route == "twin" else lp
    for k in (1, 3, 5):
        ids, probs = (np.asarray(a) for a in stats.top_k(arg, k))
        assert (ids[nan_rows] == np.arange(k)).all()
        assert np.isnan(probs[nan_rows]).all() and not np.isnan(probs[~nan_rows]).any()
        want_ids, want_probs = (np.asarray(a) for a in ls.top_k(lp[~nan_rows], k))
        np.testing.assert_array_equal(ids[~nan_rows], want_ids)
        np.testing.assert_allclose(probs[~nan_rows], want_probs, rtol=1e-6)
        lq = np.log(np.full_like(lp, 1.0 / vocab))
        q_arg = torch.from_numpy(lq) if route == "twin" else lq
        d_ids, deltas = (np.asarray(a) for a in stats.top_k_delta(arg, q_arg, k))
        assert (d_ids[nan_rows] == np.arange(k)).all() and np.isnan(deltas[nan_rows]).all()
        assert not np.isnan(deltas[~nan_rows]).any()


@pytest.mark.parametrize("keep_device", [False, True])
def test_a_tensor_with_the_negative_bit_is_read(keep_device: bool) -> None:
    base = torch.randn(3, 7)
    logits = torch._neg_view(base)
    assert logits.is_neg()
    want = ls.logsumexp(-base.numpy())
    got = ls.logsumexp(logits, keep_device=keep_device)
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(twin.logsumexp(logits).numpy(), twin.logsumexp(-base).numpy())
    ids = torch._neg_view(torch.tensor([-1, -6, 0]))
    lp = ls.log_softmax(-base.numpy())
    np.testing.assert_array_equal(
        np.asarray(ls.target_rank(lp, ids)), ls.target_rank(lp, [1, 6, 0])
    )


def test_an_out_buffer_overlapping_through_another_base_is_refused() -> None:
    """Two ``frombuffer`` arrays of one bytearray, the output one row further on: written in
    place, each row would overwrite the next row's logits before they are read."""
    buffer = bytearray(4 * 5 * 4)
    logits = np.frombuffer(buffer, np.float32)[:15].reshape(3, 5)
    logits[...] = np.random.default_rng(0).standard_normal((3, 5))
    out = np.frombuffer(memoryview(buffer), np.float32)[5:].reshape(3, 5)
    assert logits.base is not out.base and np.shares_memory(logits, out)
    before = bytes(buffer)
    with pytest.raises(ls.LensStatsError, match="^out: shares memory with logits; "):
        ls.log_softmax(logits, out=out)
    with pytest.raises(ls.LensStatsError, match="^out: shares memory with logits; "):
        ls.log_softmax(torch.from_numpy(logits), out=torch.from_numpy(out))
    assert bytes(buffer) == before  # refused before writing
    # The other half of the same buffer is a fine output: memory ranges decide, not bases.
    big = bytearray(4 * 5 * 6)
    logits = np.frombuffer(big, np.float32)[:15].reshape(3, 5)
    logits[...] = np.random.default_rng(1).standard_normal((3, 5))
    apart = np.frombuffer(memoryview(big), np.float32)[15:].reshape(3, 5)
    ls.log_softmax(logits, out=apart)
    np.testing.assert_allclose(apart, ls.log_softmax(logits.copy()), rtol=1e-6)
