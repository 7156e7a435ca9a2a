"""Contract checks shared by test_oracle.py (the Rust core) and test_torch_twin.py (the twin).

Every ``case_*`` function takes the statistics module under test (``tuned_lens.lens_stats``, or
an adapter around the torch twin ``tuned_lens.lens_stats._torch`` that speaks numpy) and compares it with the float64
numpy oracle: 1e-5 relative or 1e-6 absolute; ids and ranks exactly (up to near-ties, see
``_stats_inputs.assert_top_k``). The test files hold the parametrisations.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from types import ModuleType
from typing import Any

import _oracle as oracle
import numpy as np
import pytest
import torch
from _stats_inputs import (
    DTYPES,
    PairInputs,
    assert_close,
    assert_top_k,
    make_inputs,
    to_numpy,
)

# tuned_lens.lens_stats, or anything with the same functions and exception classes.
StatsModule = ModuleType | Any

VOCABS = (1, 2, 7, 1000, 50304, 262144)
K = 10


def rows_shape_for(vocab: int) -> tuple[int, ...]:
    """Several leading axes, but few rows for the big vocabularies (tests stay fast)."""
    if vocab <= 1000:
        return (2, 3, 4)
    if vocab <= 50304:
        return (2, 3, 2)
    return (2, 2)


@lru_cache(maxsize=16)
def cached_inputs(vocab: int, dtype: str) -> PairInputs:
    return make_inputs(rows_shape_for(vocab), vocab, dtype, seed=vocab)


# Each check_* function calls one function of the module under test and returns a list of
# (kind, actual, expected) comparisons against the oracle.
Check = tuple[str, object, object]


def _float(actual: object, expected: np.ndarray) -> list[Check]:
    return [("float", actual, expected)]


def _divergence(actual: object, expected: np.ndarray) -> list[Check]:
    """A divergence: a kernel may clamp it at 0 (see run_checks)."""
    return [("divergence", actual, expected)]


def check_log_softmax(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _float(ls.log_softmax(d.logits), oracle.log_softmax(d.logits64))


def check_logsumexp(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _float(ls.logsumexp(d.logits), oracle.logsumexp(d.logits64))


def check_entropy(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _float(ls.entropy(d.lp), oracle.entropy(d.lp64))


def check_entropy_from_logits(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _float(ls.entropy_from_logits(d.logits), oracle.entropy_from_logits(d.logits64))


def _max_probability_checks(prob, ids, lp64: np.ndarray) -> list[Check]:
    exp_prob, _ = oracle.max_probability(lp64)
    ids = to_numpy(ids)
    # The id must attain the row maximum (the first one on exact ties).
    at_id = np.take_along_axis(lp64, ids[..., None].astype(np.int64), axis=-1)[..., 0]
    return [
        ("float", prob, exp_prob),
        ("equal", at_id, lp64.max(axis=-1)),
        ("equal", ids, np.argmax(lp64 == lp64.max(axis=-1, keepdims=True), axis=-1)),
        ("dtype-int64", ids, None),
    ]


def check_max_probability(ls: StatsModule, d: PairInputs) -> list[Check]:
    prob, ids = ls.max_probability(d.lp)
    return _max_probability_checks(prob, ids, d.lp64)


def check_max_probability_from_logits(ls: StatsModule, d: PairInputs) -> list[Check]:
    prob, ids = ls.max_probability(d.logits, from_logits=True)
    return _max_probability_checks(prob, ids, oracle.log_softmax(d.logits64))


def check_target_log_prob(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _float(ls.target_log_prob(d.lp, d.targets), oracle.target_log_prob(d.lp64, d.targets))


def check_cross_entropy(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _float(ls.cross_entropy(d.lp, d.targets), oracle.cross_entropy(d.lp64, d.targets))


def check_log_prob_diff(ls: StatsModule, d: PairInputs) -> list[Check]:
    got = ls.log_prob_diff(d.lp, d.targets, d.anti_targets)
    return _float(got, oracle.log_prob_diff(d.lp64, d.targets, d.anti_targets))


def check_target_rank(ls: StatsModule, d: PairInputs) -> list[Check]:
    got = ls.target_rank(d.lp, d.targets)
    return [("int64", got, oracle.target_rank(d.lp64, d.targets))]


def check_kl_divergence(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _divergence(ls.kl_divergence(d.lp, d.lq), oracle.kl_divergence(d.lp64, d.lq64))


def check_js_divergence(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _divergence(ls.js_divergence(d.lp, d.lq), oracle.js_divergence(d.lp64, d.lq64))


def check_symmetric_kl(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _divergence(ls.symmetric_kl(d.lp, d.lq), oracle.symmetric_kl(d.lp64, d.lq64))


def check_total_variation(ls: StatsModule, d: PairInputs) -> list[Check]:
    got = ls.total_variation(d.lp, d.lq)
    return _float(got, oracle.total_variation(d.lp64, d.lq64))


def check_max_abs_diff(ls: StatsModule, d: PairInputs) -> list[Check]:
    return _float(ls.max_abs_diff(d.lp, d.lq), oracle.max_abs_diff(d.lp64, d.lq64))


def check_forward_kl(ls: StatsModule, d: PairInputs) -> list[Check]:
    # Layers on axis -3; the reference is one (T, V) slab per leading index, taken from q.
    reference = _take_layer(d.lq, 0)
    got = ls.forward_kl(d.lp, reference)
    return _divergence(got, oracle.forward_kl(d.lp64, d.lq64[..., 0, :, :]))


def check_top_k(ls: StatsModule, d: PairInputs) -> list[Check]:
    k = min(K, d.lp64.shape[-1])
    ids, probs = ls.top_k(d.lp, k)
    p = np.exp(d.lp64)
    return [("top_k", (ids, probs, k), (p, p))]


def check_top_k_delta(ls: StatsModule, d: PairInputs) -> list[Check]:
    k = min(K, d.lp64.shape[-1])
    ids, deltas = ls.top_k_delta(d.lp, d.lq, k)
    delta = np.exp(d.lq64) - np.exp(d.lp64)
    return [("top_k", (ids, deltas, k), (np.abs(delta), delta))]


def check_marginal_sums(ls: StatsModule, d: PairInputs) -> list[Check]:
    sum_p, sum_lp, n_rows = ls.marginal_sums(d.lp)
    exp_p, exp_lp, exp_n = oracle.marginal_sums(d.lp64)
    return [
        ("float64", sum_p, exp_p),
        ("float64", sum_lp, exp_lp),
        ("equal", np.asarray(n_rows), np.asarray(exp_n)),
    ]


def _take_layer(x: object, layer: int) -> object:
    """x[..., layer, :, :] for numpy arrays and torch tensors alike (a contiguous copy)."""
    if isinstance(x, torch.Tensor):
        return x[..., layer, :, :].contiguous()
    return np.ascontiguousarray(np.asarray(x)[..., layer, :, :])


OTHER_DTYPES = tuple(d for d in DTYPES if d != "float32")
OTHER_DTYPE_VOCABS = (2, 7, 1000, 50304)
LOW_PRECISION = ("float16", "bfloat16-torch", "bfloat16-bits")
VIEWS = (
    "transposed-rows",
    "strided-vocab",
    "vocab-not-last-in-memory",
    "row-slice",
    "torch-transposed",
    "torch-strided-vocab",
)

CHECKS: dict[str, Callable[[StatsModule, PairInputs], list[Check]]] = {
    name.removeprefix("check_"): fn for name, fn in globals().items() if name.startswith("check_")
}
CHECK_NAMES = sorted(CHECKS)


def run_checks(checks: list[Check], what: str) -> None:
    for kind, actual, expected in checks:
        if kind == "float":
            assert_close(actual, expected, what=what)
        elif kind == "divergence":
            # Quantised (float16/bfloat16) log-probs are not exactly normalised, so the plain
            # formula can dip below 0; a kernel that clamps divergences at 0 is accepted there.
            clamped = (np.asarray(expected) < 0) & (to_numpy(actual) == 0)
            assert_close(actual, np.where(clamped, 0.0, expected), what=what)
        elif kind == "float64":
            assert_close(actual, expected, dtype=np.float64, what=what)
        elif kind == "int64":
            got = to_numpy(actual)
            assert got.dtype == np.int64, f"{what}: dtype {got.dtype}"
            np.testing.assert_array_equal(got, expected, err_msg=what)
        elif kind == "equal":
            np.testing.assert_array_equal(to_numpy(actual), expected, err_msg=what)
        elif kind == "dtype-int64":
            assert to_numpy(actual).dtype == np.int64, f"{what}: dtype {to_numpy(actual).dtype}"
        elif kind == "top_k":
            ids, values, k = actual
            key, value = expected
            assert_top_k(ids, values, key, value, k, what=what)
        else:  # pragma: no cover - a typo in this file
            raise AssertionError(kind)


def case_float32_every_vocab(ls: StatsModule, name: str, vocab: int) -> None:
    run_checks(CHECKS[name](ls, cached_inputs(vocab, "float32")), f"{name} V={vocab}")


def case_other_dtypes(ls: StatsModule, name: str, vocab: int, dtype: str) -> None:
    run_checks(CHECKS[name](ls, cached_inputs(vocab, dtype)), f"{name} V={vocab} {dtype}")


def case_big_vocab_low_precision(ls: StatsModule, dtype: str) -> None:
    data = cached_inputs(262144, dtype)
    for name in ("entropy", "kl_divergence", "target_rank", "top_k", "log_softmax"):
        run_checks(CHECKS[name](ls, data), f"{name} V=262144 {dtype}")


def case_full_precision_float64_values(ls: StatsModule) -> None:
    """float64 inputs that float32 cannot hold exactly still match (value statistics)."""
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((3, 5, 1000)) * 2.5
    lp = oracle.log_softmax(logits)
    lq = oracle.log_softmax(logits + rng.standard_normal(logits.shape))
    assert_close(ls.log_softmax(logits), lp)
    assert_close(ls.entropy(lp), oracle.entropy(lp))
    assert_close(ls.entropy_from_logits(logits), oracle.entropy(lp))
    assert_close(ls.kl_divergence(lp, lq), oracle.kl_divergence(lp, lq))
    assert_close(ls.js_divergence(lp, lq), oracle.js_divergence(lp, lq))
    assert_close(ls.total_variation(lp, lq), oracle.total_variation(lp, lq))


def case_target_dtypes_and_broadcast(ls: StatsModule, target_dtype: str) -> None:
    data = cached_inputs(1000, "float32")  # rows (2, 3, 4)
    targets = data.targets.astype(target_dtype)
    assert_close(ls.cross_entropy(data.lp, targets), oracle.cross_entropy(data.lp64, targets))
    np.testing.assert_array_equal(
        ls.target_rank(data.lp, targets), oracle.target_rank(data.lp64, targets)
    )
    # One target row per position, broadcast over the two leading axes.
    per_position = data.targets[0, 0].astype(target_dtype)  # (4,)
    assert_close(
        ls.target_log_prob(data.lp, per_position),
        oracle.target_log_prob(data.lp64, per_position),
    )
    # (B, T) targets against (B, L, T, V) log-probs need the layer axis inserted.
    per_batch = data.targets[:, 0, :].astype(target_dtype)  # (2, 4)
    np.testing.assert_array_equal(
        ls.target_rank(data.lp, per_batch[:, None, :]),
        oracle.target_rank(data.lp64, per_batch[:, None, :]),
    )
    anti = data.anti_targets.astype(target_dtype)
    assert_close(
        ls.log_prob_diff(data.lp, targets, anti),
        oracle.log_prob_diff(data.lp64, targets, anti),
    )


def case_target_ids_are_range_checked(ls: StatsModule, bad: int) -> None:
    data = cached_inputs(1000, "float32")
    targets = data.targets.copy()
    targets[1, 2, 3] = bad
    for fn in (ls.target_log_prob, ls.cross_entropy, ls.target_rank):
        with pytest.raises(ls.TargetIndexError):
            fn(data.lp, targets)
        with pytest.raises(IndexError):
            fn(data.lp, targets)


def case_log_softmax_out(ls: StatsModule) -> None:
    data = cached_inputs(1000, "float32")
    out = np.full(data.logits64.shape, np.nan, dtype=np.float32)
    result = ls.log_softmax(data.logits, out=out)
    assert np.shares_memory(to_numpy(result), out)
    assert_close(out, oracle.log_softmax(data.logits64))
    # Writing into the same buffer again (any dtype of input) overwrites it completely.
    half = data.logits64.astype(np.float16)
    ls.log_softmax(half, out=out)
    assert_close(out, oracle.log_softmax(half.astype(np.float64)))


def _views(x32: np.ndarray) -> dict[str, tuple[object, np.ndarray]]:
    """Non-contiguous views of the same (A, B, V) data, numpy and torch."""
    base_t = np.ascontiguousarray(np.swapaxes(x32, 0, 1))  # (B, A, V)
    wide = np.repeat(x32, 2, axis=-1)  # (A, B, 2V): every other column is x
    vocab_major = np.ascontiguousarray(np.moveaxis(x32, -1, 0))  # (V, A, B)
    views = {
        "transposed-rows": np.swapaxes(base_t, 0, 1),
        "strided-vocab": wide[..., ::2],
        "vocab-not-last-in-memory": np.moveaxis(vocab_major, 0, -1),
        "row-slice": np.repeat(x32, 2, axis=0)[::2],
        "torch-transposed": torch.from_numpy(base_t).transpose(0, 1),
        "torch-strided-vocab": torch.from_numpy(wide)[..., ::2],
    }
    for name, v in views.items():
        arr = to_numpy(v)
        assert not arr.flags.c_contiguous, name
        np.testing.assert_array_equal(arr, x32)
    return {name: (v, x32.astype(np.float64)) for name, v in views.items()}


def case_non_contiguous_inputs(ls: StatsModule, view: str) -> None:
    data = cached_inputs(1000, "float32")
    lp32 = data.lp64[0].astype(np.float32)  # (3, 4, V)
    lq32 = data.lq64[0].astype(np.float32)
    (lp, lp64), (lq, lq64) = _views(lp32)[view], _views(lq32)[view]
    logits, logits64 = _views(data.logits64[0].astype(np.float32))[view]
    targets = data.targets[0]
    assert_close(ls.log_softmax(logits), oracle.log_softmax(logits64))
    assert_close(ls.entropy(lp), oracle.entropy(lp64))
    assert_close(ls.kl_divergence(lp, lq), oracle.kl_divergence(lp64, lq64))
    assert_close(ls.total_variation(lp, lq), oracle.total_variation(lp64, lq64))
    assert_close(ls.cross_entropy(lp, targets), oracle.cross_entropy(lp64, targets))
    np.testing.assert_array_equal(ls.target_rank(lp, targets), oracle.target_rank(lp64, targets))
    ids, probs = ls.top_k(lp, K)
    p = np.exp(lp64)
    assert_top_k(ids, probs, p, p, K, what=view)
    # lp is (L=3, T=4, V); the reference (T, V) is q's first layer (a view, not contiguous
    # for every encoding).
    reference = lq[0]
    assert_close(ls.forward_kl(lp, reference), oracle.forward_kl(lp64, lq64[0]))


def _masked_log_probs(vocab: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Log-probs (4, 5, V) with about a third of the tokens masked to -inf (never a whole row)."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((4, 5, vocab)).astype(np.float32) * 3
    mask = rng.random(logits.shape) < 0.35
    mask[..., 0] = False
    logits[mask] = -np.inf
    return logits, oracle.log_softmax(logits.astype(np.float64)).astype(np.float32)


def case_masked_tokens(ls: StatsModule, vocab: int) -> None:
    logits, lp = _masked_log_probs(vocab, seed=vocab)
    _, lq = _masked_log_probs(vocab, seed=vocab + 1)
    lp64, lq64, logits64 = lp.astype(np.float64), lq.astype(np.float64), logits.astype(np.float64)
    targets = np.random.default_rng(3).integers(0, vocab, size=lp.shape[:-1])
    assert_close(ls.log_softmax(logits), oracle.log_softmax(logits64))
    assert_close(ls.logsumexp(logits), oracle.logsumexp(logits64))
    assert_close(ls.entropy(lp), oracle.entropy(lp64))
    assert np.isfinite(ls.entropy(lp)).all()
    assert_close(ls.entropy_from_logits(logits), oracle.entropy(lp64))
    assert_close(ls.cross_entropy(lp, targets), oracle.cross_entropy(lp64, targets))
    np.testing.assert_array_equal(ls.target_rank(lp, targets), oracle.target_rank(lp64, targets))
    # Masks differ between p and q: KL is +inf wherever q has a -inf under p > 0.
    assert_close(ls.kl_divergence(lp, lq), oracle.kl_divergence(lp64, lq64))
    assert_close(ls.kl_divergence(lp, lp), np.zeros(lp.shape[:-1]))
    assert_close(ls.symmetric_kl(lp, lq), oracle.symmetric_kl(lp64, lq64))
    assert_close(ls.js_divergence(lp, lq), oracle.js_divergence(lp64, lq64))
    assert_close(ls.total_variation(lp, lq), oracle.total_variation(lp64, lq64))
    assert_close(ls.max_abs_diff(lp, lq), oracle.max_abs_diff(lp64, lq64))
    assert_close(ls.forward_kl(lp, lp[-1]), oracle.forward_kl(lp64, lp64[-1]))
    k = min(K, vocab)
    ids, probs = ls.top_k(lp, k)
    assert_top_k(ids, probs, np.exp(lp64), np.exp(lp64), k)
    ids, deltas = ls.top_k_delta(lp, lq, k)
    delta = np.exp(lq64) - np.exp(lp64)
    assert_top_k(ids, deltas, np.abs(delta), delta, k)


def case_q_zero_under_positive_p_gives_inf(ls: StatsModule) -> None:
    lp = np.log(np.array([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]], dtype=np.float32))
    lq = lp.copy()
    with np.errstate(divide="ignore"):
        lq[0] = np.log(np.array([0.5, 0.5, 0.0], dtype=np.float32))
    kl = to_numpy(ls.kl_divergence(lp, lq))
    assert kl[0] == np.inf and kl[1] == 0.0
    # The other direction is finite: q's zero-probability token contributes 0 log 0 = 0.
    assert_close(ls.kl_divergence(lq, lp), oracle.kl_divergence(lq.astype(float), lp.astype(float)))
    assert to_numpy(ls.symmetric_kl(lp, lq))[0] == np.inf
    js = to_numpy(ls.js_divergence(lp, lq))
    assert np.isfinite(js).all()
    assert_close(js, oracle.js_divergence(lp.astype(float), lq.astype(float)))
    # forward KL: the reference puts mass where the row has none.
    stacked = np.stack([lq, lp])  # (L=2, T=2, V)
    fkl = to_numpy(ls.forward_kl(stacked, lp))
    assert fkl[0, 0] == np.inf and np.isfinite(fkl[1]).all()


def case_nan_row_is_nan_only_there(ls: StatsModule) -> None:
    data = cached_inputs(1000, "float32")
    lp64 = data.lp64.copy()
    lp64[1, 2, 3, 17] = np.nan
    lp = lp64.astype(np.float32)
    logits64 = data.logits64.copy()
    logits64[1, 2, 3, 17] = np.nan
    logits = logits64.astype(np.float32)
    lq64 = data.lq64
    lq = lq64.astype(np.float32)
    nan_row = np.zeros(lp.shape[:-1], dtype=bool)
    nan_row[1, 2, 3] = True
    for what, got, exp in (
        ("entropy", ls.entropy(lp), oracle.entropy(lp64)),
        ("logsumexp", ls.logsumexp(logits), oracle.logsumexp(logits64)),
        ("entropy_from_logits", ls.entropy_from_logits(logits), None),
        ("max_probability", ls.max_probability(lp)[0], None),
        ("kl p", ls.kl_divergence(lp, lq), oracle.kl_divergence(lp64, lq64)),
        ("kl q", ls.kl_divergence(lq, lp), oracle.kl_divergence(lq64, lp64)),
        ("js", ls.js_divergence(lp, lq), oracle.js_divergence(lp64, lq64)),
        ("symmetric_kl", ls.symmetric_kl(lp, lq), oracle.symmetric_kl(lp64, lq64)),
        ("tv", ls.total_variation(lp, lq), oracle.total_variation(lp64, lq64)),
        ("max_abs_diff", ls.max_abs_diff(lp, lq), oracle.max_abs_diff(lp64, lq64)),
    ):
        got = to_numpy(got)
        np.testing.assert_array_equal(np.isnan(got), nan_row, err_msg=what)
        if exp is not None:
            assert_close(got, exp, what=what)
    np.testing.assert_array_equal(np.isnan(to_numpy(ls.log_softmax(logits))).all(axis=-1), nan_row)
    # Statistics that do not read the NaN row's values stay right elsewhere.
    fkl = to_numpy(ls.forward_kl(lp, lq[:, -1]))
    exp_fkl = oracle.forward_kl(lp64, lq64[:, -1])
    np.testing.assert_array_equal(np.isnan(fkl), nan_row)
    assert_close(fkl, exp_fkl)
    ranks = to_numpy(ls.target_rank(lp, data.targets))
    np.testing.assert_array_equal(ranks[~nan_row], oracle.target_rank(lp64, data.targets)[~nan_row])
    ids, probs = ls.top_k(lp, K)
    p = np.exp(lp64[~nan_row])
    assert_top_k(to_numpy(ids)[~nan_row], to_numpy(probs)[~nan_row], p, p, K)


def case_marginal_sums_merge_across_batches(ls: StatsModule) -> None:
    data = cached_inputs(1000, "float32")
    sum_p, sum_lp, n = ls.marginal_sums(data.lp)
    parts = [ls.marginal_sums(data.lp[i]) for i in range(2)]
    assert n == sum(part[2] for part in parts) == 24
    np.testing.assert_allclose(sum(part[0] for part in parts), sum_p, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sum(part[1] for part in parts), sum_lp, rtol=1e-12, atol=1e-9)


def case_vocab_of_one(ls: StatsModule) -> None:
    lp = np.zeros((3, 2, 1), dtype=np.float32)
    assert_close(ls.entropy(lp), np.zeros((3, 2)))
    np.testing.assert_array_equal(ls.target_rank(lp, np.zeros((3, 2), np.int64)), 1)
    ids, probs = ls.top_k(lp, 1)
    np.testing.assert_array_equal(ids, np.zeros((3, 2, 1), np.int64))
    assert_close(probs, np.ones((3, 2, 1)))
