"""Memory layouts numpy allows but a plain strided reader misreads: both routes read them right.

Views whose strides are not a multiple of the item size (views into byte buffers, float fields
of packed record arrays), views whose data is not aligned to the item size, and token ids in
such layouts or in big-endian byte order. Each is compared with the float64 oracle applied to
the same values (``view.astype(float64)``), on the Rust core and on the torch twin.
"""

from __future__ import annotations

from typing import Any

import _oracle as oracle
import numpy as np
import pytest
import torch
from _stats_inputs import assert_close, assert_top_k
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tuned_lens import lens_stats as ls
from tuned_lens.lens_stats import _torch as twin

FAST = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
ROUTES = {"core": ls, "twin": twin}
DTYPES = (np.float32, np.float64, np.float16)


def _byte_view(
    shape: tuple[int, int], dtype: Any, item_stride: int, row_pad: int, offset: int
) -> np.ndarray:
    """A (rows, V) view into a fresh byte buffer: any byte strides, any offset."""
    rows, vocab = shape
    row_stride = vocab * item_stride + row_pad
    size = offset + rows * row_stride + np.dtype(dtype).itemsize
    buffer = bytearray(size)
    return np.ndarray(shape, dtype, buffer=buffer, offset=offset, strides=(row_stride, item_stride))


def _record_field(shape: tuple[int, int], dtype: Any, pad: int) -> np.ndarray:
    """The (rows, V) float field of a packed record array with ``pad`` bytes before it."""
    rows, vocab = shape
    record = np.dtype([("pad", "u1", (pad,)), ("x", dtype, (vocab,))]) if pad else None
    if record is None:
        record = np.dtype([("x", dtype, (vocab,)), ("tail", "u1", (3,))])
    return np.zeros(rows, record)["x"]


@st.composite
def odd_views(
    draw: st.DrawFn, shape: tuple[int, int] | None = None, dtype: Any = None
) -> np.ndarray:
    """A (rows, V) float view in a layout a naive strided reader gets wrong."""
    if shape is None:
        shape = (draw(st.integers(1, 5)), draw(st.integers(1, 40)))
    if dtype is None:
        dtype = draw(st.sampled_from(DTYPES))
    itemsize = np.dtype(dtype).itemsize
    kind = draw(st.sampled_from(["byte-strides", "unaligned", "record-field"]))
    if kind == "byte-strides":
        item_stride = draw(st.integers(itemsize, 3 * itemsize))
        view = _byte_view(
            shape, dtype, item_stride, draw(st.integers(0, 5)), draw(st.integers(0, 7))
        )
    elif kind == "unaligned":
        view = _byte_view(shape, dtype, itemsize, 0, draw(st.integers(1, itemsize)))
    else:
        view = _record_field(shape, dtype, draw(st.integers(0, 5)))
    seed = draw(st.integers(0, 2**16))
    view[...] = np.random.default_rng(seed).normal(0.0, 3.0, shape)
    if draw(st.booleans()):
        view = view[::-1]
    return view


def _log_probs_like(view: np.ndarray) -> np.ndarray:
    """Normalise ``view`` in place (its layout kept) and return it."""
    values = view.astype(np.float64)
    view[...] = oracle.log_softmax(values)
    return view


def _f64(view: np.ndarray) -> np.ndarray:
    return view.astype(np.float64)


def _check_one_input_statistics(stats: Any, logits: np.ndarray, lp: np.ndarray) -> None:
    assert_close(stats.logsumexp(logits), oracle.logsumexp(_f64(logits)))
    assert_close(stats.log_softmax(logits), oracle.log_softmax(_f64(logits)))
    assert_close(stats.entropy_from_logits(logits), oracle.entropy_from_logits(_f64(logits)))
    assert_close(stats.entropy(lp), oracle.entropy(_f64(lp)))
    k = min(3, lp.shape[-1])
    ids, probs = stats.top_k(lp, k)
    p = np.exp(_f64(lp))
    assert_top_k(np.asarray(ids), np.asarray(probs), p, p, k)


@FAST
@given(st.data())
@pytest.mark.parametrize("route", list(ROUTES))
def test_odd_layouts_match_the_oracle(route: str, data: st.DataObject) -> None:
    stats = ROUTES[route]
    logits = data.draw(odd_views())
    shape = logits.shape
    lp = _log_probs_like(data.draw(odd_views(shape)))
    lq = _log_probs_like(data.draw(odd_views(shape, lp.dtype)))
    _check_one_input_statistics(stats, logits, lp)
    assert_close(stats.kl_divergence(lp, lq), oracle.kl_divergence(_f64(lp), _f64(lq)))
    assert_close(stats.total_variation(lp, lq), oracle.total_variation(_f64(lp), _f64(lq)))
    targets = _odd_ids(shape[0], shape[1], data.draw(st.integers(0, 2**16)))
    assert_close(
        stats.target_log_prob(lp, targets), oracle.target_log_prob(_f64(lp), targets.copy())
    )


def _odd_ids(rows: int, vocab: int, seed: int) -> np.ndarray:
    """int64 ids in a byte-strided, unaligned view."""
    buffer = bytearray(rows * 11 + 16)
    ids = np.ndarray((rows,), np.int64, buffer=buffer, offset=3, strides=(11,))
    ids[...] = np.random.default_rng(seed).integers(0, vocab, rows)
    return ids


@pytest.mark.parametrize("route", list(ROUTES))
def test_the_reported_byte_strided_view(route: str) -> None:
    raw = bytearray(np.random.default_rng(0).standard_normal(64).astype(np.float32).tobytes())
    view = np.ndarray((2, 4), np.float32, buffer=raw, strides=(24, 6))
    stats = ROUTES[route]
    assert_close(stats.logsumexp(view), oracle.logsumexp(_f64(view)))
    assert_close(stats.log_softmax(view), oracle.log_softmax(_f64(view)))


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_float_field_of_a_record_array(route: str) -> None:
    records = np.zeros(3, [("flag", "i1"), ("x", "f4", (5,))])
    records["x"] = np.random.default_rng(1).standard_normal((3, 5))
    lp = _log_probs_like(records["x"])
    assert lp.strides == (21, 4) and not lp.flags.aligned
    assert_close(ROUTES[route].entropy(lp), oracle.entropy(_f64(lp)))


@pytest.mark.parametrize("route", list(ROUTES))
def test_an_unaligned_contiguous_array_is_read(route: str) -> None:
    view = _byte_view((2, 6), np.float32, 4, 0, 1)
    view[...] = np.arange(12).reshape(2, 6)
    assert view.flags.c_contiguous and not view.flags.aligned
    assert_close(ROUTES[route].logsumexp(view), oracle.logsumexp(_f64(view)))


@pytest.mark.parametrize("route", list(ROUTES))
@pytest.mark.parametrize("dtype", [">i8", ">i4"])
def test_big_endian_ids_are_read(route: str, dtype: str) -> None:
    lp = oracle.log_softmax(np.random.default_rng(2).standard_normal((3, 7))).astype(np.float32)
    targets = np.array([6, 0, 3], dtype)
    stats = ROUTES[route]
    lp_in = lp if route == "core" else torch.from_numpy(lp)
    got = stats.target_rank(lp_in, targets)
    np.testing.assert_array_equal(np.asarray(got), oracle.target_rank(_f64(lp), targets))
    assert_close(stats.cross_entropy(lp_in, targets), -lp[np.arange(3), [6, 0, 3]])
