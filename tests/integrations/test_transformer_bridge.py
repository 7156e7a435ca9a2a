"""TransformerLens 4's TransformerBridge (issue 12, item 2), with the real package.

Runs where TransformerLens 4 is installed (``make test-tl4``); the main environment keeps
TransformerLens 3 for the HookedTransformer tests (tests/plotting, tests/nn).
"""

from __future__ import annotations

import copy
import warnings
from importlib.metadata import version

import numpy as np
import pytest
import torch

pytest.importorskip("transformer_lens")
if int(version("transformer-lens").split(".")[0]) < 4:
    pytest.skip("needs TransformerLens 4 (make test-tl4)", allow_module_level=True)

from transformer_lens.model_bridge import TransformerBridge  # noqa: E402
from tuned_lens import LogitLens, PredictionTrajectory, TunedLens  # noqa: E402


def _boot(hf_model, folder, tokenizer) -> TransformerBridge:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_transformers(
            str(folder), hf_model=hf_model, tokenizer=tokenizer, device="cpu"
        )


@pytest.fixture
def bridge(glassllm, glassllm_copy):
    _, tokenizer, folder = glassllm
    return _boot(glassllm_copy, folder, tokenizer)


def _randomised(lens: TunedLens) -> TunedLens:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for translator in lens:
            translator.weight.copy_(torch.randn(translator.weight.shape, generator=gen) * 0.05)
            translator.bias.copy_(torch.randn(translator.bias.shape, generator=gen) * 0.05)
    return lens


def test_lenses_on_a_bridge_match_the_hf_model(glassllm, bridge, ring_ids):
    model = glassllm[0]
    for make in (LogitLens.from_model, lambda m: _randomised(TunedLens.from_model(m))):
        want = PredictionTrajectory.from_lens_and_model(make(model), model, ring_ids)
        got = PredictionTrajectory.from_lens_and_model(make(bridge), bridge, ring_ids)
        np.testing.assert_allclose(got.log_probs, want.log_probs, atol=2e-4, rtol=0)
    lens = TunedLens.from_model(bridge)
    assert lens.config.base_model_name_or_path == model.config.name_or_path
    assert lens.config.unembed_hash == TunedLens.from_model(model).config.unembed_hash


def test_from_model_and_pretrained_on_a_bridge(glassllm, bridge, ring_ids, tmp_path):
    model = glassllm[0]
    _randomised(TunedLens.from_model(model)).save(tmp_path)
    on_hf = TunedLens.from_model_and_pretrained(model, tmp_path)
    on_bridge = TunedLens.from_model_and_pretrained(bridge, tmp_path)
    h = torch.randn(1, 4, model.config.hidden_size)
    torch.testing.assert_close(on_bridge(h, 2), on_hf(h, 2), atol=2e-4, rtol=0)


def test_soft_capping_goes_through_the_bridge(glassllm, tmp_path):
    """Gemma-2's final-logit soft-capping is the bridge's output transform, applied once."""
    from tuned_lens.testing import tiny_input_ids, tiny_model

    hf = tiny_model("gemma2")
    assert hf.config.final_logit_softcapping
    hf.save_pretrained(tmp_path)
    bridge = _boot(copy.deepcopy(hf), tmp_path, glassllm[1])
    ids = tiny_input_ids(1, 7)[0].tolist()
    want = PredictionTrajectory.from_lens_and_model(LogitLens.from_model(hf), hf, ids)
    got = PredictionTrajectory.from_lens_and_model(LogitLens.from_model(bridge), bridge, ids)
    np.testing.assert_allclose(got.log_probs, want.log_probs, atol=1e-4, rtol=0)
    h = torch.randn(2, 3, hf.config.hidden_size) * 30
    cap = hf.config.final_logit_softcapping
    assert LogitLens.from_model(bridge)(h, 0).abs().max() <= cap + 1e-4


@pytest.mark.parametrize(
    ("hooks", "component"),
    [
        ("hook_in", "resid_pre"),  # canonical names only, read through the legacy alias
        ("hook_resid_pre", "resid_pre"),  # legacy names only
        ("hook_in", "hook_in"),  # the canonical name itself
        ("hook_out", "resid_post"),
    ],
)
def test_from_lens_and_cache_with_bridge_hook_names(bridge, ring_ids, hooks, component):
    ids = torch.tensor([ring_ids])
    logits, cache = bridge.run_with_cache(ids, names_filter=lambda name: name.endswith(hooks))
    lens = LogitLens.from_model(bridge)
    traj = PredictionTrajectory.from_lens_and_cache(
        lens, ids[0], cache, logits, residual_component=component
    )
    n = len(bridge.blocks)
    assert traj.log_probs.shape == (n + 1, len(ring_ids), logits.shape[-1])
    layer1 = lens(cache[f"blocks.1.{hooks}"], 1).log_softmax(-1)[0]
    np.testing.assert_allclose(traj.log_probs[1], layer1.detach().numpy(), atol=1e-5)


def test_from_lens_and_cache_of_the_full_cache_matches_the_model_path(bridge, ring_ids):
    ids = torch.tensor([ring_ids])
    logits, cache = bridge.run_with_cache(ids)
    lens = LogitLens.from_model(bridge)
    from_cache = PredictionTrajectory.from_lens_and_cache(lens, ids[0], cache, logits)
    from_model = PredictionTrajectory.from_lens_and_model(lens, bridge, ring_ids)
    np.testing.assert_allclose(from_cache.log_probs, from_model.log_probs, atol=1e-5)


def test_processed_bridge_warns_naming_the_reason(bridge, ring_ids):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge.enable_compatibility_mode()
    with pytest.warns(UserWarning, match="compatibility mode is on.*weights were processed"):
        lens = LogitLens.from_model(bridge)
    with pytest.warns(UserWarning, match="compatibility mode"):
        PredictionTrajectory.from_lens_and_model(lens, bridge, ring_ids)


def test_raw_bridge_does_not_warn(bridge, ring_ids):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        lens = LogitLens.from_model(bridge)
        PredictionTrajectory.from_lens_and_model(lens, bridge, ring_ids)


def test_compact_trajectory_of_padded_prompts_on_a_bridge(glassllm, bridge, ring_ids):
    """Prompts of different lengths: the bridge gets the attention mask and position ids."""
    from tuned_lens.plotting import CompactTrajectory

    model = glassllm[0]
    prompts = [ring_ids, ring_ids[:7]]
    kwargs = {"targets": "next", "batch_size": 2, "progress": False}
    want = CompactTrajectory.from_lens_and_model(
        LogitLens.from_model(model), model, prompts, **kwargs
    )
    got = CompactTrajectory.from_lens_and_model(
        LogitLens.from_model(bridge), bridge, prompts, **kwargs
    )
    real = np.asarray(want.attention_mask, dtype=bool)  # (prompts, T): padding is not decoded
    for i in range(len(prompts)):
        np.testing.assert_allclose(
            got.entropy_cells[i][..., real[i]], want.entropy_cells[i][..., real[i]], atol=1e-3
        )
