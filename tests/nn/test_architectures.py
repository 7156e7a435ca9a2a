"""The architecture resolver: every tiny family resolves, unknown models get a useful error."""

from __future__ import annotations

import pytest
import torch
import transformers
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from tuned_lens.architectures import (
    ArchitectureSpec,
    LogitSoftcap,
    UnsupportedArchitectureError,
    register_architecture,
    registered_architectures,
    resolve_architecture,
    softcap_from_config,
    unregister_architecture,
)
from tuned_lens.errors import MissingDependencyError
from tuned_lens.testing import (
    TINY_FAMILIES,
    TINY_VOCAB_SIZE,
    tiny_config,
    tiny_family_unavailable,
    tiny_model,
)


def test_every_family_resolves_from_the_registry(model):
    parts = resolve_architecture(model)
    assert parts.source.startswith("registry:")
    assert isinstance(parts.layers, nn.ModuleList)
    assert len(parts.layers) == model.config.num_hidden_layers == 2
    assert isinstance(parts.unembedding, nn.Linear)
    assert parts.unembedding.out_features == TINY_VOCAB_SIZE
    assert parts.layers_path  # a dotted path relative to the model


def test_layers_path_points_at_the_block_list(model):
    from tuned_lens.model_surgery import get_key_path

    parts = resolve_architecture(model)
    assert get_key_path(model, parts.layers_path) is parts.layers


def test_post_processing_is_found_where_the_family_has_it():
    assert [
        type(m).__name__ for m in resolve_architecture(tiny_model("gemma2")).logit_transforms
    ] == ["LogitSoftcap"]
    cohere = resolve_architecture(tiny_model("cohere")).logit_transforms
    assert [m.factor for m in cohere] == [0.5]
    granite = resolve_architecture(tiny_model("granite")).logit_transforms
    assert [m.factor for m in granite] == [0.25]
    assert resolve_architecture(tiny_model("llama")).logit_transforms == []


def test_gemma3_without_softcapping_has_no_transform(require_tiny_family):
    require_tiny_family("gemma3_text")
    no_cap = tiny_model("gemma3_text", final_logit_softcapping=None)
    assert resolve_architecture(no_cap).logit_transforms == []


def test_opt_350m_has_no_final_norm_but_a_projection():
    parts = resolve_architecture(tiny_model("opt-350m"))
    assert parts.final_norm is None
    assert isinstance(parts.pre_unembed, nn.Linear)
    assert parts.pre_unembed.in_features == 32 and parts.pre_unembed.out_features == 16
    assert resolve_architecture(tiny_model("opt")).pre_unembed is None


def test_base_model_resolves_too():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="output projection"):
        resolve_architecture(model.model)  # a bare LlamaModel has no lm_head


class _ToyConfig(PretrainedConfig):
    model_type = "toy_lens_test"

    def __init__(self, hidden_size=8, num_hidden_layers=2, vocab_size=16, **kwargs):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.vocab_size = vocab_size
        super().__init__(**kwargs)


class _ToyModel(PreTrainedModel):
    config_class = _ToyConfig

    def __init__(self, config, norm_name="weird_norm"):
        super().__init__(config)
        self.stack = nn.ModuleList(nn.Linear(8, 8) for _ in range(config.num_hidden_layers))
        setattr(self, norm_name, nn.LayerNorm(8))
        self.head = nn.Linear(8, config.vocab_size)

    def get_output_embeddings(self):
        return self.head


def test_unknown_model_error_says_how_to_register():
    model = _ToyModel(_ToyConfig())
    with pytest.raises(UnsupportedArchitectureError) as info:
        resolve_architecture(model)
    message = str(info.value)
    assert "register_architecture('toy_lens_test'" in message
    assert "ArchitectureSpec(final_norm=" in message
    assert isinstance(info.value, NotImplementedError)


def test_registering_an_architecture_makes_it_resolvable():
    model = _ToyModel(_ToyConfig())
    register_architecture(
        "toy_lens_test",
        ArchitectureSpec(
            final_norm="weird_norm", layers="stack", logit_transforms=(softcap_from_config("cap"),)
        ),
    )
    try:
        parts = resolve_architecture(model)
        assert parts.source == "registry:toy_lens_test"
        assert parts.final_norm is model.weird_norm
        assert parts.layers is model.stack
        assert parts.logit_transforms == []  # the config has no "cap"
        model.config.cap = 2.0
        (softcap,) = resolve_architecture(model).logit_transforms
        assert isinstance(softcap, LogitSoftcap) and softcap.cap == 2.0
    finally:
        unregister_architecture("toy_lens_test")
    assert "toy_lens_test" not in registered_architectures()


