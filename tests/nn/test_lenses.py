"""LogitLens and TunedLens: index convention, identity init, persistence, dtypes, generate."""

from __future__ import annotations

import functools
import json
import warnings

import pytest
import torch
from tuned_lens.architectures import resolve_architecture
from tuned_lens.errors import InvalidInputError, LensFileError
from tuned_lens.nn import Lens, LogitLens, TunedLens, TunedLensConfig, Unembed
from tuned_lens.testing import tiny_input_ids, tiny_model


def randomise_translators(lens: TunedLens, seed: int = 0, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in lens.layer_translators.parameters():
            noise = torch.randn(param.shape, generator=generator) * scale
            param.copy_(noise.to(param.dtype))


def test_hidden_states_convention(model, input_ids):
    """hidden_states has L+1 entries; entry i (i < L) is the input of block i."""
    layers = resolve_architecture(model).layers
    inputs = []
    handles = [
        block.register_forward_pre_hook(
            lambda module, args, kwargs: inputs.append(
                args[0] if args else kwargs["hidden_states"]
            ),
            with_kwargs=True,
        )
        for block in layers
    ]
    try:
        with torch.no_grad():
            out = model(input_ids, output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert len(inputs) == len(layers)
    for i, block_input in enumerate(inputs):
        torch.testing.assert_close(out.hidden_states[i], block_input)


def test_fresh_tuned_lens_equals_logit_lens(model, input_ids):
    tuned, logit = TunedLens.from_model(model), LogitLens.from_model(model)
    assert len(tuned) == model.config.num_hidden_layers
    with torch.no_grad():
        hidden = model(input_ids, output_hidden_states=True).hidden_states
        for i in range(len(tuned)):
            assert torch.equal(tuned(hidden[i], i), logit(hidden[i], i))
            assert torch.equal(tuned.transform_hidden(hidden[i], i), hidden[i])


def test_logit_lens_on_the_last_residual_is_the_model_output():
    model = tiny_model("llama")
    final = []
    handle = model.model.norm.register_forward_pre_hook(lambda m, args: final.append(args[0]))
    with torch.no_grad():
        logits = model(tiny_input_ids()).logits
    handle.remove()
    lens = LogitLens.from_model(model)
    torch.testing.assert_close(lens(final[0], 0), logits)
    assert torch.equal(lens.transform_hidden(final[0], 5), final[0])


def test_save_and_load_round_trip(model, input_ids, tmp_path):
    lens = TunedLens.from_model(model)
    randomise_translators(lens)
    lens.save(tmp_path / "lens")
    assert sorted(p.name for p in (tmp_path / "lens").iterdir()) == [
        ".lens.lock",
        "config.json",
        "lens_manifest.json",
        "params.safetensors",
    ]
    loaded = TunedLens.from_model_and_pretrained(model, tmp_path / "lens")
    assert loaded.config == lens.config
    with torch.no_grad():
        hidden = model(input_ids, output_hidden_states=True).hidden_states
        for i in range(len(lens)):
            assert torch.equal(loaded(hidden[i], i), lens(hidden[i], i))


def test_translator_formula():
    model = tiny_model("gpt2")
    lens = TunedLens.from_model(model)
    randomise_translators(lens)
    h = torch.randn(2, 3, 32)
    translator = lens[1]
    expected = lens.unembed(h + h @ translator.weight.T + translator.bias)
    with torch.no_grad():
        torch.testing.assert_close(lens(h, 1), expected)


def test_config_contents():
    model = tiny_model("llama")
    lens = TunedLens.from_model(model, model_revision="abc123", bias=True)
    config = lens.config
    assert config.base_model_name_or_path == "tiny-random-llama"
    assert config.d_model == 32 and config.num_hidden_layers == 2
    assert config.base_model_revision == "abc123"
    assert config.unembed_hash == Unembed(model).unembedding_hash()
    assert list(config.to_dict()) == [
        "base_model_name_or_path",
        "d_model",
        "num_hidden_layers",
        "bias",
        "base_model_revision",
        "unembed_hash",
        "lens_type",
    ]


def test_config_from_dict_variants():
    base = {"base_model_name_or_path": "gpt2", "d_model": 8, "num_hidden_layers": 2}
    assert TunedLensConfig.from_dict(base).unembed_hash is None
    legacy = TunedLensConfig.from_dict({**base, "unemebd_hash": "ab" * 32})
    assert legacy.unembed_hash == "ab" * 32
    with pytest.warns(UserWarning, match="unknown keys.*'extra'"):
        config = TunedLensConfig.from_dict({**base, "extra": 1})
    assert config.to_dict() == TunedLensConfig(**base).to_dict()
    with pytest.raises(TypeError, match="missing required keys"):
        TunedLensConfig.from_dict({"d_model": 8})
    with pytest.raises(ValueError, match="d_model"):
        TunedLensConfig.from_dict({**base, "d_model": 0})
    original = {**base, "extra": [1]}
    with pytest.warns(UserWarning):
        TunedLensConfig.from_dict(original)
    assert "extra" in original  # the caller's dict is left alone


def test_indexing_len_and_iteration():
    lens = TunedLens.from_model(tiny_model("llama", num_hidden_layers=3))
    assert len(lens) == 3
    assert list(lens) == list(lens.layer_translators)
    assert lens[-1] is lens.layer_translators[2]
    with pytest.raises(IndexError):
        lens[3]
    h = torch.randn(1, 32)
    assert torch.equal(lens(h, -1), lens(h, 2))
    with pytest.raises(IndexError, match="out of range"):
        lens(h, 3)


def test_bias_false():
    model = tiny_model("llama")
    lens = TunedLens.from_model(model, bias=False)
    assert all(t.bias is None for t in lens)
    assert lens.config.bias is False
    h = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(lens(h, 0), LogitLens.from_model(model)(h, 0))


def test_bias_false_round_trip(tmp_path):
    model = tiny_model("llama")
    lens = TunedLens.from_model(model, bias=False)
    randomise_translators(lens)
    lens.save(tmp_path)
    loaded = TunedLens.from_model_and_pretrained(model, tmp_path)
    assert loaded.config.bias is False
    h = torch.randn(2, 32)
    with torch.no_grad():
        assert torch.equal(loaded(h, 1), lens(h, 1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lens_follows_the_model_dtype(dtype, tmp_path):
    model = tiny_model("llama", dtype=dtype)
    lens = TunedLens.from_model(model)
    assert {p.dtype for p in lens.parameters()} == {dtype}
    h = torch.randn(2, 32, dtype=dtype)
    with torch.no_grad():
        assert lens(h, 0).dtype == dtype
    lens.save(tmp_path)
    loaded = TunedLens.from_model_and_pretrained(model, tmp_path)
    assert {p.dtype for p in loaded.parameters()} == {dtype}


def test_to_moves_the_whole_lens():
    lens = TunedLens.from_model(tiny_model("gpt2"))
    lens = lens.to(torch.float64)
    assert {p.dtype for p in lens.parameters()} == {torch.float64}
    assert lens(torch.randn(1, 32, dtype=torch.float64), 0).dtype == torch.float64


def test_lens_is_abstract():
    with pytest.raises(TypeError):
        Lens(Unembed(tiny_model("gpt2")))  # type: ignore[abstract]


def test_kwargs_routing(tmp_path):
    model = tiny_model("gpt2")
    TunedLens.from_model(model).save(tmp_path)
    # map_location goes to the parameter reader, config_file to load_lens_artifacts.
    lens = TunedLens.from_model_and_pretrained(
        model, tmp_path, map_location="cpu", config_file="config.json", weights_only=True
    )
    assert len(lens) == 2
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['bogus'\\]"):
        TunedLens.from_model_and_pretrained(model, tmp_path, bogus=1)
    with pytest.raises(TypeError):
        TunedLens.from_unembed_and_pretrained(Unembed(model), tmp_path, resource_id=str(tmp_path))
    with pytest.raises(ValueError, match="Could not find lens"):
        TunedLens.from_model_and_pretrained(model, tmp_path, config_file="other.json")


def test_revision_reaches_load_lens_artifacts(tmp_path, monkeypatch):
    from tuned_lens import load_artifacts

    model = tiny_model("gpt2")
    TunedLens.from_model(model).save(tmp_path)
    seen = {}
    real = load_artifacts.load_lens_artifacts

    @functools.wraps(real)  # keep the signature: kwargs are routed by parameter name
    def spy(resource_id, **kwargs):
        seen.update(kwargs)
        return real(resource_id, **kwargs)

    monkeypatch.setattr(load_artifacts, "load_lens_artifacts", spy)
    TunedLens.from_model_and_pretrained(model, tmp_path, revision="v1", subfolder="lens")
    assert seen == {"revision": "v1", "subfolder": "lens"}


def test_default_resource_id_is_the_model_name(tmp_path, monkeypatch):
    model = tiny_model("gpt2")
    TunedLens.from_model(model).save(tmp_path / "tiny-random-gpt2")
    monkeypatch.chdir(tmp_path)
    assert len(TunedLens.from_model_and_pretrained(model)) == 2


def test_loading_into_a_different_model_warns_or_fails(tmp_path):
    lens = TunedLens.from_model(tiny_model("llama"))
    lens.save(tmp_path)
    other = tiny_model("llama", seed=5)
    other.config.name_or_path = "some/other-model"
    with pytest.warns(UserWarning) as record:
        TunedLens.from_model_and_pretrained(other, tmp_path)
    messages = " ".join(str(w.message) for w in record)
    assert "trained on 'tiny-random-llama'" in messages
    assert "unembed_hash mismatch" in messages
    with pytest.raises(LensFileError, match="d_model=32"):
        TunedLens.from_model_and_pretrained(tiny_model("llama", hidden_size=64), tmp_path)
    # The layer count is compared before the parameters are read or any translator is built.
    with pytest.raises(LensFileError, match="2 translators but the model has 3 layers"):
        TunedLens.from_model_and_pretrained(tiny_model("llama", num_hidden_layers=3), tmp_path)


def test_same_model_loads_silently(tmp_path):
    model = tiny_model("llama")
    TunedLens.from_model(model).save(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TunedLens.from_model_and_pretrained(model, tmp_path)


def test_save_refuses_pickle_names(tmp_path):
    lens = TunedLens.from_model(tiny_model("gpt2"))
    with pytest.raises(ValueError, match="safetensors"):
        lens.save(tmp_path, ckpt="params.pt")
    lens.save(tmp_path, ckpt="weights.safetensors", config="lens.json")
    assert json.loads((tmp_path / "lens.json").read_text())["d_model"] == 32
    loaded = TunedLens.from_model_and_pretrained(
        tiny_model("gpt2"), tmp_path, ckpt_file="weights.safetensors", config_file="lens.json"
    )
    assert len(loaded) == 2


# -- generate ---------------------------------------------------------------------------------


def reference_greedy(model, lens, layer, input_ids, steps):
    """Greedy lens decoding that re-runs the full sequence each step, without a cache."""
    tokens = input_ids
    for _ in range(steps):
        with torch.no_grad():
            hidden = model(tokens, use_cache=False, output_hidden_states=True).hidden_states
        next_token = lens(hidden[layer][:, -1], layer).argmax(-1, keepdim=True)
        tokens = torch.cat([tokens, next_token], dim=-1)
    return tokens


def test_generate_smoke(model):
    lens = TunedLens.from_model(model)
    prompt = tiny_input_ids(batch=2, seq_len=5)
    for do_sample in (True, False):
        out = lens.generate(model, 1, prompt, do_sample=do_sample, max_new_tokens=6)
        assert out.shape[0] == 2 and 5 < out.shape[1] <= 11
        assert torch.equal(out[:, :5], prompt)


def float64_if_it_runs(model):
    """The model in float64 (no near-ties between cached and recomputed argmax), or in float32
    where the installed transformers cannot run it in float64: 4.46's OPT builds its causal
    mask in float32 ("value cannot be converted to type float without overflow")."""
    wide = model.double()
    try:
        with torch.no_grad():
            wide(tiny_input_ids(batch=1, seq_len=2), use_cache=False)
    except RuntimeError as error:
        if "overflow" not in str(error):
            raise
        return wide.float()
    return wide


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2", "opt-350m", "bloom", "falcon"])
def test_generate_with_cache_matches_full_recompute(family):
    model = float64_if_it_runs(tiny_model(family, eos_token_id=None))
    lens = TunedLens.from_model(model)
    randomise_translators(lens, scale=0.2)
    prompt = tiny_input_ids(batch=3, seq_len=4, seed=family.__len__())
    for layer in (0, 1):
        out = lens.generate(model, layer, prompt, do_sample=False, max_new_tokens=7)
        expected = reference_greedy(model, lens, layer, prompt, 7)
        assert torch.equal(out, expected), (family, layer)


def test_generate_feeds_only_new_tokens_to_the_model():
    model = tiny_model("llama")
    lens = TunedLens.from_model(model)
    lengths = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(
            (args[0] if args else kwargs["input_ids"]).shape[1]
        ),
        with_kwargs=True,
    )
    try:
        lens.generate(
            model, 0, tiny_input_ids(batch=2, seq_len=6), do_sample=False, max_new_tokens=4
        )
    finally:
        handle.remove()
    assert lengths[0] == 6 and set(lengths[1:]) == {1}


def test_generate_stops_rows_at_eos():
    model = tiny_model("llama")
    lens = TunedLens.from_model(model)
    prompt = tiny_input_ids(batch=3, seq_len=4, seed=7)
    free = lens.generate(model, 1, prompt, do_sample=False, max_new_tokens=6)
    # Make the second row's first generated token an end-of-sequence token (a list of ids).
    model.generation_config.eos_token_id = [int(free[1, 4]), 255]
    model.generation_config.pad_token_id = 0
    try:
        out = lens.generate(model, 1, prompt, do_sample=False, max_new_tokens=6)
    finally:
        model.generation_config.eos_token_id = 2
    eos = {int(free[1, 4]), 255}
    row = out[1, 4:].tolist()
    assert row[0] in eos and all(t == 0 for t in row[1:])
    for r in range(3):
        generated = out[r, 4:].tolist()
        if any(t in eos for t in generated):
            first = next(i for i, t in enumerate(generated) if t in eos)
            assert all(t == 0 for t in generated[first + 1 :])
        else:
            assert generated == free[r, 4:].tolist()


def test_generate_stops_when_all_rows_are_done():
    model = tiny_model("gpt2")
    lens = TunedLens.from_model(model)
    prompt = tiny_input_ids(batch=1, seq_len=3)
    first = lens.generate(model, 0, prompt, do_sample=False, max_new_tokens=1)
    model.generation_config.eos_token_id = int(first[0, -1])
    try:
        out = lens.generate(model, 0, prompt, do_sample=False, max_new_tokens=10)
    finally:
        model.generation_config.eos_token_id = 2
    assert out.shape == (1, 4)


def test_generate_one_dimensional_prompt_and_validation():
    model = tiny_model("llama")
    lens = TunedLens.from_model(model)
    out = lens.generate(model, 0, torch.tensor([5, 6, 7]), do_sample=True, max_new_tokens=3)
    assert out.shape[0] == 1 and out.shape[1] <= 6
    with pytest.raises(InvalidInputError, match="temp") as caught:
        lens.generate(model, 0, torch.tensor([5]), temp=0.0)
    assert caught.value.option == "temp"
    with pytest.raises(InvalidInputError) as caught:
        lens.generate(model, 0, torch.tensor([5]), max_new_tokens=-1)
    assert caught.value.option == "max_new_tokens"
    with pytest.raises(IndexError):
        lens.generate(model, 2, torch.tensor([5]))
    assert lens.generate(model, 0, torch.tensor([[5]]), max_new_tokens=0).shape == (1, 1)


def test_logit_lens_generates_too():
    model = tiny_model("gpt2")
    out = LogitLens.from_model(model).generate(
        model, 1, tiny_input_ids(batch=2, seq_len=3), do_sample=False, max_new_tokens=3
    )
    assert out.shape[1] <= 6
