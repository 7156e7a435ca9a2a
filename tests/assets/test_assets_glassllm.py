"""The glassllm → Hugging Face Llama conversion reproduces glassllm's own model exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

glassllm = pytest.importorskip("glassllm")

from tuned_lens import assets  # noqa: E402

SENTENCES = [
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
    "“Curiouser and curiouser!” cried Alice\n(she was so much surprised)",
    "  two  spaces, then\n\nblank lines, digits 1865 and unknown 日本 glyphs ",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = assets.glassllm_model_dir(tmp_path_factory.mktemp("cache"))
    model, tokenizer = assets._load_folder(folder, dtype=torch.float32, device="cpu")
    return folder, model, tokenizer


@pytest.fixture(scope="module")
def reference():
    return glassllm.load_pretrained("en")


def test_folder_is_a_complete_hf_llama(converted):
    folder, model, tokenizer = converted
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (folder / name).is_file(), name
    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (4, 128, 1024)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 32)
    assert cfg.intermediate_size == 341 and cfg.rms_norm_eps == pytest.approx(1e-6)
    assert cfg.tie_word_embeddings
    assert model.get_output_embeddings().weight.data_ptr() == (
        model.get_input_embeddings().weight.data_ptr()
    )
    assert next(model.parameters()).dtype == torch.float32
    assert not model.training
    tok_cfg = (folder / "tokenizer_config.json").read_text(encoding="utf-8")
    assert '"tokenizer_class": "PreTrainedTokenizerFast"' in tok_cfg
    assert sum(p.numel() for p in model.parameters()) == 852_608


@pytest.mark.parametrize("text", SENTENCES)
def test_tokenizer_ids_match_glassllm(converted, reference, text):
    _, _, tokenizer = converted
    _, glass_tok = reference
    ids = tokenizer(text).input_ids
    assert ids == glass_tok.encode(text)
    # Decoding gives glassllm's text back (NFC-normalized) as long as no token is unknown.
    if glass_tok.unk_id not in ids:
        assert tokenizer.decode(ids) == glass_tok.decode(ids)


def test_logits_match_numpy_forward(converted, reference):
    _, model, tokenizer = converted
    glass_model, _ = reference
    batch = [tokenizer(s).input_ids[:16] for s in SENTENCES]
    assert all(len(ids) == 16 for ids in batch)
    with glassllm.no_grad():
        expected = glass_model.forward(np.array(batch)).data
    with torch.no_grad():
        got = model(torch.tensor(batch)).logits.numpy()
    assert got.shape == expected.shape == (3, 16, 1024)
    assert np.abs(got - expected).max() < 1e-4
    # The scale check keeps the bound meaningful: logits are of order 10.
    assert np.abs(expected).max() > 5


def test_hidden_states_have_one_entry_per_layer_plus_embeddings(converted):
    _, model, tokenizer = converted
    ids = torch.tensor([tokenizer("The Queen").input_ids])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == 5
    assert out.hidden_states[0].shape == (1, ids.shape[1], 128)


def test_greedy_text_is_english_like(converted):
    _, model, tokenizer = converted
    prompt = torch.tensor([tokenizer("Alice said").input_ids])
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=30, do_sample=False)
    text = tokenizer.decode(out[0, prompt.shape[1] :])
    words = text.split()
    assert len(words) >= 8
    letters = sum(ch.isalpha() or ch.isspace() for ch in text) / len(text)
    assert letters > 0.85, text
    common = {"the", "and", "to", "a", "of", "said", "she", "it", "was", "in", "her"}
    assert sum(w.strip(",.;:!?“”'\"").lower() in common for w in words) >= 2, text
