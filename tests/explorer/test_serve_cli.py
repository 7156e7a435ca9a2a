"""``tuned-lens serve`` as a real process: it prints its URL, answers, and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest


def test_bad_options_are_one_line_errors():
    run = subprocess.run(
        [sys.executable, "-m", "tuned_lens", "serve", "--model", "glassllm", "--max_tokens", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == "tuned-lens serve: error: --max_tokens must be >= 1, got 0"


@pytest.mark.slow
def test_serve_answers_on_127_0_0_1_and_stops_on_ctrl_c():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuned_lens",
            "serve",
            "--model",
            "glassllm",
            "--port",
            "0",
            "--lens",
            "logit",
            "--lens",
            "again=logit",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A suite started in the background by a shell without job control inherits SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler: restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("tuned-lens serve: http://127.0.0.1:"), line
        url = line.split()[2]
        with urllib.request.urlopen(url + "health", timeout=60) as answer:
            assert json.loads(answer.read()) == {"ok": True, "lenses": ["logit", "again"]}
        body = json.dumps({"prompt": "The One Ring"}).encode()
        req = urllib.request.Request(
            url + "api/data", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as answer:
            assert len(json.loads(answer.read())["views"]) == 2
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
