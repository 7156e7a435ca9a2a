"""``TUNED_LENS_SIMD`` picks a lower compiled copy of the hot loops (``simd_level()`` says which
runs), every copy gives the float64 oracle's answers, and a bad value warns and falls back.

Each copy runs in its own subprocess (the choice is made once per process), on the same inputs
saved by this process; the answers are compared here with the oracle and with the default copy.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import _oracle as oracle
import numpy as np
import pytest
from _stats_inputs import assert_close, assert_top_k, make_inputs
from tuned_lens import lens_stats as ls

# The copies a build of this architecture has (aarch64: the portable copy and NEON).
LEVELS = (
    ("portable", "neon")
    if platform.machine() in ("aarch64", "arm64")
    else ("portable", "avx2", "avx512")
)
DTYPES = ("float32", "float16", "bfloat16-bits")
K = 7


def _clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TUNED_LENS_SIMD", None)
    return env


def _runnable() -> tuple[str, ...]:
    """The copies this CPU runs, worst first: those up to the default (asked of a process
    without the variable, so that this file also passes when the suite runs under it)."""
    if "TUNED_LENS_SIMD" not in os.environ:
        best = ls.simd_level()
    else:
        code = "from tuned_lens import lens_stats as ls; print(ls.simd_level())"
        done = subprocess.run(
            [sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True
        )
        best = done.stdout.strip()
    return LEVELS[: LEVELS.index(best) + 1]


RUNNABLE = _runnable()

CHILD = """
    import json, sys, warnings
    import numpy as np
    from tuned_lens import lens_stats as ls
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        level = ls.simd_level()
    out = {}
    dtypes, k = json.loads(sys.argv[3])
    for dtype in dtypes:
        d = np.load(sys.argv[1] + "/" + dtype + ".npz")
        lp, lq, logits, t = d["lp"], d["lq"], d["logits"], d["targets"]
        top, top_ids = ls.max_probability(lp)
        ids, probs = ls.top_k(lp, k)
        delta_ids, delta = ls.top_k_delta(lp, lq, k)
        out.update({
            dtype + "/log_softmax": ls.log_softmax(logits),
            dtype + "/logsumexp": ls.logsumexp(logits),
            dtype + "/entropy": ls.entropy(lp),
            dtype + "/entropy_from_logits": ls.entropy_from_logits(logits),
            dtype + "/max_probability": top,
            dtype + "/max_probability_ids": top_ids,
            dtype + "/target_rank": ls.target_rank(lp, t),
            dtype + "/kl_divergence": ls.kl_divergence(lp, lq),
            dtype + "/js_divergence": ls.js_divergence(lp, lq),
            dtype + "/symmetric_kl": ls.symmetric_kl(lp, lq),
            dtype + "/total_variation": ls.total_variation(lp, lq),
            dtype + "/max_abs_diff": ls.max_abs_diff(lp, lq),
            dtype + "/top_k_ids": ids, dtype + "/top_k_probs": probs,
            dtype + "/top_k_delta_ids": delta_ids, dtype + "/top_k_delta": delta,
        })
    np.savez(sys.argv[2], **out)
    print(json.dumps([level, [str(w.message) for w in caught]]))
"""


def _child(code: str, args: list[str], value: str | None) -> Any:
    """The JSON a child process running ``code`` with ``args`` prints, under
    ``TUNED_LENS_SIMD=value`` (unset if None)."""
    env = _clean_env()
    if value is not None:
        env["TUNED_LENS_SIMD"] = value
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _run(value: str | None, inputs: Path, output: Path) -> tuple[str, list[str]]:
    """simd_level() and the warnings of a process with ``TUNED_LENS_SIMD=value``."""
    level, messages = _child(CHILD, [str(inputs), str(output), json.dumps([DTYPES, K])], value)
    return level, messages


def _save_inputs(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Inputs per dtype (V = 2,600: two and a half sum blocks and a tail) and their float64."""
    exact = {}
    for dtype in DTYPES:
        data = make_inputs((3, 4), 2600, dtype, seed=17)
        arrays = {"lp": data.lp, "lq": data.lq, "logits": data.logits, "targets": data.targets}
        np.savez(folder / f"{dtype}.npz", **{n: np.asarray(a) for n, a in arrays.items()})
        exact[dtype] = {"lp": data.lp64, "lq": data.lq64, "logits": data.logits64}
        exact[dtype]["targets"] = data.targets
    return exact


