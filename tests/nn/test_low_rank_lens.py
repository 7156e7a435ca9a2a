"""Low-rank tuned lenses: the gradient reaches both factors, files round-trip, the rank is honest."""

from __future__ import annotations

import json

import pytest
import torch
from tuned_lens.errors import InvalidInputError, LensFileError
from tuned_lens.lens_config import TunedLensConfig
from tuned_lens.nn import TunedLens
from tuned_lens.nn.low_rank import LowRankTranslator
from tuned_lens.testing import tiny_input_ids, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2")


def test_fresh_low_rank_lens_is_the_logit_lens_and_both_factors_learn(model):
    lens = TunedLens.from_model(model, rank=3)
    assert lens.config.rank == 3 and isinstance(lens[0], LowRankTranslator)
    ids = tiny_input_ids(2, 8)
    with torch.no_grad():
        hidden = model(ids, output_hidden_states=True).hidden_states
    h = hidden[1]
    torch.testing.assert_close(lens(h, 1), lens.unembed(h), rtol=0, atol=0)  # U = 0
    translator = lens[1]
    optimiser = torch.optim.SGD(translator.parameters(), lr=0.5)
    grads = []
    for _ in range(2):
        optimiser.zero_grad()
        loss = lens(h, 1).log_softmax(-1)[..., 0].mean().neg()
        loss.backward()
        grads.append({n: p.grad.abs().max().item() for n, p in translator.named_parameters()})
        optimiser.step()
    assert grads[0]["u"] > 0 and grads[0]["bias"] > 0
    assert grads[0]["v"] == 0  # d/dV = h^T g U = 0 while U = 0 ...
    assert grads[1]["v"] > 0  # ... and non-zero once the first step moved U
    zero_both = LowRankTranslator(lens.config.d_model, 3)
    with torch.no_grad():
        zero_both.v.zero_()  # the published fork's init: neither factor ever moves
    zero_both(h).pow(2).sum().backward()
    assert zero_both.u.grad.abs().max() == 0 and zero_both.v.grad.abs().max() == 0


def test_save_load_round_trip_records_the_rank(model, tmp_path):
    lens = TunedLens.from_model(model, rank=2)
    with torch.no_grad():
        for t in lens:
            t.u.normal_()
            t.bias.normal_()
    lens.save(tmp_path / "lens")
    config = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert config["rank"] == 2
    loaded = TunedLens.from_model_and_pretrained(model, str(tmp_path / "lens"))
    assert loaded.config.rank == 2
    h = torch.randn(3, 5, lens.config.d_model)
    for i in range(len(lens)):
        torch.testing.assert_close(loaded(h, i), lens(h, i), rtol=0, atol=0)
    # A full lens's config cannot read low-rank parameters (and the reverse).
    (tmp_path / "lens" / "lens_manifest.json").unlink()
    del config["rank"]
    (tmp_path / "lens" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LensFileError, match="unexpected keys"):
        TunedLens.from_model_and_pretrained(model, str(tmp_path / "lens"))


def test_full_rank_files_are_unchanged(model, tmp_path):
    lens = TunedLens.from_model(model)
    lens.save(tmp_path / "full")
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert list(config) == [
        "base_model_name_or_path",
        "d_model",
        "num_hidden_layers",
        "bias",
        "base_model_revision",
        "unembed_hash",
        "lens_type",
    ]
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "full" / "params.safetensors"))
    assert keys == {f"{i}.{k}" for i in range(len(lens)) for k in ("weight", "bias")}


def test_rank_is_validated():
    with pytest.raises(InvalidInputError) as err:
        TunedLensConfig("m", d_model=8, num_hidden_layers=2, rank=9)
    assert err.value.option == "rank"
    with pytest.raises(InvalidInputError):
        TunedLensConfig("m", d_model=8, num_hidden_layers=2, rank=0)


def _fit(translator: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    optimiser = torch.optim.Adam(translator.parameters(), lr=0.05)
    for _ in range(steps):
        optimiser.zero_grad()
        loss = (translator(x) - y).pow(2).mean()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return float((translator(x) - y).pow(2).mean())


def test_rank_r_fits_a_rank_r_map_and_rank_d_spans_every_full_lens():
    torch.manual_seed(0)
    d, k = 8, 2
    target = torch.randn(d, k, dtype=torch.float64) @ torch.randn(k, d, dtype=torch.float64)
    x = torch.randn(400, d, dtype=torch.float64)
    y = x @ target.T
    fitted = LowRankTranslator(d, k, dtype=torch.float64)
    assert _fit(fitted, x, y, 600) < 1e-6
    torch.testing.assert_close(fitted.matrix(), target, rtol=1e-3, atol=1e-3)
    too_small = LowRankTranslator(d, k - 1, dtype=torch.float64)
    best_rank_1 = torch.linalg.svdvals(target)[1:].pow(2).sum() / d  # Eckart-Young floor
    assert _fit(too_small, x, y, 600) > 0.5 * float(best_rank_1)
    # r = d: U = W, V = I gives exactly the full translator W h + b.
    full = torch.nn.Linear(d, d, dtype=torch.float64)
    rank_d = LowRankTranslator(d, d, dtype=torch.float64)
    with torch.no_grad():
        rank_d.u.copy_(full.weight)
        rank_d.v.copy_(torch.eye(d, dtype=torch.float64))
        rank_d.bias.copy_(full.bias)
    torch.testing.assert_close(rank_d(x), full(x), rtol=1e-12, atol=1e-12)


def test_low_rank_lens_in_trajectories(model):
    from tuned_lens.nn import LogitLens
    from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory

    lens = TunedLens.from_model(model, rank=2)
    with torch.no_grad():
        for t in lens:
            t.u.normal_(0.0, 0.3)
    ids = tiny_input_ids(1, 6)[0]
    traj = PredictionTrajectory.from_lens_and_model(lens, model, ids)
    with torch.no_grad():
        hidden = model(ids[None], output_hidden_states=True).hidden_states
        expected = lens(hidden[1][0], 1).double().log_softmax(-1)
    torch.testing.assert_close(
        torch.as_tensor(traj.log_probs[1]).double(), expected, rtol=1e-5, atol=1e-5
    )
    compact = CompactTrajectory.from_lens_and_model(
        lens, model, [ids.tolist()], progress=False, other_lens=LogitLens.from_model(model)
    )
    assert compact is not None
