"""The least-squares initialisation, Muon, and the ``fast`` recipe against the original's."""

from __future__ import annotations

import pytest
import torch
from tuned_lens.errors import InvalidInputError, MissingDependencyError
from tuned_lens.training.optim import MuonWithBiases, OptimizerConfig
from tuned_lens.training.train_config import TrainConfig


@pytest.fixture(scope="module")
def glassllm_split():
    from tuned_lens.assets import load_glassllm, tinyshakespeare_text
    from tuned_lens.data import pack_documents

    model, tokenizer = load_glassllm()
    text = tinyshakespeare_text()
    cut = text.index("\n\n", int(len(text) * 0.9)) + 2  # hold out the last tenth
    train = pack_documents([text[:cut]], tokenizer, max_seq_len=128)
    held_out = pack_documents([text[cut:]], tokenizer, max_seq_len=128)
    return model, train, held_out


def _train(model, chunks, **kwargs):
    from tuned_lens.nn import TunedLens
    from tuned_lens.training.train_loop import train_lens

    lens = TunedLens.from_model(model)
    config = TrainConfig(tokens_per_step=2048, per_gpu_batch_size=8, progress=False, **kwargs)
    result = train_lens(model, lens, chunks, config)
    return lens, result


def test_least_squares_init_is_the_float64_least_squares_fit(glassllm_split):
    """With the whole budget on the fit, each translator is the lstsq of h_L − h on [h, 1]."""
    from tuned_lens.data import ChunkSampler

    model, train, _ = glassllm_split
    lens, result = _train(model, train, num_steps=1, init="least_squares")
    assert result.losses == [] and result.start_step == 1
    # Oracle: the same chunks (the sampler's step 0), h_L from the last block (before the final
    # norm, a forward hook), solved by QR-based lstsq in float64 with an explicit intercept.
    sampler = ChunkSampler(len(train), micro_batch_size=8, world_size=1, rank=0, seed=42)
    ids = torch.cat([train.input_ids[i] for i in sampler.step_indices(0, 16)])
    kept = {}
    handle = model.model.layers[-1].register_forward_hook(
        lambda _m, _a, out: kept.update(h=out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    handle.remove()
    final = kept["h"].reshape(-1, 128).double()
    for layer, translator in enumerate(lens.layer_translators):
        x = hidden[layer].reshape(-1, 128).double()
        design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
        solution = torch.linalg.lstsq(design, final - x).solution  # (d + 1, d)
        torch.testing.assert_close(translator.weight.double(), solution[:-1].T, atol=2e-3, rtol=0)
        torch.testing.assert_close(translator.bias.double(), solution[-1], atol=2e-3, rtol=0)


@pytest.mark.slow
def test_fast_recipe_beats_the_original_at_every_layer(glassllm_split):
    """Quality bar: same tokens (3 × 2048), held-out KL lower at EVERY layer with ``fast``."""
    from tuned_lens.nn import LogitLens
    from tuned_lens.training.eval_loop import EvalConfig, evaluate_lenses

    model, train, held_out = glassllm_split
    original, _ = _train(model, train, num_steps=3)
    fast, _ = _train(model, train, num_steps=3, recipe="fast")
    lenses = {"logit": LogitLens.from_model(model), "original": original, "fast": fast}
    cfg = EvalConfig(tokens=4096, per_gpu_batch_size=8, progress=False)
    kl = evaluate_lenses(model, lenses, held_out, cfg).aggregate
    assert len(kl["fast"]["kl"]) == 4
    for layer, value in kl["fast"]["kl"].items():
        assert value < kl["original"]["kl"][layer], (layer, kl["fast"]["kl"], kl["original"]["kl"])
    # Oracle for the evaluation's KL: the model's own logits against the fast lens, in float64.
    ids = held_out.input_ids[:2]
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        p = out.logits.double().log_softmax(-1)
        q = fast(out.hidden_states[0], idx=0).double().log_softmax(-1)
    direct = (p.exp() * (p - q)).sum(-1).mean().item()
    assert direct < kl["original"]["kl"]["layer_0"]


@pytest.mark.skipif(
    not hasattr(torch.optim, "Muon"),
    reason=f"torch.optim.Muon needs torch >= 2.9 (installed: torch {torch.__version__})",
)
def test_muon_steps_matrices_with_muon_and_biases_with_sgd():
    """One hybrid step equals torch.optim.Muon on the weights and Nesterov SGD on the biases."""
    torch.manual_seed(0)
    layers = torch.nn.ModuleList([torch.nn.Linear(6, 6) for _ in range(2)])
    twin = [p.detach().clone().requires_grad_(True) for p in layers.parameters()]
    grads = [torch.randn_like(p) for p in layers.parameters()]
    hybrid = OptimizerConfig(optimizer="muon").build(layers.parameters())
    assert isinstance(hybrid, MuonWithBiases)
    muon = torch.optim.Muon([twin[0], twin[2]], lr=0.02, momentum=0.9, weight_decay=1e-3)
    sgd = torch.optim.SGD(
        [twin[1], twin[3]], lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3
    )
    for _ in range(2):
        for p, q, g in zip(layers.parameters(), twin, grads):
            p.grad, q.grad = g.clone(), g.clone()
        hybrid.step()
        muon.step()
        sgd.step()
    for p, q in zip(layers.parameters(), twin):
        torch.testing.assert_close(p, q)
    # The state survives a round trip (what checkpoints rely on).
    again = OptimizerConfig(optimizer="muon").build(layers.parameters())
    again.load_state_dict(hybrid.state_dict())
    assert again.state_dict()["state"].keys() == hybrid.state_dict()["state"].keys()


def test_options_are_checked(monkeypatch):
    with pytest.raises(InvalidInputError, match="init must be one of"):
        TrainConfig(init="zeros")
    with pytest.raises(InvalidInputError, match="multiple of tokens_per_step"):
        TrainConfig(tokens_per_step=256, init="least_squares", init_tokens=300)
    with pytest.raises(InvalidInputError, match="exceed the budget"):
        TrainConfig(num_steps=2, tokens_per_step=256, init="least_squares", init_tokens=768)
    with pytest.raises(InvalidInputError, match="recipe must be one of"):
        TrainConfig(recipe="faster")
    assert TrainConfig().init_steps == 0  # the original recipe is untouched by default
    monkeypatch.delattr(torch.optim, "Muon", raising=False)  # what torch < 2.9 looks like
    with pytest.raises(MissingDependencyError, match="torch >= 2.9"):
        OptimizerConfig(optimizer="MUON").build([torch.nn.Parameter(torch.zeros(2, 2))])
