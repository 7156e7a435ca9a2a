"""Check an installed tuned_lens wheel against float64 numpy: run by scripts/test_aarch64_wheel.sh
under qemu-user in an arm64 CPython, where only numpy and the wheel are importable (no torch).

    python aarch64_wheel_smoke.py LEVEL    # LEVEL: the simd_level() that must be in use

Rows of 50,304 entries (the vocabulary of the benchmarks) so that the SIMD lane loops, not only
their tails, do the work; float32, IEEE half and bfloat16 (as raw uint16 bits) inputs, with a
few masked (-inf) entries. Prints one line per dtype with the largest errors seen.
"""

from __future__ import annotations

import platform
import sys

import numpy as np
import tuned_lens
import tuned_lens.lens_stats as ls

ROWS, VOCAB, K = 6, 50_304, 5


def _log_softmax64(x: np.ndarray) -> np.ndarray:
    """float64 log-softmax along the last axis, (R, V) -> (R, V)."""
    top = x.max(axis=-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 (R, V) -> bfloat16 raw bits (R, V) uint16, rounded to nearest even (no NaN)."""
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def _inputs(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """dtype -> (log_p as passed, log_q as passed, the exact log_p values in float64)."""
    scale = np.linspace(0.5, 6.0, ROWS, dtype=np.float32)[:, None]
    logits = rng.standard_normal((ROWS, VOCAB), dtype=np.float32) * scale
    logits[:, ::997] = -np.inf
    lp32 = _log_softmax64(logits.astype(np.float64)).astype(np.float32)
    noise = 0.3 * rng.standard_normal((ROWS, VOCAB), dtype=np.float32)
    lq32 = _log_softmax64((logits + noise).astype(np.float64)).astype(np.float32)
    bits_p, bits_q = _bf16_bits(lp32), _bf16_bits(lq32)
    bf16_exact = (bits_p.astype(np.uint32) << 16).view(np.float32)
    return {
        "float32": (lp32, lq32, lp32.astype(np.float64)),
        "float16": (
            lp32.astype(np.float16),
            lq32.astype(np.float16),
            lp32.astype(np.float16).astype(np.float64),
        ),
        "bfloat16-bits": (bits_p, bits_q, bf16_exact.astype(np.float64)),
    }


def _exact_q(dtype: str, lq: np.ndarray) -> np.ndarray:
    """The float64 values of the second input as the core reads them."""
    if dtype == "bfloat16-bits":
        return (lq.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return lq.astype(np.float64)


def main(level: str) -> None:
    """Compare every statistic below with its float64 definition; exit 1 on a mismatch."""
    assert ls.simd_level() == level, (ls.simd_level(), level)
    rng = np.random.default_rng(17)
    for dtype, (lp, lq, p64) in _inputs(rng).items():
        q64 = _exact_q(dtype, lq)
        prob_p, prob_q = np.exp(p64), np.exp(q64)
        with np.errstate(invalid="ignore"):
            plogp = np.where(prob_p > 0, prob_p * p64, 0.0)
            kl_terms = np.where(prob_p > 0, prob_p * (p64 - q64), 0.0)
        want = {
            "entropy": -plogp.sum(-1),
            "kl_divergence": kl_terms.sum(-1),
            "logsumexp": np.log(prob_p.sum(-1)),
            "total_variation": 0.5 * np.abs(prob_p - prob_q).sum(-1),
        }
        worst = 0.0
        for name, expected in want.items():
            statistic = getattr(ls, name)
            pair = name not in ("entropy", "logsumexp")
            got = np.asarray(statistic(lp, lq) if pair else statistic(lp), dtype=np.float64)
            err = np.abs(got - expected).max()
            bound = 2e-5 * max(1.0, np.abs(expected).max())
            assert err <= bound, (dtype, name, err, bound)
            worst = max(worst, err)
        ids, probs = ls.top_k(lp, K)
        want_ids = np.argsort(-p64, axis=-1, kind="stable")[:, :K]
        assert (ids == want_ids).all(), (dtype, ids, want_ids)
        assert np.allclose(probs, np.exp(np.take_along_axis(p64, want_ids, -1)), rtol=1e-5)
        print(f"ok {platform.machine()} {level} {dtype}: max abs error {worst:.2e}")
    print("tuned_lens from", tuned_lens.__file__)


if __name__ == "__main__":
    main(sys.argv[1])
