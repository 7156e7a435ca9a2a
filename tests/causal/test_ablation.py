"""Layer and subspace ablation hooks on tiny random models (tensor- and tuple-returning blocks)."""

from contextlib import contextmanager

import pytest
import torch
from tuned_lens.causal import ablate_layer, ablate_subspace
from tuned_lens.model_surgery import get_transformer_layers
from tuned_lens.testing import tiny_model

# llama blocks return a tensor; gpt_neo and bloom blocks return tuples.
FAMILIES = ["llama", "gpt_neo", "bloom"]
LAYER = 1


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return tiny_model(request.param).eval()


@pytest.fixture(scope="module")
def input_ids():
    return torch.randint(4, 200, (4, 6), generator=torch.Generator().manual_seed(0))


@contextmanager
def _capture(model, layer):
    """Record (input, output) hidden states of a block, as later hooks and the model see them."""
    _, layers = get_transformer_layers(model)
    seen = {}

    def hook(module, args, kwargs, output):
        seen["input"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        hidden = output[0] if isinstance(output, tuple) else output
        seen["output"] = hidden.detach().clone()

    handle = layers[layer].register_forward_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def _run(model, input_ids):
    with torch.no_grad():
        return model(input_ids).logits


def _clean_residual(model, input_ids):
    with _capture(model, LAYER) as seen:
        logits = _run(model, input_ids)
    return seen["input"], seen["output"] - seen["input"], logits


def test_zero_ablation_makes_the_block_an_identity(model, input_ids):
    x, _, clean_logits = _clean_residual(model, input_ids)
    with ablate_layer(model, LAYER, "zero"), _capture(model, LAYER) as seen:
        ablated_logits = _run(model, input_ids)
    torch.testing.assert_close(seen["input"], x)
    torch.testing.assert_close(seen["output"], seen["input"], rtol=0, atol=0)
    assert not torch.allclose(ablated_logits, clean_logits)
    torch.testing.assert_close(_run(model, input_ids), clean_logits)  # hook removed on exit


@pytest.mark.parametrize("mode", ["batch", "token"])
def test_mean_ablation_replaces_the_residual_by_its_mean(model, input_ids, mode):
    x, residual, _ = _clean_residual(model, input_ids)
    with ablate_layer(model, LAYER, "mean", mode=mode), _capture(model, LAYER) as seen:
        _run(model, input_ids)
    if mode == "batch":
        expected = residual.mean(dim=0, keepdim=True).expand_as(residual)
    else:
        expected = residual.reshape(-1, residual.shape[-1]).mean(dim=0).expand_as(residual)
    assert seen["output"].shape == x.shape
    torch.testing.assert_close(seen["output"] - seen["input"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["batch", "token"])
def test_resample_ablation_takes_another_samples_residual(model, input_ids, mode):
    _, residual, clean_logits = _clean_residual(model, input_ids)
    gen = torch.Generator().manual_seed(3)
    with (
        ablate_layer(model, LAYER, "resample", mode=mode, generator=gen),
        _capture(model, LAYER) as seen,
    ):
        _run(model, input_ids)
    new = seen["output"] - seen["input"]
    assert new.shape == residual.shape
    axis_rows = (lambda t: t.reshape(-1, t.shape[-1])) if mode == "token" else (lambda t: t)
    clean_rows, new_rows = axis_rows(residual), axis_rows(new)
    for i in range(new_rows.shape[0]):
        distances = (clean_rows - new_rows[i]).flatten(1).abs().amax(dim=1)
        source = int(distances.argmin())
        assert distances[source] < 1e-5 and source != i
    torch.testing.assert_close(_run(model, input_ids), clean_logits)


def test_hook_is_removed_after_an_exception(model, input_ids):
    clean = _run(model, input_ids)
    with pytest.raises(RuntimeError, match="boom"), ablate_layer(model, LAYER, "zero"):
        raise RuntimeError("boom")
    torch.testing.assert_close(_run(model, input_ids), clean)
    # A failure inside the hook (too few samples) also leaves the model clean.
    with pytest.raises(ValueError, match="at least 2 samples"), ablate_layer(model, LAYER, "mean"):
        _run(model, input_ids[:1])
    torch.testing.assert_close(_run(model, input_ids), clean)


def test_ablate_layer_validation(model):
    with pytest.raises(ValueError, match="method"):
        with ablate_layer(model, 0, "median"):
            pass
    with pytest.raises(ValueError, match="mode"):
        with ablate_layer(model, 0, "mean", mode="sequence"):
            pass
    with pytest.raises(IndexError, match="out of range"):
        with ablate_layer(model, 7, "zero"):
            pass


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablate_subspace_removes_directions_from_the_block_output(model, input_ids, mode):
    d = model.config.hidden_size
    A = torch.randn(d, 3, generator=torch.Generator().manual_seed(4))
    _, _, clean_logits = _clean_residual(model, input_ids)
    with ablate_subspace(model, A, LAYER, mode=mode), _capture(model, LAYER) as seen:
        _run(model, input_ids)
    coords = (seen["output"] @ A).reshape(-1, 3)
    expected = torch.zeros_like(coords) if mode == "zero" else coords.mean(0).expand_as(coords)
    torch.testing.assert_close(coords, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_run(model, input_ids), clean_logits)
