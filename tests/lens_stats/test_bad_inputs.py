"""Bad inputs to ``tuned_lens.lens_stats`` raise the documented exception classes, with messages
that name the argument, the offending value and the shapes; nothing panics or crashes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tuned_lens import lens_stats as ls
from tuned_lens.lens_stats import DTypeError, LensStatsError, ShapeError, TargetIndexError


def log_probs(*shape: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return ls.log_softmax(x)


def test_exception_hierarchy() -> None:
    assert issubclass(LensStatsError, ValueError)
    assert issubclass(ShapeError, LensStatsError)
    assert issubclass(DTypeError, LensStatsError) and issubclass(DTypeError, TypeError)
    assert issubclass(TargetIndexError, LensStatsError) and issubclass(TargetIndexError, IndexError)


@pytest.mark.parametrize(
    "call",
    [ls.entropy, ls.entropy_from_logits, ls.logsumexp, ls.log_softmax, ls.marginal_sums],
)
def test_zero_dimensional_input(call) -> None:
    with pytest.raises(ShapeError, match=r"0-d array of shape \(\)"):
        call(np.float32(1.0))


def test_empty_vocabulary_is_a_shape_error_but_zero_rows_are_fine() -> None:
    with pytest.raises(ShapeError, match=r"\(3, 0\)"):
        ls.entropy(np.zeros((3, 0), np.float32))
    assert ls.entropy(np.zeros((0, 5), np.float32)).shape == (0,)
    ids, probs = ls.top_k(np.zeros((2, 0, 5), np.float32), 3)
    assert ids.shape == (2, 0, 3) and probs.shape == (2, 0, 3)


@pytest.mark.parametrize(
    "call",
    [ls.kl_divergence, ls.js_divergence, ls.symmetric_kl, ls.total_variation, ls.max_abs_diff],
)
def test_pair_shape_mismatch_names_both_shapes(call) -> None:
    with pytest.raises(ShapeError) as info:
        call(log_probs(2, 3, 5), log_probs(2, 4, 5))
    message = str(info.value)
    assert "log_q" in message and "(2, 4, 5)" in message and "(2, 3, 5)" in message


def test_top_k_delta_shape_mismatch() -> None:
    with pytest.raises(ShapeError, match="log_q"):
        ls.top_k_delta(log_probs(2, 5), log_probs(2, 6), 2)


def test_forward_kl_reference_shape() -> None:
    with pytest.raises(ShapeError, match=r"reference.*\(4, 5\).*\(4, 3, 5\).*\(3, 5\)"):
        ls.forward_kl(log_probs(4, 3, 5), log_probs(4, 5))
    with pytest.raises(ShapeError, match="reference"):
        ls.forward_kl(log_probs(2, 4, 3, 5), log_probs(4, 3, 5))
    with pytest.raises(ShapeError, match="at least 3 axes"):
        ls.forward_kl(log_probs(3, 5), log_probs(5))


def test_targets_must_broadcast_to_the_rows() -> None:
    lp = log_probs(2, 4, 3, 7)
    with pytest.raises(ShapeError, match=r"targets.*\(2, 3\).*\(2, 4, 3\)"):
        ls.target_log_prob(lp, np.zeros((2, 3), np.int64))
    # The documented fix: insert the layer axis.
    assert ls.target_log_prob(lp, np.zeros((2, 3), np.int64)[:, None, :]).shape == (2, 4, 3)


@pytest.mark.parametrize("bad", [7, 100, 2**40])
def test_out_of_range_target(bad: int) -> None:
    targets = np.array([0, bad, 1], dtype=np.int64)
    with pytest.raises(TargetIndexError) as info:
        ls.target_rank(log_probs(3, 7), targets)
    message = str(info.value)
    assert "targets" in message and str(bad) in message and "7" in message
    with pytest.raises(IndexError):
        ls.cross_entropy(log_probs(3, 7), targets)


def test_negative_target_and_anti_target() -> None:
    lp = log_probs(3, 7)
    with pytest.raises(TargetIndexError, match="-1"):
        ls.target_log_prob(lp, np.array([0, -1, 1], dtype=np.int32))
    with pytest.raises(TargetIndexError, match="anti_targets"):
        ls.log_prob_diff(lp, np.array([0, 1, 2]), np.array([0, -3, 1]))


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((2, 5), np.int32),
        np.zeros((2, 5), np.int64),
        np.zeros((2, 5), np.complex64),
        np.zeros((2, 5), bool),
        np.zeros((2, 5), np.dtype(">f4")),
        np.array([["a", "b"]]),
    ],
    ids=["int32", "int64", "complex64", "bool", "big-endian", "str"],
)
def test_unsupported_value_dtypes(array: np.ndarray) -> None:
    with pytest.raises(DTypeError, match="log_probs.*dtype"):
        ls.entropy(array)
    with pytest.raises(TypeError):
        ls.top_k(array, 1)


def test_float_targets_are_a_dtype_error() -> None:
    with pytest.raises(DTypeError, match="targets.*int32 or int64"):
        ls.target_rank(log_probs(2, 5), np.zeros(2, np.float32))


def test_mixed_dtypes_in_a_pair() -> None:
    p = log_probs(2, 5)
    with pytest.raises(DTypeError, match="log_q.*float64.*float32"):
        ls.kl_divergence(p, p.astype(np.float64))


@pytest.mark.parametrize("k", [0, -1, 65, 7])
def test_k_out_of_range(k: int) -> None:
    with pytest.raises(LensStatsError, match=f"k = {k}"):
        ls.top_k(log_probs(2, 6), k)
    with pytest.raises(ValueError, match="k"):
        ls.top_k_delta(log_probs(2, 6), log_probs(2, 6, seed=1), k)


def test_bad_out_arrays() -> None:
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with pytest.raises(ShapeError, match=r"out.*\(3, 7\).*\(3, 8\)"):
        ls.log_softmax(x, out=np.empty((3, 7), np.float32))
    with pytest.raises(DTypeError, match="out"):
        ls.log_softmax(x, out=np.empty((3, 8), np.float64))
    with pytest.raises(LensStatsError, match="C-contiguous"):
        ls.log_softmax(x, out=np.empty((8, 3), np.float32).T)
    read_only = np.empty((3, 8), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(LensStatsError, match="out"):
        ls.log_softmax(x, out=read_only)
    with pytest.raises(LensStatsError, match="out"):
        ls.log_softmax(x, out=x)
    with pytest.raises(DTypeError, match="out"):
        ls.log_softmax(x, out=[[0.0] * 8] * 3)  # type: ignore[arg-type]


def test_torch_tensors_with_bad_dtypes_or_shapes() -> None:
    with pytest.raises(DTypeError):
        ls.entropy(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(DTypeError):
        ls.entropy(torch.zeros(2, 5, dtype=torch.complex64))
    with pytest.raises(DTypeError):
        ls.entropy(torch.zeros(2, 5).to(torch.float8_e4m3fn))
    with pytest.raises(ShapeError):
        ls.kl_divergence(torch.zeros(2, 5), torch.zeros(5, 2))
    with pytest.raises(DTypeError, match="log_q"):
        ls.kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5, dtype=torch.bfloat16))
    with pytest.raises(TargetIndexError):
        ls.target_rank(torch.zeros(2, 5).T, torch.tensor([0, 1, 2, 3, 5]))


def test_bad_thread_counts() -> None:
    before = ls.get_num_threads()
    with pytest.raises(LensStatsError, match="threads"):
        ls.set_num_threads(0)
    with pytest.raises(LensStatsError):
        ls.set_num_threads(-2)
    assert ls.get_num_threads() == before


def test_non_finite_values_never_raise() -> None:
    x = np.array([[np.nan, 0.0], [np.inf, 0.0], [-np.inf, -np.inf]], np.float32)
    for call in (ls.entropy, ls.entropy_from_logits, ls.logsumexp, ls.log_softmax):
        call(x)
    ls.top_k(x, 2)
    ls.kl_divergence(x, x[::-1].copy())
