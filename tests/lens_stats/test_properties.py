"""Mathematical properties of the ``tuned_lens.lens_stats`` statistics, on hypothesis-drawn rows.

Example counts are bounded and the search is derandomised, so the file runs in seconds and gives
the same verdict on every run. Tolerances allow for float32 results.
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from tuned_lens import lens_stats as ls

LN2 = math.log(2.0)
TOL = 2e-6  # absolute slack for float32 results of order 1

FAST = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@st.composite
def logits(
    draw: st.DrawFn, *, shape: tuple[int, int] | None = None, masked: bool = True
) -> np.ndarray:
    """float32 logits (rows, V) in [-30, 30], some tokens masked to -inf (never a whole row)."""
    if shape is None:
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 64)))
    x = draw(arrays(np.float32, shape, elements=st.floats(-30, 30, width=32)))
    if masked and draw(st.booleans()):
        mask = draw(arrays(np.bool_, shape))
        mask[:, 0] = False
        x = np.where(mask, np.float32(-np.inf), x)
    return x


@st.composite
def log_prob_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two log-prob arrays of the same (rows, V) shape."""
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 64)))
    return (
        np.asarray(ls.log_softmax(draw(logits(shape=shape)))),
        np.asarray(ls.log_softmax(draw(logits(shape=shape)))),
    )


def _log_probs(x: np.ndarray) -> np.ndarray:
    return np.asarray(ls.log_softmax(x))


@FAST
@given(log_prob_pairs())
def test_kl_is_non_negative_and_zero_on_identical_inputs(
    pair: tuple[np.ndarray, np.ndarray],
) -> None:
    lp, lq = pair
    kl = np.asarray(ls.kl_divergence(lp, lq))
    assert (kl >= -TOL).all()
    np.testing.assert_allclose(ls.kl_divergence(lp, lp), 0.0, atol=TOL)
    sym = np.asarray(ls.symmetric_kl(lp, lq))
    assert (sym >= -TOL).all()
    np.testing.assert_allclose(sym, ls.symmetric_kl(lq, lp), rtol=1e-5, atol=TOL)
    np.testing.assert_allclose(
        sym, 0.5 * (kl + np.asarray(ls.kl_divergence(lq, lp))), rtol=1e-5, atol=TOL
    )


@FAST
@given(log_prob_pairs())
def test_js_is_bounded_symmetric_and_below_tv_ln2(pair: tuple[np.ndarray, np.ndarray]) -> None:
    lp, lq = pair
    js = np.asarray(ls.js_divergence(lp, lq))
    assert np.isfinite(js).all()
    assert ((js >= -TOL) & (js <= LN2 + TOL)).all()
    np.testing.assert_allclose(js, ls.js_divergence(lq, lp), rtol=1e-5, atol=TOL)
    np.testing.assert_allclose(ls.js_divergence(lp, lp), 0.0, atol=TOL)
    # JS(p, q) <= ln 2 · TV(p, q).
    assert (js <= LN2 * np.asarray(ls.total_variation(lp, lq)) + 1e-5).all()


@FAST
@given(log_prob_pairs())
def test_total_variation_and_max_abs_diff(pair: tuple[np.ndarray, np.ndarray]) -> None:
    lp, lq = pair
    tv = np.asarray(ls.total_variation(lp, lq))
    assert ((tv >= -TOL) & (tv <= 1 + TOL)).all()
    np.testing.assert_allclose(tv, ls.total_variation(lq, lp), rtol=1e-5, atol=TOL)
    # Σ(p - q) = 0, so every |p_v - q_v| is at most the positive (= negative) part, which is TV.
    mad = np.asarray(ls.max_abs_diff(lp, lq))
    assert ((mad >= 0) & (mad <= tv + 1e-5)).all()
    np.testing.assert_allclose(mad, ls.max_abs_diff(lq, lp), rtol=1e-6, atol=TOL)
    # Pinsker: KL >= 2 TV².
    kl = np.asarray(ls.kl_divergence(lp, lq))
    assert (kl >= 2 * tv.astype(np.float64) ** 2 - 1e-5).all()


@FAST
@given(logits())
def test_entropy_is_between_zero_and_log_vocab(x: np.ndarray) -> None:
    lp = _log_probs(x)
    vocab = x.shape[-1]
    h = np.asarray(ls.entropy(lp))
    assert ((h >= -TOL) & (h <= math.log(vocab) + 1e-5)).all()
    np.testing.assert_allclose(ls.entropy_from_logits(x), h, rtol=1e-5, atol=1e-5)


@FAST
@given(logits(), st.data())
def test_ranks(x: np.ndarray, data: st.DataObject) -> None:
    lp = _log_probs(x)
    vocab = x.shape[-1]
    _, best = ls.max_probability(lp)
    np.testing.assert_array_equal(ls.target_rank(lp, best), 1)
    targets = data.draw(arrays(np.int64, x.shape[:-1], elements=st.integers(0, vocab - 1)))
    ranks = np.asarray(ls.target_rank(lp, targets))
    assert ((ranks >= 1) & (ranks <= vocab)).all()
    # The rank counts strictly larger entries: a token ranks below every strictly likelier one.
    at_target = np.take_along_axis(lp, targets[..., None], axis=-1)
    np.testing.assert_array_equal(ranks, 1 + (lp > at_target).sum(axis=-1))


