"""nnsight models (issue 12, item 3), with the real nnsight package.

``LogitLens`` / ``TunedLens`` / trajectories take an ``nnsight.LanguageModel`` and give the
numbers of the Hugging Face model inside it; the tuned-lens-inside-a-trace recipe of
docs/integrations.md is run as written.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

nnsight = pytest.importorskip("nnsight")

from tuned_lens import LogitLens, PredictionTrajectory, TunedLens  # noqa: E402


def _language_model(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nnsight.LanguageModel(*args, **kwargs)


def _randomised(lens: TunedLens) -> TunedLens:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for translator in lens:
            translator.weight.copy_(torch.randn(translator.weight.shape, generator=gen) * 0.05)
            translator.bias.copy_(torch.randn(translator.bias.shape, generator=gen) * 0.05)
    return lens


def test_lenses_and_trajectories_on_a_language_model(glassllm, glassllm_copy, ring_ids):
    model, tokenizer, _ = glassllm
    lm = _language_model(glassllm_copy, tokenizer=tokenizer)
    for make in (LogitLens.from_model, lambda m: _randomised(TunedLens.from_model(m))):
        want = PredictionTrajectory.from_lens_and_model(make(model), model, ring_ids)
        got = PredictionTrajectory.from_lens_and_model(make(lm), lm, ring_ids)
        np.testing.assert_array_equal(got.log_probs, want.log_probs)
    lens = TunedLens.from_model(lm)
    assert lens.config.base_model_name_or_path == model.config.name_or_path
    assert len(lens) == model.config.num_hidden_layers


def test_lazily_loaded_language_model_is_dispatched(glassllm, ring_ids, tmp_path):
    model, tokenizer, folder = glassllm
    lm = _language_model(str(folder), tokenizer=tokenizer, device_map="cpu", dispatch=False)
    assert not lm.dispatched
    _randomised(TunedLens.from_model(model)).save(tmp_path)
    lens = TunedLens.from_model_and_pretrained(lm, tmp_path)
    assert lm.dispatched
    want = PredictionTrajectory.from_lens_and_model(
        TunedLens.from_model_and_pretrained(model, tmp_path), model, ring_ids
    )
    got = PredictionTrajectory.from_lens_and_model(lens, lm, ring_ids)
    np.testing.assert_allclose(got.log_probs, want.log_probs, atol=1e-6, rtol=0)


def test_tuned_lens_inside_a_trace_as_documented(glassllm, glassllm_copy, ring_ids):
    """docs/integrations.md: the translator is residual, then the final norm and unembedding."""
    model, tokenizer, _ = glassllm
    lm = _language_model(glassllm_copy, tokenizer=tokenizer)
    lens = _randomised(TunedLens.from_model(lm))
    layer = 2
    input_ids = torch.tensor([ring_ids])
    # --- the documented snippet ---
    with lm.trace(input_ids):
        h = lm.model.layers[layer].input  # hidden_states[layer]: the input of block `layer`
        h_final = h + lens[layer](h)  # the translator is residual: h + A h + b
        logits = lm.lm_head(lm.model.norm(h_final)).save()  # final norm, then unembedding
        same = lens(h, layer).save()  # the same in one call (soft-capping included)
    # ---
    hidden = model(input_ids, output_hidden_states=True).hidden_states[layer]
    translator = lens[layer]
    by_hand = hidden + hidden @ translator.weight.T + translator.bias
    expected = model.lm_head(model.model.norm(by_hand))
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(same, expected)
    # The nnsight documentation's version, lm_head(norm(A h + b)), is a different function.
    wrong = model.lm_head(model.model.norm(translator(hidden)))
    assert not torch.allclose(wrong, expected, atol=1e-3)


def test_compact_trajectory_on_a_language_model(glassllm, glassllm_copy, ring_ids):
    from tuned_lens.plotting import CompactTrajectory

    model, tokenizer, _ = glassllm
    lm = _language_model(glassllm_copy, tokenizer=tokenizer)
    prompts = [ring_ids, ring_ids[:7]]
    kwargs = {"targets": "next", "batch_size": 2, "progress": False}
    want = CompactTrajectory.from_lens_and_model(
        LogitLens.from_model(model), model, prompts, **kwargs
    )
    got = CompactTrajectory.from_lens_and_model(LogitLens.from_model(lm), lm, prompts, **kwargs)
    np.testing.assert_array_equal(got.entropy_cells, want.entropy_cells)
    np.testing.assert_array_equal(got.top_k_ids, want.top_k_ids)
