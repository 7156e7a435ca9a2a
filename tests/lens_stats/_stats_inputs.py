"""Shared inputs and comparisons for the statistics tests (oracle, properties, threads, twin).

Inputs are built in float32 and then stored in the dtype under test; the oracle always sees the
de-quantised float64 values of exactly what the function under test received.
"""

from __future__ import annotations

from dataclasses import dataclass

import _oracle as oracle
import numpy as np
import torch

RTOL = 1e-5
ATOL = 1e-6

# Input encodings: float32/float16/float64 numpy, bfloat16 as a torch CPU tensor or as a numpy
# uint16 array of raw bf16 bits.
DTYPES = ("float32", "float16", "bfloat16-torch", "bfloat16-bits", "float64")


def random_logits(
    rng: np.random.Generator, shape: tuple[int, ...], scale: float = 3.0
) -> np.ndarray:
    """float32 logits with a spread of peaked and flat rows."""
    row_scale = rng.uniform(0.3, 1.7, size=shape[:-1] + (1,)) * scale
    return (rng.standard_normal(shape) * row_scale).astype(np.float32)


def encode(x: np.ndarray, dtype: str) -> tuple[object, np.ndarray]:
    """Store float data in `dtype`.

    Returns:
        (the input to pass to lens_stats, its exact float64 value for the oracle).
    """
    if dtype == "float32":
        enc = np.ascontiguousarray(x, dtype=np.float32)
        return enc, enc.astype(np.float64)
    if dtype == "float64":
        enc = np.ascontiguousarray(x, dtype=np.float64)
        return enc, enc.copy()
    if dtype == "float16":
        enc = np.ascontiguousarray(x, dtype=np.float16)
        return enc, enc.astype(np.float64)
    if dtype in ("bfloat16-torch", "bfloat16-bits"):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
        exact = t.float().numpy().astype(np.float64)
        if dtype == "bfloat16-torch":
            return t, exact
        return t.view(torch.int16).numpy().view(np.uint16), exact
    raise ValueError(f"unknown dtype {dtype!r}")


def bf16_bits_to_f64(bits: np.ndarray) -> np.ndarray:
    """Decode a uint16 array of raw bfloat16 bits."""
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


@dataclass
class PairInputs:
    """Two log-prob arrays (..., V) plus targets, as given to lens_stats and as float64."""

    logits: object
    logits64: np.ndarray
    lp: object
    lp64: np.ndarray
    lq: object
    lq64: np.ndarray
    targets: np.ndarray
    anti_targets: np.ndarray


def make_inputs(
    rows_shape: tuple[int, ...], vocab: int, dtype: str = "float32", *, seed: int = 0
) -> PairInputs:
    """Logits, two related log-prob arrays and targets of the given shape, stored in `dtype`."""
    rng = np.random.default_rng(seed)
    shape = rows_shape + (vocab,)
    logits32 = random_logits(rng, shape)
    other32 = logits32 + (rng.standard_normal(shape) * 0.7).astype(np.float32)
    lp32 = oracle.log_softmax(logits32).astype(np.float32)
    lq32 = oracle.log_softmax(other32).astype(np.float32)
    logits, logits64 = encode(logits32, dtype)
    lp, lp64 = encode(lp32, dtype)
    lq, lq64 = encode(lq32, dtype)
    targets = rng.integers(0, vocab, size=rows_shape, dtype=np.int64)
    anti = rng.integers(0, vocab, size=rows_shape, dtype=np.int64)
    # Make some targets the row's most likely token, so that rank 1 is exercised.
    flat_t = targets.reshape(-1)
    flat_t[::3] = np.argmax(lp64.reshape(-1, vocab), axis=-1)[::3]
    return PairInputs(logits, logits64, lp, lp64, lq, lq64, targets, anti)


def to_numpy(x: object) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def assert_close(
    actual: object,
    expected: np.ndarray,
    *,
    rtol: float = RTOL,
    atol: float = ATOL,
    dtype: type | None = np.float32,
    what: str = "",
) -> None:
    """Same shape, same NaN and ±inf positions, finite values within rtol/atol."""
    got = to_numpy(actual)
    exp = np.asarray(expected, dtype=np.float64)
    assert got.shape == exp.shape, f"{what}: shape {got.shape} != {exp.shape}"
    if dtype is not None:
        assert got.dtype == dtype, f"{what}: dtype {got.dtype} != {np.dtype(dtype)}"
    got64 = got.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got64), np.isnan(exp), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(got64), np.isposinf(exp), err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(got64), np.isneginf(exp), err_msg=f"{what}: -inf")
    finite = np.isfinite(exp)
    np.testing.assert_allclose(got64[finite], exp[finite], rtol=rtol, atol=atol, err_msg=what)


def assert_top_k(
    ids: object,
    values: object,
    key64: np.ndarray,
    value64: np.ndarray,
    k: int,
    *,
    what: str = "",
) -> None:
    """Check a top-k answer against the float64 oracle.

    Args:
        ids: (..., k) returned ids.
        values: (..., k) returned values.
        key64: (..., V) the oracle's ranking key (probability, or |q - p|).
        value64: (..., V) the oracle's value per token (probability, or q - p).
        k: number of entries.

    Ids must equal the oracle's (descending key, ties to the lower id) except where the oracle's
    keys are equal within tolerance (a float32 kernel cannot order those reliably); the values
    must match the oracle's value at the returned ids.
    """
    got_ids = to_numpy(ids)
    got_vals = to_numpy(values)
    rows_shape = key64.shape[:-1]
    assert got_ids.shape == rows_shape + (k,), f"{what}: ids shape {got_ids.shape}"
    assert got_vals.shape == rows_shape + (k,), f"{what}: values shape {got_vals.shape}"
    assert got_ids.dtype == np.int64, f"{what}: ids dtype {got_ids.dtype}"
    assert got_vals.dtype == np.float32, f"{what}: values dtype {got_vals.dtype}"
    exp_ids = oracle._top_k_by(key64, k)
    vocab = key64.shape[-1]
    flat_ids = got_ids.reshape(-1, k)
    assert (flat_ids >= 0).all() and (flat_ids < vocab).all(), f"{what}: id out of range"
    for row in flat_ids:
        assert len(set(row.tolist())) == k, f"{what}: repeated ids {row}"
    got_keys = np.take_along_axis(key64, got_ids, axis=-1)
    exp_keys = np.take_along_axis(key64, exp_ids, axis=-1)
    # Same key sequence, and the same ids wherever the keys are not (nearly) tied.
    np.testing.assert_allclose(got_keys, exp_keys, rtol=RTOL, atol=ATOL, err_msg=f"{what}: keys")
    differs = got_ids != exp_ids
    near_tie = np.isclose(got_keys, exp_keys, rtol=RTOL, atol=ATOL)
    assert not (differs & ~near_tie).any(), f"{what}: ids {got_ids} != {exp_ids}"
    exact_ties_differ = differs & (got_keys == exp_keys)
    # Exact ties are decidable in float32 too: they must go to the lower id.
    if exact_ties_differ.any():
        raise AssertionError(f"{what}: exact ties not broken towards the lower id")
    assert_close(got_vals, np.take_along_axis(value64, got_ids, axis=-1), what=f"{what}: values")
