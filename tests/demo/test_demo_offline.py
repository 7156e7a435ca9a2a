"""The main job with no network at all: a network namespace without interfaces (``unshare -n``).

HF_HUB_OFFLINE only asks libraries to stay off the network; this test takes the network away,
with a fresh model cache so that the glassllm conversion runs offline too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("glassllm")


def _can_unshare_network() -> bool:
    exe = shutil.which("unshare")
    if exe is None:
        return False
    probe = subprocess.run([exe, "-n", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare_network(), reason="needs `unshare -n` (root on Linux)")
def test_demo_runs_without_any_network(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env["TUNED_LENS_CACHE"] = str(tmp_path / "cache")
    out = tmp_path / "out"
    command = [
        "unshare",
        "-n",
        sys.executable,
        "-m",
        "tuned_lens",
        "demo",
        "--quick",
        "--steps",
        "2",
        "--tokens-per-step",
        "256",
        "--eval-tokens",
        "256",
        "--no-png",
        "--output",
        str(out),
        "--sentence",
        "Alice was beginning to get tired.",
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stdout
    assert (tmp_path / "cache").is_dir()  # the model was converted inside the namespace
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["layers"]) == 4
