"""Every ``tuned_lens.lens_stats`` function (the Rust core) against the float64 numpy oracle.

The checks live in ``_contract_checks.py`` (shared with the torch twin's tests); this file picks
the parametrisations: V from 1 to 262,144 with several leading axes, every input encoding
(float32, float16, bfloat16 as a torch tensor and as raw uint16 bits, float64), non-contiguous
views, int32/int64 targets, ``out=``, masked (-inf) tokens, NaN rows and q = 0 < p.
"""

from __future__ import annotations

import _contract_checks as cc
import pytest
from tuned_lens import lens_stats as ls


@pytest.mark.parametrize("vocab", cc.VOCABS)
@pytest.mark.parametrize("name", cc.CHECK_NAMES)
def test_float32_every_vocab(name: str, vocab: int) -> None:
    cc.case_float32_every_vocab(ls, name, vocab)


@pytest.mark.parametrize("dtype", cc.OTHER_DTYPES)
@pytest.mark.parametrize("vocab", cc.OTHER_DTYPE_VOCABS)
@pytest.mark.parametrize("name", cc.CHECK_NAMES)
def test_other_dtypes(name: str, vocab: int, dtype: str) -> None:
    cc.case_other_dtypes(ls, name, vocab, dtype)


@pytest.mark.parametrize("dtype", cc.LOW_PRECISION)
def test_big_vocab_low_precision(dtype: str) -> None:
    cc.case_big_vocab_low_precision(ls, dtype)


def test_full_precision_float64_values() -> None:
    cc.case_full_precision_float64_values(ls)


@pytest.mark.parametrize("target_dtype", ("int32", "int64"))
def test_target_dtypes_and_broadcast(target_dtype: str) -> None:
    cc.case_target_dtypes_and_broadcast(ls, target_dtype)


@pytest.mark.parametrize("bad", (-1, 1000, 10**6))
def test_target_ids_are_range_checked(bad: int) -> None:
    cc.case_target_ids_are_range_checked(ls, bad)


def test_log_softmax_out() -> None:
    cc.case_log_softmax_out(ls)


@pytest.mark.parametrize("view", cc.VIEWS)
def test_non_contiguous_inputs(view: str) -> None:
    cc.case_non_contiguous_inputs(ls, view)


@pytest.mark.parametrize("vocab", (7, 1000))
def test_masked_tokens(vocab: int) -> None:
    cc.case_masked_tokens(ls, vocab)


def test_q_zero_under_positive_p_gives_inf() -> None:
    cc.case_q_zero_under_positive_p_gives_inf(ls)


def test_nan_row_is_nan_only_there() -> None:
    cc.case_nan_row_is_nan_only_there(ls)


def test_marginal_sums_merge_across_batches() -> None:
    cc.case_marginal_sums_merge_across_batches(ls)


def test_vocab_of_one() -> None:
    cc.case_vocab_of_one(ls)