def _check_against_oracle(
    got: dict[str, np.ndarray], exact: dict[str, np.ndarray], dtype: str
) -> None:
    lp, lq, logits = exact["lp"], exact["lq"], exact["logits"]
    tol = {"rtol": 2e-5, "atol": 2e-6}
    pairs = {
        "log_softmax": oracle.log_softmax(logits),
        "logsumexp": oracle.logsumexp(logits),
        "entropy": oracle.entropy(lp),
        "entropy_from_logits": oracle.entropy_from_logits(logits),
        "max_probability": oracle.max_probability(lp)[0],
        "kl_divergence": oracle.kl_divergence(lp, lq),
        "js_divergence": oracle.js_divergence(lp, lq),
        "symmetric_kl": oracle.symmetric_kl(lp, lq),
        "total_variation": oracle.total_variation(lp, lq),
        "max_abs_diff": oracle.max_abs_diff(lp, lq),
    }
    for name, want in pairs.items():
        assert_close(got[f"{dtype}/{name}"], want, **tol, what=f"{dtype} {name}")
    np.testing.assert_array_equal(got[f"{dtype}/max_probability_ids"], np.argmax(lp, axis=-1))
    ranks = oracle.target_rank(lp, exact["targets"])
    np.testing.assert_array_equal(got[f"{dtype}/target_rank"], ranks)
    p, q = np.exp(lp), np.exp(lq)
    assert_top_k(got[f"{dtype}/top_k_ids"], got[f"{dtype}/top_k_probs"], p, p, K, what=dtype)
    ids, delta = got[f"{dtype}/top_k_delta_ids"], got[f"{dtype}/top_k_delta"]
    assert_top_k(ids, delta, np.abs(q - p), q - p, K, what=f"{dtype} delta")


def test_every_copy_this_cpu_runs_is_chosen_by_the_variable_and_agrees(tmp_path: Path) -> None:
    exact = _save_inputs(tmp_path)
    answers = {}
    for level in RUNNABLE:
        output = tmp_path / f"{level}.npz"
        assert _run(f" {level.upper()} ", tmp_path, output) == (level, [])
        answers[level] = dict(np.load(output))
        for dtype in DTYPES:
            _check_against_oracle(answers[level], exact[dtype], dtype)
    best = answers[RUNNABLE[-1]]
    for level in RUNNABLE[:-1]:
        for name, values in answers[level].items():
            if name.endswith(("ids", "rank")):
                np.testing.assert_array_equal(values, best[name], err_msg=f"{level} {name}")
            else:
                # The copies differ by the rounding of fused multiply-adds and, for AVX2, by
                # its exponential (`math::exp_table`, ~1.5 ulp as the others): ~2 ulp of a
                # sum, 1e-7 at a log-sum-exp near 0.
                scale = np.maximum(np.abs(best[name]), 5e-2)
                assert np.all(np.abs(values - best[name]) <= 2e-6 * scale), f"{level} {name}"


@pytest.mark.parametrize("value", ["", "auto"])
def test_empty_or_auto_is_the_best_copy(value: str, tmp_path: Path) -> None:
    _save_inputs(tmp_path)
    assert _run(value, tmp_path, tmp_path / "out.npz") == (RUNNABLE[-1], [])


