"""Causal bases on the real glassllm model, for the logit lens and a perturbed tuned lens."""

import pytest
import torch
from tuned_lens.causal import CausalBasis, extract_causal_bases, remove_subspace
from tuned_lens.stats import kl_divergence

_TEXTS = [
    "Alice was beginning to get very tired of sitting by her sister on the bank",
    "The Queen had only one way of settling all difficulties, great or small",
]


@pytest.fixture(scope="module")
def glassllm_hiddens():
    from tuned_lens.assets import load_glassllm

    model, tokenizer = load_glassllm()
    batch = tokenizer(_TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(batch.input_ids, output_hidden_states=True)
    # Lens index i reads hidden_states[i]; the last (final-normed) state has no lens.
    return model, [h[:, :-1] for h in out.hidden_states[:-1]], batch.input_ids[:, 1:]


def _lenses(model):
    from tuned_lens.nn.lenses import LogitLens, TunedLens

    tuned = TunedLens.from_model(model)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a fresh tuned lens is the logit lens; perturb it to make A_ℓ ≠ I
        for translator in tuned:
            translator.weight.copy_(torch.randn(translator.weight.shape, generator=gen) * 0.05)
            translator.bias.copy_(torch.randn(translator.bias.shape, generator=gen) * 0.1)
    return {"logit": LogitLens.from_model(model), "tuned": tuned}


def _energy(lens, hidden, layer, direction, mode):
    rows = hidden.reshape(-1, hidden.shape[-1])
    with torch.no_grad():
        ablated = remove_subspace(rows, direction[:, None], mode=mode, orthonormal=True)
        return kl_divergence(lens(rows, layer), lens(ablated, layer)).mean().item()


@pytest.mark.parametrize("lens_kind", ["logit", "tuned"])
@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_bases_are_sorted_orthonormal_and_their_energies_are_real(
    glassllm_hiddens, lens_kind, mode
):
    model, hiddens, _ = glassllm_hiddens
    lens = _lenses(model)[lens_kind]
    k = 3
    bases = list(extract_causal_bases(lens, hiddens, k, max_iter=15, mode=mode))
    assert len(bases) == len(hiddens) == 4
    gen = torch.Generator().manual_seed(1)
    for layer, basis in enumerate(bases):
        assert isinstance(basis, CausalBasis)
        assert basis.energies.shape == (k,) and basis.vectors.shape == (128, k)
        assert bool((basis.energies[:-1] >= basis.energies[1:]).all())
        torch.testing.assert_close(basis.vectors.T @ basis.vectors, torch.eye(k), atol=1e-5, rtol=0)
        # The reported energy is the KL of ablating that direction, recomputed independently.
        for j in range(k):
            recomputed = _energy(lens, hiddens[layer], layer, basis.vectors[:, j], mode)
            assert recomputed == pytest.approx(basis.energies[j].item(), rel=1e-3, abs=1e-5)
        # The top direction beats random directions by a wide margin.
        top = basis.energies[0].item()
        for _ in range(5):
            random_direction = torch.randn(128, generator=gen)
            random_direction /= random_direction.norm()
            assert top > _energy(lens, hiddens[layer], layer, random_direction, mode)


def test_label_objective_and_resample_mode(glassllm_hiddens):
    model, hiddens, labels = glassllm_hiddens
    lens = _lenses(model)["tuned"]
    with_labels = list(extract_causal_bases(lens, hiddens[:2], 2, labels=labels, max_iter=10))
    resampled = list(extract_causal_bases(lens, hiddens[:2], 2, max_iter=10, mode="resample"))
    for basis in with_labels + resampled:
        assert bool((basis.energies[:-1] >= basis.energies[1:]).all())
        torch.testing.assert_close(basis.vectors.T @ basis.vectors, torch.eye(2), atol=1e-5, rtol=0)
    assert all(basis.energies[0] > 0 for basis in with_labels)


def test_argument_validation(glassllm_hiddens):
    model, hiddens, labels = glassllm_hiddens
    lens = _lenses(model)["logit"]
    with pytest.raises(ValueError, match="mode"):
        next(extract_causal_bases(lens, hiddens, 1, mode="median"))
    with pytest.raises(ValueError, match="k must"):
        next(extract_causal_bases(lens, hiddens, 0))
    with pytest.raises(ValueError, match="k must"):
        next(extract_causal_bases(lens, hiddens, 129))
    with pytest.raises(ValueError, match="labels"):
        next(extract_causal_bases(lens, hiddens, 1, labels=labels[:, :3]))
