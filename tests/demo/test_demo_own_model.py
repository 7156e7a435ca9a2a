"""The demo on a user's own local model folder and text files (no bundled assets for those)."""

from __future__ import annotations

import json
import shutil

import pytest
from tuned_lens import demo
from tuned_lens.assets import glassllm_model_dir

pytest.importorskip("glassllm")


@pytest.fixture(scope="module")
def own_model_dir(tmp_path_factory):
    """A small random Llama saved as an ordinary HF folder, with glassllm's tokenizer files."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=1024,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=3,
        bos_token_id=2,
        pad_token_id=0,
    )
    folder = tmp_path_factory.mktemp("own") / "my-model"
    LlamaForCausalLM(config).save_pretrained(folder)
    source = glassllm_model_dir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, folder / name)
    return folder


def _text(lines: int) -> list[str]:
    return [
        f"Line {i}: the Queen and Alice walked along the shore, talking of {i} things."
        for i in range(lines)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["txt", "jsonl"])
def test_demo_runs_on_a_local_model_and_text_file(own_model_dir, tmp_path, kind):
    if kind == "txt":
        data = tmp_path / "notes.txt"
        data.write_text("\n".join(_text(400)) + "\n", encoding="utf-8")
    else:
        data = tmp_path / "notes.jsonl"
        data.write_text(
            "".join(json.dumps({"body": t}) + "\n" for t in _text(400)), encoding="utf-8"
        )
    out = tmp_path / "out"
    argv = [
        "--model",
        str(own_model_dir),
        "--data",
        str(data),
        "--output",
        str(out),
        "--steps",
        "3",
        "--tokens-per-step",
        "256",
        "--seq-len",
        "32",
        "--eval-tokens",
        "128",
        "--no-png",
        "--sentence",
        "Alice walked along the shore.",
    ]
    if kind == "jsonl":
        argv += ["--text-column", "body"]
    assert demo.main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["layers"]) == 3
    assert metrics["model_path"] == str(own_model_dir.resolve())
    expected_docs = 1 if kind == "txt" else 400
    assert metrics["data"]["documents"] == expected_docs
    assert metrics["data"]["chunk_len"] == 32
    assert (out / "lens" / "params.safetensors").is_file()
    assert (out / "trajectories" / "sentence_1.html").is_file()
