"""``tuned-lens train`` writes the model card and provenance next to the lens, ``tuned-lens eval
-l`` adds its held-out metrics to both: real processes on glassllm at a tiny budget."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

pytestmark = pytest.mark.slow


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tuned_lens", *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNED_LENS_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def glassllm():
    assets = pytest.importorskip("tuned_lens.assets")
    try:
        assets.load_glassllm()
    except assets.AssetMissingError as err:
        pytest.skip(str(err))


def test_train_writes_card_and_provenance_and_eval_adds_metrics(glassllm, tmp_path, text_jsonl):
    lens = tmp_path / "lens"
    train = ("train", "--model.name", "glassllm", "--data.name", text_jsonl, "--max_seq_len",
             "32", "--tokens_per_step", "128", "--num_steps", "2", "--noprogress", "--model.revision", "main", "-o", lens)  # fmt: skip
    proc = _run(*train)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((lens / "provenance.json").read_text())
    training = record["training"]
    assert training["command"][1:] == [str(a) for a in train]
    assert training["base_model"]["name"] == "glassllm"
    assert training["base_model"]["revision"] == "main"
    assert json.loads((lens / "config.json").read_text())["base_model_revision"] == "main"
    assert Path(training["base_model"]["name_or_path"]).is_dir()
    assert training["tokens_seen"] == 256 and training["recipe"]["num_steps"] == 2
    corpus = training["corpus"]
    assert corpus["name"] == [str(text_jsonl)] and corpus["documents"] == 40
    assert corpus["file"]["sha256"] == hashlib.sha256(text_jsonl.read_bytes()).hexdigest()
    assert len(training["final_train_loss_per_layer"]) == 4
    summary = json.loads((lens / "training_summary.json").read_text())
    assert training["final_train_loss_per_layer"] == summary["final_step_loss_nats"]
    assert training["packages"]["torch"] and training["packages"]["tuned-lens"]
    assert record["evaluations"] == []
    card = ModelCard.load(lens / "README.md")
    assert card.data.library_name == "tuned-lens" and card.data.eval_results is None
    assert "| tokens seen | 256 |" in card.text

    out = tmp_path / "eval"
    proc = _run("eval", "--model.name", "glassllm", "--data.name", text_jsonl, "--max_seq_len",
                "32", "--tokens", "256", "--noprogress", "-l", lens, "-o", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    aggregate = json.loads((out / "aggregate_metrics.json").read_text())
    expected = [aggregate["tuned"]["kl"][f"layer_{i}"] for i in range(4)]
    updated = json.loads((lens / "provenance.json").read_text())
    assert updated["training"] == training  # the training record is kept
    (evaluation,) = updated["evaluations"]
    assert evaluation["kl_per_layer"] == expected and evaluation["tokens"] == 256
    assert evaluation["logit_lens_kl_per_layer"] == [
        aggregate["logit"]["kl"][f"layer_{i}"] for i in range(4)
    ]
    card = ModelCard.load(lens / "README.md")
    assert [r.metric_value for r in card.data.eval_results] == expected
    assert card.data.tuned_lens["held_out_kl_per_layer"] == expected

    (lens / "provenance.json").write_text('{"format": "tuned-lens-provenance", "version": "x"')
    before = {p.name: p.read_bytes() for p in lens.iterdir() if p.is_file()}
    proc = _run("eval", "--model.name", "glassllm", "--data.name", text_jsonl, "--max_seq_len",
                "32", "--tokens", "256", "--noprogress", "-l", lens, "-o", tmp_path / "e2")  # fmt: skip
    assert proc.returncode == 2 and "provenance" in proc.stderr and "not valid JSON" in proc.stderr
    assert {p.name: p.read_bytes() for p in lens.iterdir() if p.is_file()} == before
    assert not (tmp_path / "e2" / "aggregate_metrics.json").exists()  # refused before the work


def test_eval_comparison_adds_each_tuned_lens_metrics(tmp_path, tiny_model_dir, text_jsonl):
    import torch
    from transformers import AutoModelForCausalLM
    from tuned_lens.__main__ import main
    from tuned_lens.model_card import read_provenance
    from tuned_lens.nn import TunedLens

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lens = TunedLens.from_model(model)
    with torch.no_grad():
        for p in lens.layer_translators.parameters():
            p.normal_(0, 0.02)
    lens.save_pretrained(tmp_path / "lens")
    out = tmp_path / "cmp"
    code = main(["eval", "--model.name", str(tiny_model_dir), "--data.name", str(text_jsonl),
                 "--max_seq_len", "32", "--tokens", "512", "--bootstrap", "20", "--lens", "logit",
                 "--lens", f"tuned:{tmp_path / 'lens'}", "-o", str(out)])  # fmt: skip
    assert code == 0
    table = json.loads((out / "comparison.json").read_text())["lenses"]
    (evaluation,) = read_provenance(tmp_path / "lens")["evaluations"]
    for key, name in (("kl_per_layer", "tuned"), ("logit_lens_kl_per_layer", "logit")):
        expected = [table[name]["layers"][str(j)]["kl"]["mean"] for j in range(2)]
        assert evaluation[key] == pytest.approx(expected, rel=1e-12)
    card = ModelCard.load(tmp_path / "lens" / "README.md")
    assert card.data.tuned_lens["held_out_kl_per_layer"] == evaluation["kl_per_layer"]
