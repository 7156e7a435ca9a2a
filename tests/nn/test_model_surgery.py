"""model_surgery: lookups through the resolver, and context managers that restore exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from tuned_lens import model_surgery as ms
from tuned_lens.testing import tiny_input_ids, tiny_model


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_restored(model, state, ids, logits):
    after = model.state_dict()
    assert list(after) == list(state)
    for key, value in state.items():
        assert torch.equal(after[key], value), key
    with torch.no_grad():
        assert torch.equal(model(ids, use_cache=False).logits, logits)


@pytest.fixture
def llama():
    return tiny_model("llama", num_hidden_layers=3)


def run(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def test_key_path_helpers(llama):
    assert ms.get_value_for_key(llama.model.layers, "1") is llama.model.layers[1]
    assert ms.get_key_path(llama, "model.layers.2.mlp") is llama.model.layers[2].mlp
    new = nn.Identity()
    ms.set_key_path_(llama, "model.layers.0.mlp", new)
    assert llama.model.layers[0].mlp is new
    ms.set_value_for_key_(llama.model.layers, "0", llama.model.layers[1])
    assert llama.model.layers[0] is llama.model.layers[1]
    with pytest.raises(AttributeError):
        ms.get_key_path(llama, "model.nope")


def test_assign_key_path_restores_on_exit_and_on_error(llama):
    ids = tiny_input_ids()
    state, logits = snapshot(llama), run(llama, ids)
    original = llama.model.norm
    with ms.assign_key_path(llama, "model.norm", nn.Identity()):
        assert not torch.equal(run(llama, ids), logits)
    assert llama.model.norm is original
    with pytest.raises(RuntimeError), ms.assign_key_path(llama, "model.norm", nn.Identity()):
        raise RuntimeError("boom")
    assert_restored(llama, state, ids, logits)


def test_lookups(family):
    model = tiny_model(family)
    path, layers = ms.get_transformer_layers(model)
    assert isinstance(layers, nn.ModuleList) and len(layers) == model.config.num_hidden_layers
    assert ms.get_key_path(model, path) is layers
    assert isinstance(ms.get_unembedding_matrix(model), nn.Linear)
    if family == "opt-350m":
        with pytest.raises(ValueError, match="no final norm"):
            ms.get_final_norm(model)
    else:
        assert isinstance(ms.get_final_norm(model), nn.Module)


def test_delete_layers_matches_a_shallower_model(llama):
    ids = tiny_input_ids()
    state, logits = snapshot(llama), run(llama, ids)
    with ms.delete_layers(llama, [1]):
        assert len(llama.model.layers) == 2 and llama.config.num_hidden_layers == 2
        deleted = run(llama, ids)
    assert not torch.equal(deleted, logits)
    with ms.permute_layers(llama, [0, 2]):
        assert torch.equal(run(llama, ids), deleted)
    assert_restored(llama, state, ids, logits)
    assert llama.config.num_hidden_layers == 3


def test_permute_identity_is_a_no_op_and_reorder_changes_output(llama):
    ids = tiny_input_ids()
    state, logits = snapshot(llama), run(llama, ids)
    with ms.permute_layers(llama, [0, 1, 2]):
        assert torch.equal(run(llama, ids), logits)
    blocks = list(llama.model.layers)
    with ms.permute_layers(llama, [2, 0, 0, 1]):  # reorder and repeat
        assert list(llama.model.layers) == [blocks[2], blocks[0], blocks[0], blocks[1]]
        assert len(llama.model.layers) == 4 and llama.config.num_hidden_layers == 4
        assert not torch.equal(run(llama, ids), logits)
    assert_restored(llama, state, ids, logits)


def test_layer_types_follow_the_permutation():
    model = tiny_model("gemma2", num_hidden_layers=3)
    # transformers 4.46 has no config.layer_types (each Gemma-2 block keeps its own window).
    before = getattr(model.config, "layer_types", None)
    ids = tiny_input_ids()
    state, logits = snapshot(model), run(model, ids)
    with ms.permute_layers(model, [2, 1]):
        if before is None:
            assert getattr(model.config, "layer_types", None) is None  # none invented
        else:
            assert model.config.layer_types == [before[2], before[1]]
        assert not torch.equal(run(model, ids), logits)
    assert getattr(model.config, "layer_types", None) == before
    assert_restored(model, state, ids, logits)


def test_permute_layers_in_place(llama):
    blocks = list(llama.model.layers)
    ms.permute_layers_(llama, [2, 1, 0])
    assert list(llama.model.layers) == blocks[::-1]


def test_replace_layers_restores(llama):
    ids = tiny_input_ids()
    outputs: list = []
    hook = llama.model.layers[0].register_forward_hook(lambda m, a, o: outputs.append(o))
    state, logits = snapshot(llama), run(llama, ids)
    hook.remove()
    # A block returns a tuple on transformers 4.x and the hidden states alone on 5.x.
    as_tuple = isinstance(outputs[0], tuple)

    class Skip(nn.Module):
        def forward(self, hidden_states, *args, **kwargs):
            return (hidden_states,) if as_tuple else hidden_states

    with ms.replace_layers(llama, [0, -1], [Skip(), Skip()]):
        assert isinstance(llama.model.layers[2], Skip)
        skipped = run(llama, ids)
    assert not torch.equal(skipped, logits)
    assert_restored(llama, state, ids, logits)
    with pytest.raises(ValueError, match="2 indices but 1 replacement"):
        with ms.replace_layers(llama, [0, 1], [Skip()]):
            pass


def test_index_validation(llama):
    with pytest.raises(IndexError, match="out of range"):
        with ms.delete_layers(llama, [3]):
            pass
    with pytest.raises(TypeError):
        with ms.permute_layers(llama, [0.5]):  # type: ignore[list-item]
            pass
    assert len(llama.model.layers) == 3


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "opt", "bloom", "falcon"])
def test_delete_restores_other_families(family):
    model = tiny_model(family)
    ids = tiny_input_ids()
    state, logits = snapshot(model), run(model, ids)
    with ms.delete_layers(model, [0]):
        assert len(ms.get_transformer_layers(model)[1]) == 1
        assert not torch.equal(run(model, ids), logits)
    assert_restored(model, state, ids, logits)
