"""Finding lens files: local folders, and the Hub through a hand-built offline cache."""

from __future__ import annotations

import json

import pytest
import torch
from tuned_lens.load_artifacts import available_lens_artifacts, load_lens_artifacts
from tuned_lens.nn import TunedLens
from tuned_lens.testing import tiny_input_ids, tiny_model

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("TUNED_LENS_REPO_ID", raising=False)
    monkeypatch.delenv("TUNED_LENS_REPO_TYPE", raising=False)


def build_hub_cache(cache, lenses, *, repo="spaces--AlignmentResearch--tuned-lens", pickle=True):
    """A Hugging Face hub cache holding ``lenses`` ({id: lens}) at revision main."""
    root = cache / repo
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(SHA)
    for lens_id, lens in lenses.items():
        folder = root / "snapshots" / SHA / "lens" / lens_id
        folder.mkdir(parents=True)
        if pickle:  # the original's layout
            torch.save(lens.layer_translators.state_dict(), folder / "params.pt")
            (folder / "config.json").write_text(json.dumps(lens.config.to_dict()))
        else:
            lens.save(folder)
    return cache


def trained_lens(model, seed=0):
    lens = TunedLens.from_model(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.layer_translators.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return lens


def test_local_folder_with_either_parameter_file(tmp_path):
    model = tiny_model("gpt2")
    lens = trained_lens(model)
    lens.save(tmp_path / "a")
    config, params = load_lens_artifacts(str(tmp_path / "a"))
    assert config.name == "config.json" and params.name == "params.safetensors"
    (tmp_path / "b").mkdir()
    torch.save(lens.layer_translators.state_dict(), tmp_path / "b" / "params.pt")
    (tmp_path / "b" / "config.json").write_text(json.dumps(lens.config.to_dict()))
    config, params = load_lens_artifacts(str(tmp_path / "b"))
    assert params.name == "params.pt"


def test_incomplete_local_folder_lists_its_contents(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"Could not find lens.*holds \['config.json'\]"):
        load_lens_artifacts(str(tmp_path))


@pytest.mark.parametrize("bad", ["../escape", "lens/../../x", "/abs/path", "~/x", ""])
def test_unsafe_resource_ids_are_rejected(bad):
    with pytest.raises(ValueError):
        load_lens_artifacts(bad)


def test_hub_cache_offline_round_trip(tmp_path):
    model = tiny_model("gpt2")
    lens = trained_lens(model)
    cache = build_hub_cache(tmp_path / "hub", {"tiny-random-gpt2": lens})
    config, params = load_lens_artifacts("tiny-random-gpt2", cache_dir=str(cache))
    assert SHA in str(config) and params.name == "params.pt"
    loaded = TunedLens.from_model_and_pretrained(model, cache_dir=str(cache))
    hidden = model(tiny_input_ids(), output_hidden_states=True).hidden_states
    with torch.no_grad():
        for i in range(len(lens)):
            assert torch.equal(loaded(hidden[i], i), lens(hidden[i], i))


def test_hub_cache_with_nested_ids_and_safetensors(tmp_path):
    model = tiny_model("llama")
    lens = trained_lens(model)
    cache = build_hub_cache(tmp_path / "hub", {"org/tiny-llama": lens}, pickle=False)
    config, params = load_lens_artifacts("org/tiny-llama", cache_dir=str(cache))
    assert params.name == "params.safetensors"
    loaded = TunedLens.from_model_and_pretrained(model, "org/tiny-llama", cache_dir=str(cache))
    assert torch.equal(loaded[1].weight, lens[1].weight)


def test_missing_lens_lists_the_available_ones(tmp_path):
    model = tiny_model("gpt2")
    cache = build_hub_cache(
        tmp_path / "hub", {"gpt2": trained_lens(model), "EleutherAI/pythia-x": trained_lens(model)}
    )
    with pytest.raises(ValueError, match="Could not find lens at the specified") as info:
        load_lens_artifacts("nope", cache_dir=str(cache))
    message = str(info.value)
    assert "EleutherAI/pythia-x, gpt2" in message
    assert "HF_HUB_OFFLINE" in message
    assert available_lens_artifacts(
        "AlignmentResearch/tuned-lens", "space", cache_dir=str(cache)
    ) == {"gpt2", "EleutherAI/pythia-x"}


def test_repo_environment_variables(tmp_path, monkeypatch):
    model = tiny_model("gpt2")
    cache = build_hub_cache(
        tmp_path / "hub", {"tiny": trained_lens(model)}, repo="models--someone--lenses"
    )
    with pytest.raises(ValueError, match="space 'AlignmentResearch/tuned-lens'"):
        load_lens_artifacts("tiny", cache_dir=str(cache))
    monkeypatch.setenv("TUNED_LENS_REPO_ID", "someone/lenses")
    monkeypatch.setenv("TUNED_LENS_REPO_TYPE", "model")
    config, _ = load_lens_artifacts("tiny", cache_dir=str(cache))
    assert "models--someone--lenses" in str(config)
    # Explicit arguments win over the environment.
    with pytest.raises(ValueError, match="dataset 'x/y'"):
        load_lens_artifacts("tiny", repo_id="x/y", repo_type="dataset", cache_dir=str(cache))


def test_unknown_revision_offline(tmp_path):
    cache = build_hub_cache(tmp_path / "hub", {"gpt2": trained_lens(tiny_model("gpt2"))})
    with pytest.raises(ValueError, match="revision 'v9'"):
        load_lens_artifacts("gpt2", revision="v9", cache_dir=str(cache))
    with pytest.raises(FileNotFoundError):
        available_lens_artifacts(
            "AlignmentResearch/tuned-lens", "space", revision="v9", cache_dir=str(cache)
        )
    assert available_lens_artifacts(
        "AlignmentResearch/tuned-lens", "space", revision=SHA, cache_dir=str(cache)
    ) == {"gpt2"}