@FAST
@given(logits(), st.integers(1, 64))
def test_top_k_is_sorted_distinct_and_starts_at_the_max(x: np.ndarray, k: int) -> None:
    lp = _log_probs(x)
    k = min(k, x.shape[-1])
    ids, probs = (np.asarray(a) for a in ls.top_k(lp, k))
    assert ids.shape == probs.shape == x.shape[:-1] + (k,)
    for row in ids.reshape(-1, k):
        assert len(set(row.tolist())) == k
    assert (np.diff(probs, axis=-1) <= 0).all()
    max_prob, _ = ls.max_probability(lp)
    np.testing.assert_allclose(probs[..., 0], max_prob, rtol=1e-6, atol=1e-7)
    # Every probability left out is no larger than the last one kept.
    p = np.exp(lp.astype(np.float64))
    left_out = p.copy()
    np.put_along_axis(left_out, ids, -1.0, axis=-1)
    assert (left_out.max(axis=-1) <= probs[..., -1] * (1 + 1e-5) + 1e-7).all()


@FAST
@given(log_prob_pairs(), st.integers(1, 16))
def test_top_k_delta_is_sorted_by_magnitude(pair: tuple[np.ndarray, np.ndarray], k: int) -> None:
    lp, lq = pair
    k = min(k, lp.shape[-1])
    ids, deltas = (np.asarray(a) for a in ls.top_k_delta(lp, lq, k))
    for row in ids.reshape(-1, k):
        assert len(set(row.tolist())) == k
    assert (np.diff(np.abs(deltas), axis=-1) <= 1e-7).all()
    np.testing.assert_allclose(
        np.abs(deltas[..., 0]), ls.max_abs_diff(lp, lq), rtol=1e-5, atol=1e-7
    )


@FAST
@given(logits())
def test_log_softmax_rows_sum_to_one(x: np.ndarray) -> None:
    lp = _log_probs(x)
    assert lp.dtype == np.float32
    np.testing.assert_allclose(np.exp(lp.astype(np.float64)).sum(axis=-1), 1.0, rtol=0, atol=1e-5)
    assert (lp <= TOL).all()
    np.testing.assert_allclose(ls.logsumexp(lp), 0.0, atol=1e-5)


@FAST
@given(logits(masked=False), st.integers(-16, 16))
def test_shift_invariance_of_logits(x: np.ndarray, shift: int) -> None:
    shifted = (x.astype(np.float64) + shift).astype(np.float32)  # rounding error <= 2e-6
    np.testing.assert_allclose(ls.log_softmax(shifted), ls.log_softmax(x), rtol=0, atol=2e-5)
    np.testing.assert_allclose(
        ls.entropy_from_logits(shifted), ls.entropy_from_logits(x), rtol=1e-4, atol=2e-5
    )
    np.testing.assert_allclose(ls.logsumexp(shifted), ls.logsumexp(x) + shift, rtol=1e-6, atol=2e-5)
    prob_shifted, _ = ls.max_probability(shifted, from_logits=True)
    prob, _ = ls.max_probability(x, from_logits=True)
    np.testing.assert_allclose(prob_shifted, prob, rtol=1e-4, atol=1e-6)


@FAST
@given(logits(), st.data())
def test_target_statistics_agree(x: np.ndarray, data: st.DataObject) -> None:
    lp = _log_probs(x)
    vocab = x.shape[-1]
    targets = data.draw(arrays(np.int64, x.shape[:-1], elements=st.integers(0, vocab - 1)))
    anti = data.draw(arrays(np.int64, x.shape[:-1], elements=st.integers(0, vocab - 1)))
    tlp = np.asarray(ls.target_log_prob(lp, targets))
    np.testing.assert_array_equal(tlp, np.take_along_axis(lp, targets[..., None], -1)[..., 0])
    np.testing.assert_array_equal(ls.cross_entropy(lp, targets), -tlp)
    with np.errstate(invalid="ignore"):  # -inf - -inf where both tokens are masked
        expected = tlp - np.asarray(ls.target_log_prob(lp, anti))
    np.testing.assert_allclose(ls.log_prob_diff(lp, targets, anti), expected)


@FAST
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 32), st.data())
def test_forward_kl_is_kl_against_the_broadcast_reference(
    layers: int, positions: int, vocab: int, data: st.DataObject
) -> None:
    lp = _log_probs(data.draw(logits(shape=(layers * positions, vocab)))).reshape(
        layers, positions, vocab
    )
    reference = _log_probs(data.draw(logits(shape=(positions, vocab))))
    expected = ls.kl_divergence(np.broadcast_to(reference, lp.shape).copy(), lp)
    np.testing.assert_allclose(ls.forward_kl(lp, reference), expected, rtol=1e-5, atol=TOL)
    sum_p, sum_lp, n_rows = ls.marginal_sums(lp)
    assert n_rows == layers * positions
    np.testing.assert_allclose(sum_p.sum(), n_rows, rtol=1e-5)
