"""Unembed reproduces each model's own logits; its hash and inversion behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tuned_lens.architectures import resolve_architecture
from tuned_lens.nn import InversionOutput, Unembed
from tuned_lens.testing import tiny_input_ids, tiny_model
from tuned_lens.utils import tensor_hash, tensor_hash_of


def residual_entering_final_norm(model, input_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream where the model's final norm (or its head, if none) reads it."""
    parts = resolve_architecture(model)
    reader = parts.final_norm or parts.pre_unembed or parts.unembedding
    captured = []
    handle = reader.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            logits = model(input_ids).logits
    finally:
        handle.remove()
    assert len(captured) == 1
    return captured[0], logits


def test_unembed_reproduces_model_logits(model, input_ids):
    residual, logits = residual_entering_final_norm(model, input_ids)
    unembed = Unembed(model)
    with torch.no_grad():
        torch.testing.assert_close(unembed(residual), logits, atol=1e-5, rtol=1e-5)


def test_unembed_is_a_frozen_copy(model):
    unembed = Unembed(model)
    assert all(not p.requires_grad for p in unembed.parameters())
    parts = resolve_architecture(model)
    assert unembed.unembedding is not parts.unembedding
    assert unembed.unembedding.weight.data_ptr() != parts.unembedding.weight.data_ptr()
    assert torch.equal(unembed.unembedding.weight, parts.unembedding.weight)


@pytest.mark.parametrize(
    "post_family", ["gemma2", "gemma3_text", "cohere", "cohere2", "granite", "granitemoe"]
)
def test_softcap_and_scaling_matter(post_family, require_tiny_family):
    """Dropping the logit post-processing would break the reproduction for these families."""
    model = tiny_model(require_tiny_family(post_family))
    residual, logits = residual_entering_final_norm(model, tiny_input_ids())
    unembed = Unembed(model)
    with torch.no_grad():
        raw = unembed.unembedding(unembed.final_norm(residual))
    assert len(unembed.logit_transform) == 1
    assert not torch.allclose(raw, logits, atol=1e-3)


def test_opt_350m_project_out_is_applied():
    model = tiny_model("opt-350m")
    unembed = Unembed(model)
    assert isinstance(unembed.final_norm, torch.nn.Identity)
    assert unembed.pre_unembed.out_features == 16 and unembed.d_model == 32
    residual, logits = residual_entering_final_norm(model, tiny_input_ids())
    with torch.no_grad():
        torch.testing.assert_close(unembed(residual), logits, atol=1e-5, rtol=1e-5)


def test_wrong_width_is_rejected():
    unembed = Unembed(tiny_model("llama"))
    with pytest.raises(ValueError, match="d_model=32"):
        unembed(torch.zeros(2, 31))


def test_hash_matches_the_documented_formula():
    model = tiny_model("gpt2")
    weight = model.lm_head.weight.detach().float().numpy()
    with np.printoptions(precision=8, threshold=1000, edgeitems=3, linewidth=75):
        import hashlib

        expected = hashlib.sha256(np.array_str(weight, precision=1).encode()).hexdigest()
    assert Unembed(model).unembedding_hash() == expected == tensor_hash(weight)


def test_hash_ignores_callers_print_options():
    unembed = Unembed(tiny_model("gpt2"))
    reference = unembed.unembedding_hash()
    with np.printoptions(precision=3, threshold=10**9, linewidth=200, suppress=True):
        assert unembed.unembedding_hash() == reference


def test_hash_is_equal_for_fp16_and_fp32_and_differs_between_models():
    fp32 = tiny_model("llama")
    fp16 = tiny_model("llama", dtype=torch.float16)
    assert Unembed(fp32).unembedding_hash() == Unembed(fp16).unembedding_hash()
    other = tiny_model("llama", seed=1)
    assert Unembed(fp32).unembedding_hash() != Unembed(other).unembedding_hash()


def test_tensor_hash_properties():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((10, 1000)).astype(np.float32)
    b = rng.standard_normal((10, 1000)).astype(np.float32)
    assert tensor_hash(a) == tensor_hash(a.copy())
    assert tensor_hash(a) == tensor_hash(a.astype(np.float16))
    assert tensor_hash(a) != tensor_hash(b)
    assert len(tensor_hash(a)) == 64
    with pytest.raises(TypeError):
        tensor_hash(torch.zeros(3))  # type: ignore[arg-type]


def kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    log_p, log_q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt-350m"])
def test_invert_recovers_the_models_own_distribution(family):
    model = tiny_model(family)
    unembed = Unembed(model)
    residual, logits = residual_entering_final_norm(model, tiny_input_ids(batch=1, seq_len=4))
    result = unembed.invert(logits, max_iter=80, tol=1e-6)
    assert isinstance(result, InversionOutput)
    assert result.preimage.shape == residual.shape
    assert 0 < result.nfev
    assert float(result.kl) < 1e-3
    # The preimage is post-norm: decode it without the norm to compare distributions.
    with torch.no_grad():
        decoded = unembed.logit_transform(unembed.unembedding(unembed.pre_unembed(result.preimage)))
    assert float(kl(logits, decoded).max()) < 5e-3


def test_invert_with_sgd_and_h0_runs_and_improves():
    model = tiny_model("llama")
    unembed = Unembed(model)
    _, logits = residual_entering_final_norm(model, tiny_input_ids(batch=1, seq_len=3))
    h0 = torch.zeros(1, 3, 32)
    start = float(kl(logits, unembed(h0)).mean())
    result = unembed.invert(logits, h0=h0, optimizer="sgd", max_iter=50, step_size=0.5, tol=0)
    assert result.nfev >= 50
    assert float(result.kl) < start
    assert torch.isfinite(result.grad_norm)


def test_invert_prior_and_weight_options():
    model = tiny_model("llama")
    unembed = Unembed(model)
    _, logits = residual_entering_final_norm(model, tiny_input_ids(batch=1, seq_len=2))
    prior = torch.distributions.Normal(torch.zeros(32), torch.ones(32) * 10)
    weight = torch.ones_like(logits)
    weight_before = weight.clone()
    result = unembed.invert(logits, prior=prior, prior_weight=0.1, weight=weight, max_iter=20)
    # -log N(x; 0, 10²) > 0 for every coordinate here, so the prior term only adds to the loss.
    assert float(result.loss) > float(result.kl)
    assert torch.equal(weight, weight_before)  # the caller's tensor is not modified


def test_invert_validates_its_arguments():
    unembed = Unembed(tiny_model("llama"))
    logits = torch.zeros(2, 256)
    with pytest.raises(ValueError, match="h0 must have shape"):
        unembed.invert(logits, h0=torch.zeros(2, 31))
    with pytest.raises(ValueError, match="optimizer"):
        unembed.invert(logits, optimizer="adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vocab_size=256"):
        unembed.invert(torch.zeros(2, 10))


def test_gemma3_multimodal_model(require_tiny_family):
    """Gemma3ForConditionalGeneration: blocks under language_model, no soft-capping."""
    require_tiny_family("gemma3")
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    from tuned_lens.nn import TunedLens
    from tuned_lens.testing import tiny_config

    config = Gemma3Config(
        text_config=tiny_config("gemma3_text").to_dict(),
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
        },
        mm_tokens_per_image=4,
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config).eval()
    parts = resolve_architecture(model)
    assert parts.layers_path == "model.language_model.layers" and len(parts.layers) == 2
    residual, logits = residual_entering_final_norm(model, tiny_input_ids(seq_len=6))
    with torch.no_grad():
        torch.testing.assert_close(Unembed(model)(residual), logits, atol=1e-5, rtol=1e-5)
    assert len(TunedLens.from_model(model)) == 2


@pytest.mark.parametrize(
    "shape", [(7, 7), (1000, 5), (5, 1000), (300, 300), (20, 30, 40), (2000,), (256, 32)]
)
@pytest.mark.parametrize("scale", [1.0, 1e-4, 1e5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_summarised_hash_equals_the_full_numpy_hash(shape, scale, dtype):
    generator = torch.Generator().manual_seed(len(shape))
    tensor = (torch.randn(shape, generator=generator) * scale).to(dtype)
    assert tensor_hash_of(tensor) == tensor_hash(tensor.float().numpy())


def test_summarised_hash_with_special_values():
    tensor = torch.randn(100, 50)
    tensor[0, 0], tensor[-1, -1], tensor[1, -2] = float("nan"), float("inf"), -float("inf")
    assert tensor_hash_of(tensor) == tensor_hash(tensor.numpy())


def test_invert_in_bfloat16_optimises_in_float32():
    model = tiny_model("llama", dtype=torch.bfloat16)
    unembed = Unembed(model)
    _, logits = residual_entering_final_norm(model, tiny_input_ids(batch=1, seq_len=2))
    start = float(
        kl(logits.float(), unembed(torch.zeros(1, 2, 32, dtype=torch.bfloat16)).float()).mean()
    )
    result = unembed.invert(logits, h0=torch.zeros(1, 2, 32), max_iter=30)
    assert result.preimage.dtype == torch.bfloat16
    assert float(result.kl) < start
