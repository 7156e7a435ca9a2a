"""Hand-computed values through the public ``tuned_lens.lens_stats`` API, and every input form
(torch CPU tensors, float16, bfloat16, float64, non-contiguous) agreeing with float32."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from tuned_lens import lens_stats as ls

LN = np.log


def lp_rows(*rows: list[float]) -> np.ndarray:
    """Log-probabilities from explicit probabilities (0 -> -inf)."""
    with np.errstate(divide="ignore"):
        return LN(np.array(rows, dtype=np.float64)).astype(np.float32)


def test_log_softmax_logsumexp_entropy() -> None:
    x = np.array([[0.0, LN(2.0), LN(3.0)]], np.float32)
    np.testing.assert_allclose(ls.logsumexp(x), [LN(6.0)], rtol=1e-6)
    np.testing.assert_allclose(ls.log_softmax(x), LN([[1 / 6, 2 / 6, 3 / 6]]), rtol=1e-6)
    np.testing.assert_allclose(
        ls.entropy_from_logits(x), [-sum(p * LN(p) for p in (1 / 6, 1 / 3, 0.5))], rtol=1e-6
    )
    lp = lp_rows([0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25])
    np.testing.assert_allclose(ls.entropy(lp), [LN(2.0), LN(4.0)], rtol=1e-6)


def test_max_probability_and_targets() -> None:
    lp = lp_rows([0.2, 0.5, 0.3], [0.4, 0.2, 0.4])
    prob, ids = ls.max_probability(lp)
    np.testing.assert_allclose(prob, [0.5, 0.4], rtol=1e-6)
    assert ids.dtype == np.int64 and ids.tolist() == [1, 0]
    prob, ids = ls.max_probability(np.array([[1.0, 3.0, 2.0]], np.float32), from_logits=True)
    np.testing.assert_allclose(prob, [math.e**3 / (math.e + math.e**3 + math.e**2)], rtol=1e-6)
    assert ids.tolist() == [1]
    targets = np.array([2, 1])
    np.testing.assert_allclose(ls.target_log_prob(lp, targets), LN([0.3, 0.2]), rtol=1e-6)
    np.testing.assert_allclose(ls.cross_entropy(lp, targets), -LN([0.3, 0.2]), rtol=1e-6)
    np.testing.assert_allclose(
        ls.log_prob_diff(lp, targets, np.array([0, 0])), LN([1.5, 0.5]), rtol=1e-6
    )
    ranks = ls.target_rank(lp, np.array([0, 2]))
    assert ranks.dtype == np.int64 and ranks.tolist() == [3, 1]  # the tie shares rank 1


def test_divergences() -> None:
    p, q = lp_rows([0.5, 0.5]), lp_rows([0.25, 0.75])
    kl = 0.5 * LN(0.5 / 0.25) + 0.5 * LN(0.5 / 0.75)
    kl_rev = 0.25 * LN(0.25 / 0.5) + 0.75 * LN(0.75 / 0.5)
    m = np.array([0.375, 0.625])
    pp, qq = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    js = 0.5 * (pp * LN(pp / m)).sum() + 0.5 * (qq * LN(qq / m)).sum()
    np.testing.assert_allclose(ls.kl_divergence(p, q), [kl], rtol=1e-5)
    np.testing.assert_allclose(ls.symmetric_kl(p, q), [0.5 * (kl + kl_rev)], rtol=1e-5)
    np.testing.assert_allclose(ls.js_divergence(p, q), [js], rtol=1e-5)
    np.testing.assert_allclose(ls.total_variation(p, q), [0.25], rtol=1e-6)
    np.testing.assert_allclose(ls.max_abs_diff(p, q), [0.25], rtol=1e-6)
    # q = 0 < p: infinite KL; disjoint supports: maximal JS and TV.
    a, b = lp_rows([1.0, 0.0]), lp_rows([0.0, 1.0])
    assert ls.kl_divergence(a, b)[0] == np.inf
    np.testing.assert_allclose(ls.js_divergence(a, b), [LN(2.0)], rtol=1e-6)
    assert ls.total_variation(a, b)[0] == 1.0


def test_forward_kl_broadcasts_the_reference() -> None:
    rng = np.random.default_rng(0)
    lp = ls.log_softmax(rng.standard_normal((2, 3, 4, 9)).astype(np.float32))  # (B, L, T, V)
    ref = ls.log_softmax(rng.standard_normal((2, 4, 9)).astype(np.float32))  # (B, T, V)
    got = ls.forward_kl(lp, ref)
    assert got.shape == (2, 3, 4)
    want = ls.kl_divergence(np.broadcast_to(ref[:, None], lp.shape), lp)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_top_k_and_top_k_delta() -> None:
    lp = lp_rows([0.1, 0.4, 0.4, 0.1])
    ids, probs = ls.top_k(lp, 3)
    assert ids.tolist() == [[1, 2, 0]]
    np.testing.assert_allclose(probs, [[0.4, 0.4, 0.1]], rtol=1e-6)
    ids, deltas = ls.top_k_delta(lp_rows([0.5, 0.25, 0.25]), lp_rows([0.25, 0.5, 0.25]), 2)
    assert ids.tolist() == [[0, 1]]
    np.testing.assert_allclose(deltas, [[-0.25, 0.25]], rtol=1e-6)


def test_marginal_sums_merge_across_batches() -> None:
    lp = ls.log_softmax(np.random.default_rng(1).standard_normal((6, 11)).astype(np.float32))
    whole = ls.marginal_sums(lp)
    first, second = ls.marginal_sums(lp[:2]), ls.marginal_sums(lp[2:])
    assert whole[2] == 6 and first[2] + second[2] == 6
    np.testing.assert_allclose(first[0] + second[0], whole[0], rtol=1e-12)
    np.testing.assert_allclose(first[1] + second[1], whole[1], rtol=1e-12)
    np.testing.assert_allclose(whole[0], np.exp(lp.astype(np.float64)).sum(0), rtol=1e-6)
    assert whole[0].dtype == np.float64


def test_out_writes_in_place() -> None:
    x = np.random.default_rng(2).standard_normal((3, 4, 10)).astype(np.float32)
    out = np.full_like(x, np.nan)
    result = ls.log_softmax(x, out=out)
    assert result is out
    np.testing.assert_allclose(out, ls.log_softmax(x), rtol=0, atol=0)


def test_targets_broadcast() -> None:
    lp = ls.log_softmax(np.random.default_rng(3).standard_normal((3, 4, 7)).astype(np.float32))
    t = np.array([0, 6, 2, 3], dtype=np.int32)
    got = ls.target_log_prob(lp, t)  # (4,) broadcasts to (3, 4)
    np.testing.assert_array_equal(
        got, np.take_along_axis(lp, np.broadcast_to(t, (3, 4))[..., None], -1)[..., 0]
    )
    assert ls.target_rank(lp, np.int64(1)).shape == (3, 4)


STATISTICS = {
    "entropy": lambda x, y: ls.entropy(x),
    "entropy_from_logits": lambda x, y: ls.entropy_from_logits(x),
    "logsumexp": lambda x, y: ls.logsumexp(x),
    "log_softmax": lambda x, y: ls.log_softmax(x),
    "max_probability": lambda x, y: ls.max_probability(x),
    "target_rank": lambda x, y: ls.target_rank(x, np.arange(4) % 3),
    "kl_divergence": lambda x, y: ls.kl_divergence(x, y),
    "js_divergence": lambda x, y: ls.js_divergence(x, y),
    "top_k": lambda x, y: ls.top_k(x, 3),
    "top_k_delta": lambda x, y: ls.top_k_delta(x, y, 3),
    "marginal_sums": lambda x, y: ls.marginal_sums(x)[:2],
}


def representable_log_probs(seed: int) -> np.ndarray:
    """(4, 40) values exact in float16 and bfloat16 (multiples of 1/8 in [-12, 0])."""
    rng = np.random.default_rng(seed)
    return (-np.floor(rng.uniform(0, 96, (4, 40))) / 8).astype(np.float32)


def assert_same(a: object, b: object) -> None:
    if isinstance(a, tuple):
        for x, y in zip(a, b):  # type: ignore[arg-type]
            assert_same(x, y)
        return
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    return (x.view(np.uint32) >> 16).astype(np.uint16)


@pytest.mark.parametrize("name", STATISTICS)
def test_every_input_form_agrees_with_float32(name: str) -> None:
    x, y = representable_log_probs(0), representable_log_probs(1)
    call = STATISTICS[name]
    want = call(x, y)
    forms = {
        "torch": (torch.from_numpy(x), torch.from_numpy(y)),
        "float16": (x.astype(np.float16), y.astype(np.float16)),
        "torch bfloat16": (torch.from_numpy(x).bfloat16(), torch.from_numpy(y).bfloat16()),
        "uint16 bits": (to_bf16_bits(x), to_bf16_bits(y)),
        "float64": (x.astype(np.float64), y.astype(np.float64)),
        "strided": (np.repeat(x, 2, axis=-1)[..., ::2], np.repeat(y, 2, axis=-1)[..., ::2]),
        "fortran": (np.asfortranarray(x), np.asfortranarray(y)),
        "torch transposed": (torch.from_numpy(x.T.copy()).T, torch.from_numpy(y.T.copy()).T),
        "list": (x.tolist(), y.tolist()),
    }
    for form, (a, b) in forms.items():
        got = call(a, b)
        try:
            assert_same(got, want)
        except AssertionError as err:
            raise AssertionError(f"{name} on {form} input") from err


def test_torch_bfloat16_is_read_without_widening() -> None:
    t = torch.randn(3, 50).log_softmax(-1).bfloat16()
    np.testing.assert_allclose(ls.entropy(t), ls.entropy(t.float().numpy()), rtol=1e-6)


def test_outputs_are_numpy_with_documented_dtypes() -> None:
    x = torch.randn(2, 5, 8).log_softmax(-1)
    assert isinstance(ls.entropy(x), np.ndarray) and ls.entropy(x).dtype == np.float32
    ids, probs = ls.top_k(x, 2)
    assert (ids.dtype, probs.dtype, ids.shape) == (np.int64, np.float32, (2, 5, 2))


def test_thread_count_round_trip_and_invariance() -> None:
    x = ls.log_softmax(np.random.default_rng(4).standard_normal((64, 3000)).astype(np.float32))
    before = ls.get_num_threads()
    try:
        ls.set_num_threads(1)
        assert ls.get_num_threads() == 1
        one = ls.entropy(x)
        ls.set_num_threads(3)
        assert ls.get_num_threads() == 3
        np.testing.assert_array_equal(ls.entropy(x), one)
    finally:
        ls.set_num_threads(None)
    assert ls.get_num_threads() == before or before >= 1
    assert ls.simd_level() in {"avx512", "avx2", "neon", "portable"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_builds_its_own_pool() -> None:
    x = ls.log_softmax(np.random.default_rng(5).standard_normal((64, 5000)).astype(np.float32))
    ls.set_num_threads(2)
    try:
        want = ls.entropy(x)  # the parent's pool now has running worker threads
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            ok = np.array_equal(ls.entropy(x), want) and ls.get_num_threads() == 2
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        ls.set_num_threads(None)


def test_stub_matches_the_compiled_module() -> None:
    """The generated stub lists every compiled function with its parameters (drift is also
    caught by ``scripts/gen_stubs.py --check``)."""
    import ast
    import inspect
    from pathlib import Path

    from tuned_lens.lens_stats import _native

    stub = Path(_native.__file__).with_name("_native.pyi")
    tree = ast.parse(stub.read_text())
    stubbed = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    compiled = {
        name
        for name, obj in vars(_native).items()
        if callable(obj) and not isinstance(obj, type) and not name.startswith("_")
    }
    assert set(stubbed) == compiled
    for name, node in stubbed.items():
        params = [a.arg for a in node.args.args] + [a.arg for a in node.args.kwonlyargs]
        assert list(inspect.signature(getattr(_native, name)).parameters) == params, name
    classes = {"LensStatsError", "ShapeError", "DTypeError", "TargetIndexError"}
    assert set(ls.__all__) >= classes | compiled
    assert set(ls.STATISTICS) == compiled - {"set_num_threads", "get_num_threads", "simd_level"}


def test_limits_agree_with_the_compiled_core() -> None:
    from tuned_lens.lens_stats import _native, limits

    assert ls.MAX_K == limits.MAX_K == _native.MAX_K == 64


def test_old_private_module_names_still_import() -> None:
    from tuned_lens import _lens_stats, _torch_stats
    from tuned_lens.lens_stats import _native, _torch

    assert _lens_stats is _native and _torch_stats is _torch