@pytest.mark.parametrize("value", ["sse9", "avx-512"] + list(LEVELS[len(RUNNABLE) :]))
def test_unknown_or_unsupported_copy_warns_and_runs_the_best(value: str, tmp_path: Path) -> None:
    _save_inputs(tmp_path)
    level, messages = _run(value, tmp_path, tmp_path / "out.npz")
    assert level == RUNNABLE[-1]
    why = "is not supported by this CPU" if value in LEVELS else "is not one of auto, portable"
    runs = ", ".join(RUNNABLE)
    assert len(messages) == 1, messages
    assert messages[0].startswith(f'TUNED_LENS_SIMD="{value}" {why}'), messages
    assert messages[0].endswith(f"(this CPU runs: {runs}); using {RUNNABLE[-1]}"), messages


UNDERFLOW_CHILD = """
    import json, sys
    import numpy as np
    from tuned_lens import lens_stats as ls
    rows = np.asarray(json.loads(sys.argv[1]), dtype=np.float32)
    masked = np.full_like(rows, -np.inf)
    out = {
        "entropy": ls.entropy(rows),
        "entropy_from_logits": ls.entropy_from_logits(rows),
        "logsumexp": ls.logsumexp(rows),
        "js": ls.js_divergence(rows, masked),
        "tv": ls.total_variation(rows, masked),
        "max_abs_diff": ls.max_abs_diff(rows, masked),
        "marginal_p": np.stack([ls.marginal_sums(row[None])[0] for row in rows]),
    }
    print(json.dumps({name: np.asarray(v, dtype=np.float64).tolist() for name, v in out.items()}))
"""


def _underflow_rows() -> np.ndarray:
    """Row 0: one certain token among entries at or below -88 (every copy's exact 0). Row 1:
    the same with 40 entries between -88 and -87.33, where ``e^lp`` is 5.7e-39 to 1.2e-38
    (exactly 0 on the masking copies, at most its true value on AVX2). 37 entries: two vectors
    and a padded tail."""
    low = [-np.inf, -1e30, -float(np.finfo(np.float32).max), -100.0, -88.5, -88.0]
    first = [0.0] + [low[i % len(low)] for i in range(36)]
    tiny = np.linspace(-87.999, -87.331, 36, dtype=np.float32).tolist()
    return np.asarray([first, [0.0] + tiny], dtype=np.float32)


def test_every_copy_makes_underflowing_probabilities_count_as_nothing() -> None:
    """Entries whose probability is 0 in f32 (at or below -88) add exactly nothing on every
    copy, and those just under f32's normal range at most their true, negligible, size."""
    rows = _underflow_rows()
    p64 = np.exp(rows.astype(np.float64))
    true_entropy = -(p64[1, 1:] * rows[1, 1:]).sum()
    half_ln2 = np.float32(0.5 * np.log(2.0))
    for level in RUNNABLE:
        answers = _child(UNDERFLOW_CHILD, [json.dumps(rows.tolist())], level)
        got = {name: np.asarray(v) for name, v in answers.items()}
        # Row 0 exactly: one token of probability 1, the rest 0.
        for name, want in [("entropy", 0.0), ("entropy_from_logits", 0.0), ("logsumexp", 0.0)]:
            assert got[name][0] == want, (level, name, got[name])
        assert got["tv"][0] == 0.5 and got["max_abs_diff"][0] == 1.0, (level, got)
        assert got["js"][0] == half_ln2, (level, got["js"])
        assert np.all(got["marginal_p"][0, 1:] == 0.0), level
        # Row 1: the certain token's share as in row 0, plus at most the entries' true size.
        assert got["logsumexp"][1] == 0.0, (level, got["logsumexp"])
        for name in ("entropy", "entropy_from_logits"):
            assert 0.0 <= got[name][1] <= true_entropy * (1 + 1e-6), (level, name, got[name])
        tiny = got["marginal_p"][1, 1:]
        assert np.all((tiny >= 0.0) & (tiny <= p64[1, 1:] * (1 + 1e-6))), (level, tiny)
        assert got["tv"][1] == 0.5 and got["max_abs_diff"][1] == 1.0, (level, got)
        assert got["js"][1] == half_ln2, (level, got["js"])
