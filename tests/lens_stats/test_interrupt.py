"""Ctrl-C interrupts a long statistic: the kernels poll for signals while the GIL is released."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from tuned_lens import lens_stats as ls

    ls.set_num_threads(2)
    vocab = 50304
    # Ascending rows are top_k's worst case (every entry enters the buffer): slow per byte, so
    # a call of several seconds needs only a few hundred MB.
    row = np.arange(vocab, dtype=np.float32) / 1e4
    probe = np.broadcast_to(row, (40, vocab)).copy()
    start = time.perf_counter()
    ls.top_k(probe, 64)
    per_row = (time.perf_counter() - start) / 40
    rows = int(min(max(6.0 / per_row, 100), 5000))
    x = np.broadcast_to(row, (rows, vocab)).copy()
    print(json.dumps({"ready": time.time(), "expected_s": per_row * rows}), flush=True)
    try:
        # Several long calls in a row, so that a call running faster than calibrated still
        # leaves the signal landing inside one (each >= 2 s), which must end within a second.
        for _ in range(10):
            ls.top_k(x, 64)
        print(json.dumps({"finished": time.time()}), flush=True)
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": time.time()}), flush=True)
    # Still usable afterwards: the pool answers and the results are right.
    ids, _ = ls.top_k(probe[:3], 2)
    assert ids.tolist() == [[vocab - 1, vocab - 2]] * 3, ids
    assert float(ls.entropy(np.zeros((1, 4), np.float32) - np.log(4))[0]) > 1.38
    print(json.dumps({"usable": True}), flush=True)
    """
)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_interrupts_a_long_call_promptly() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A suite started in the background by a shell without job control inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler: restore the default.
        preexec_fn=_default_sigint,
    )
    try:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline())
        assert ready["expected_s"] > 2.0, ready
        time.sleep(0.5)  # well inside the long call
        sent = time.time()
        child.send_signal(signal.SIGINT)
        outcome = json.loads(child.stdout.readline())
        usable = json.loads(child.stdout.readline())
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert "interrupted" in outcome, outcome
    assert outcome["interrupted"] - sent < 1.0, (outcome["interrupted"] - sent, ready)
    assert usable == {"usable": True}
    assert child.returncode == 0, child.stderr.read() if child.stderr else ""