def test_class_name_registration_overrides_model_type():
    model = tiny_model("llama")
    register_architecture(type(model), ArchitectureSpec(final_norm=None, layers="layers"))
    try:
        parts = resolve_architecture(model)
        assert parts.source == "registry:LlamaForCausalLM"
        assert parts.final_norm is None
    finally:
        unregister_architecture(type(model))
    assert resolve_architecture(model).final_norm is model.model.norm


def test_register_without_overwrite_refuses_duplicates():
    with pytest.raises(KeyError, match="already registered"):
        register_architecture("llama", ArchitectureSpec("norm", "layers"), overwrite=False)
    with pytest.raises(TypeError):
        register_architecture("x", {"final_norm": "norm"})  # type: ignore[arg-type]


def test_introspection_finds_conventional_names(caplog):
    model = _ToyModel(_ToyConfig(), norm_name="norm")
    model.layers = model.stack
    del model.stack
    with caplog.at_level("WARNING"):
        parts = resolve_architecture(model)
    assert parts.source == "introspection"
    assert parts.final_norm is model.norm and parts.layers is model.layers
    assert "not in the tuned_lens architecture registry" in caplog.text


def test_spec_with_a_wrong_path_raises():
    model = _ToyModel(_ToyConfig())
    register_architecture("toy_lens_test", ArchitectureSpec(final_norm="nope", layers="stack"))
    try:
        with pytest.raises(UnsupportedArchitectureError, match="no final norm at 'nope'"):
            resolve_architecture(model)
    finally:
        unregister_architecture("toy_lens_test")


def test_tiny_models_are_tiny_and_deterministic():
    for family in TINY_FAMILIES:
        missing = tiny_family_unavailable(family)
        if missing is not None:  # newer than the installed transformers: a clear error instead
            assert family in missing and transformers.__version__ in missing
            with pytest.raises(MissingDependencyError, match=f"tiny family '{family}' needs"):
                tiny_config(family)
            continue
        config = tiny_config(family)
        assert config.vocab_size == TINY_VOCAB_SIZE
        assert config.num_hidden_layers == 2
    a, b = tiny_model("gpt2", seed=3), tiny_model("gpt2", seed=3)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    assert sum(p.numel() for p in a.parameters()) < 100_000
    with pytest.raises(ValueError, match="unknown tiny model family"):
        tiny_config("not-a-family")


def test_transformer_lens_model(tmp_path):
    transformer_lens = pytest.importorskip("transformer_lens")
    from tuned_lens.nn import LogitLens

    cfg = transformer_lens.HookedTransformerConfig(
        n_layers=2, d_model=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=64, n_ctx=16, act_fn="gelu"
    )
    model = transformer_lens.HookedTransformer(cfg)
    tokens = torch.randint(0, 64, (1, 6))
    logits, cache = model.run_with_cache(tokens)
    lens = LogitLens.from_model(model)
    final = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
    torch.testing.assert_close(lens(final, 0), logits, atol=1e-4, rtol=1e-4)


class HookedTransformer(nn.Module):
    """A stand-in with TransformerLens's attribute layout (the package is not installed here)."""

    def __init__(self):
        super().__init__()
        from types import SimpleNamespace

        self.cfg = SimpleNamespace(d_model=16, d_vocab_out=64, n_layers=2, model_name="toy-tl")
        self.blocks = nn.ModuleList(nn.Linear(16, 16) for _ in range(2))
        self.ln_final = nn.LayerNorm(16)
        self.W_U = nn.Parameter(torch.randn(16, 64))
        self.b_U = nn.Parameter(torch.randn(64))


def test_transformer_lens_layout_is_recognised():
    from tuned_lens import model_surgery as ms
    from tuned_lens.nn import TunedLens, Unembed

    model = HookedTransformer()
    parts = resolve_architecture(model)
    assert parts.source == "transformer_lens" and parts.layers is model.blocks
    assert ms.get_transformer_layers(model) == ("blocks", model.blocks)
    h = torch.randn(3, 16)
    with torch.no_grad():
        expected = model.ln_final(h) @ model.W_U + model.b_U
        torch.testing.assert_close(Unembed(model)(h), expected)
    lens = TunedLens.from_model(model)
    assert len(lens) == 2 and lens.config.base_model_name_or_path == "toy-tl"
