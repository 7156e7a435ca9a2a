"""``TUNED_LENS_PREFETCH`` switches the streaming loops' software prefetch (``on`` / ``off`` /
``auto``): a hint only, so every statistic gives the same bits either way, and a value that is
not a choice warns once and keeps the CPU's default.

Each setting runs in its own subprocess (the choice is made once per process) on inputs saved
here; the answers are compared bit for bit with a process without the variable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _stats_inputs import make_inputs

CHILD = """
    import json, sys, warnings
    import numpy as np
    from tuned_lens import lens_stats as ls
    data = np.load(sys.argv[1])
    lp, lq, logits = data["lp"], data["lq"], data["logits"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ls.set_num_threads(2)
        out = {
            "entropy": ls.entropy(lp),
            "from_logits": ls.entropy_from_logits(logits),
            "log_softmax": ls.log_softmax(logits),
            "kl": ls.kl_divergence(lp, lq),
            "js": ls.js_divergence(lp, lq),
            "forward_kl": ls.forward_kl(lp, lp[-1]),
            "max_prob": ls.max_probability(lp)[0],
            "rank": ls.target_rank(lp, data["targets"]),
            "top_k": ls.top_k(lp, 5)[1],
            "marginal": ls.marginal_sums(lp)[0],
        }
        ls.entropy(lp)  # a second call: the notice is shown once
    np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in out.items()})
    print(json.dumps([str(w.message) for w in caught]))
"""


def _run(value: str | None, inputs: Path, output: Path) -> list[str]:
    env = dict(os.environ)
    env.pop("TUNED_LENS_PREFETCH", None)
    if value is not None:
        env["TUNED_LENS_PREFETCH"] = value
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(inputs), str(output)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str | None, tuple[list[str], dict]]:
    folder = tmp_path_factory.mktemp("prefetch")
    data = make_inputs((3, 4), 5000, "float32", seed=5)
    inputs = folder / "inputs.npz"
    np.savez(inputs, lp=data.lp, lq=data.lq, logits=data.logits, targets=data.targets)
    results: dict[str | None, tuple[list[str], dict]] = {}
    for value in (None, "on", " OFF ", "auto", "sometimes"):
        output = folder / f"out-{value}.npz"
        messages = _run(value, inputs, output)
        with np.load(output) as saved:
            results[value] = (messages, {k: saved[k] for k in saved.files})
    return results


@pytest.mark.parametrize("value", ["on", " OFF ", "auto", "sometimes"])
def test_every_setting_gives_the_same_bits(runs, value) -> None:
    _, default = runs[None]
    _, got = runs[value]
    assert set(got) == set(default)
    for name, array in default.items():
        np.testing.assert_array_equal(got[name], array, err_msg=name, strict=True)


def test_choices_are_silent_and_anything_else_warns_once(runs) -> None:
    for value in (None, "on", " OFF ", "auto"):
        assert runs[value][0] == [], value
    messages = runs["sometimes"][0]
    assert len(messages) == 1, messages
    assert messages[0].startswith(
        'TUNED_LENS_PREFETCH="sometimes" is not one of auto, on, off; using '
    ), messages
    assert messages[0].split()[-1] in {"on", "off"}
