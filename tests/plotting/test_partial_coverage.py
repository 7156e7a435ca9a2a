"""Lenses that cover only some layers, and cell-by-cell comparisons of any two lenses (issue 14).

The oracle of every row is the lens's own output on the model's own hidden states,
log-softmaxed in float64; pairwise statistics are the float64 numpy oracle's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _plotting_oracle import js, kl
from tuned_lens.errors import InvalidInputError, TrajectoryShapeError
from tuned_lens.explorer import build_data
from tuned_lens.nn import JacobianLens, LinearShortcutLens, LogitLens, TunedLens, Unembed
from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory
from tuned_lens.testing import tiny_model

N_BLOCKS = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_hidden_layers=N_BLOCKS)


@pytest.fixture(scope="module")
def ids(model):
    g = torch.Generator().manual_seed(5)
    return torch.randint(0, model.config.vocab_size, (3, 9), generator=g)


def _random_jacobians(model, layers, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = model.config.hidden_size
    return {i: torch.eye(d) + 0.3 * torch.randn(d, d, generator=g) for i in layers}


@pytest.fixture(scope="module")
def published(model, tmp_path_factory):
    """A Jacobian lens in the published layout: blocks 0..L-2 = hidden states 1..L-1, read
    back from a reference-format file."""
    lens = JacobianLens(Unembed(model), _random_jacobians(model, [1, 2]), num_layers=N_BLOCKS)
    path = tmp_path_factory.mktemp("jlens") / "lens.pt"
    lens.save(path)
    loaded = JacobianLens.from_pretrained(path, model=model)
    assert loaded.layers == (1, 2)
    return loaded


def _tuned(model, rank=None, seed=1):
    lens = TunedLens.from_model(model, rank=rank)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return lens.eval()


def _oracle(lens, model, ids, layers):
    """``(B, len(layers)+1, T, V)`` float64: the lens's rows and the model's output row."""
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        rows = [lens(out.hidden_states[i], i).double().log_softmax(-1) for i in layers]
        rows.append(out.logits.double().log_softmax(-1))
    return torch.stack(rows, dim=1).numpy()


def test_full_trajectory_holds_the_covered_rows_with_their_labels(published, model, ids):
    traj = PredictionTrajectory.from_lens_and_model(published, model, ids)
    assert traj.log_probs.shape == (3, 3, 9, model.config.vocab_size)
    assert traj.layers == (1, 2) and traj.layer_indices == (1, 2)
    assert traj.row_labels == ["1", "2", "output"]
    np.testing.assert_allclose(traj.log_probs, _oracle(published, model, ids, [1, 2]), atol=2e-5)
    assert list(traj.entropy()._layer_labels) == ["1", "2", "output"]
    with_targets = PredictionTrajectory.from_lens_and_model(
        published, model, ids, targets=ids, anti_targets=ids.roll(1, dims=-1)
    )
    delta = with_targets.log_prob_diff(delta=True)
    assert list(delta._layer_labels) == ["1→2", "2→output"] and delta.stats.shape == (2, 9)
    one = traj.slice_sequence(slice(2, 5))
    assert one.layers == (1, 2) and one.log_probs.shape[-2] == 3
    # A lens decoding every layer keeps the plain labels.
    full = PredictionTrajectory.from_lens_and_model(LogitLens.from_model(model), model, ids)
    assert full.layers is None and full.row_labels == ["0", "1", "2", "output"]


def test_compact_equals_full_and_the_explorer_labels_the_rows(published, model, ids):
    traj = PredictionTrajectory.from_lens_and_model(published, model, ids)
    compact = CompactTrajectory.from_lens_and_model(
        published, model, ids, targets="next", progress=False, chunk_rows=4
    )
    assert compact.layers == (1, 2) and compact.entropy_cells.shape == (3, 3, 9)
    np.testing.assert_allclose(compact.entropy_cells, traj._cell_entropy(), atol=1e-5)
    np.testing.assert_allclose(compact.forward_kl_cells, traj._cell_forward_kl(), atol=1e-5)
    ids_full, probs_full = traj._cell_top_k(compact.topk)
    np.testing.assert_allclose(compact.top_k_probs, probs_full, atol=1e-6)
    assert (compact.top_k_ids[..., 0] == ids_full[..., 0]).all()
    np.testing.assert_allclose(compact.entropy().stats, traj.entropy().stats, atol=1e-5)
    assert list(compact.entropy()._layer_labels) == ["1", "2", "output"]
    assert compact.select_prompts([0, 2]).layers == (1, 2)
    for doc in (build_data({"jacobian": traj}), build_data({"jacobian": compact})):
        view = doc["views"][0]
        assert view["rows"] == 3 and view["row_labels"] == ["1", "2", "output"]


def test_bad_layers_are_refused(model, ids):
    lp = np.zeros((3, 9, 4), dtype=np.float32)
    with pytest.raises(TrajectoryShapeError, match="ascending"):
        PredictionTrajectory(log_probs=lp, input_ids=np.zeros(9, np.int64), layers=(2, 1))
    with pytest.raises(TrajectoryShapeError, match="2 ascending"):
        PredictionTrajectory(log_probs=lp, input_ids=np.zeros(9, np.int64), layers=(1,))
    only_0 = JacobianLens(Unembed(model), _random_jacobians(model, [0]), num_layers=N_BLOCKS)
    only_2 = JacobianLens(Unembed(model), _random_jacobians(model, [2]), num_layers=N_BLOCKS)
    with pytest.raises(InvalidInputError, match="share no layer"):
        CompactTrajectory.from_lens_and_model(only_0, model, ids, other_lens=only_2, progress=False)


def _pairs(model, published):
    logit = LogitLens.from_model(model)
    full_j = JacobianLens(
        Unembed(model), _random_jacobians(model, range(N_BLOCKS), 3), num_layers=N_BLOCKS
    )
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, model.config.vocab_size, (12,), generator=g) for _ in range(4)]
    shortcut = LinearShortcutLens.fit(model, prompts, ridge=0.1, progress=False)
    return {
        "jacobian-vs-tuned": (full_j, _tuned(model)),
        "shortcut-vs-logit": (shortcut, logit),
        "lowrank-vs-logit": (_tuned(model, rank=2), logit),
        "partial-jacobian-vs-tuned": (published, _tuned(model)),
        "tuned-vs-partial-jacobian": (_tuned(model), published),
    }


@pytest.mark.parametrize(
    "pair",
    [
        "jacobian-vs-tuned",
        "shortcut-vs-logit",
        "lowrank-vs-logit",
        "partial-jacobian-vs-tuned",
        "tuned-vs-partial-jacobian",
    ],
)
def test_two_lenses_compared_cell_by_cell(pair, model, ids, published):
    lens_a, lens_b = _pairs(model, published)[pair]
    shared = [1, 2] if "partial" in pair else [0, 1, 2]
    a = _oracle(lens_a, model, ids, shared)
    b = _oracle(lens_b, model, ids, shared)
    compact = CompactTrajectory.from_lens_and_model(
        lens_a, model, ids, other_lens=lens_b, progress=False, chunk_rows=5
    )
    assert compact.layer_indices == tuple(shared)
    assert compact.comparison is not None
    np.testing.assert_allclose(compact.comparison.kl, kl(a, b), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(compact.comparison.js, js(a, b), atol=1e-5, rtol=1e-4)
    assert np.abs(compact.comparison.kl[:, -1]).max() < 1e-6  # the output row is the model's
    # Two full trajectories, each with its own rows, are compared on the layers both hold.
    ta = PredictionTrajectory.from_lens_and_model(lens_a, model, ids)
    tb = PredictionTrajectory.from_lens_and_model(lens_b, model, ids)
    stat = ta.kl_divergence(tb)
    assert list(stat._layer_labels) == [*map(str, shared), "output"]
    np.testing.assert_allclose(stat.stats, kl(a, b).mean(0), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(stat.stats, compact.kl_divergence().stats, atol=1e-4, rtol=1e-4)
    jsd = ta.js_divergence(tb).stats
    np.testing.assert_allclose(jsd, compact.js_divergence().stats, atol=1e-5, rtol=1e-4)
    tv = ta.total_variation(tb).stats
    np.testing.assert_allclose(tv, compact.total_variation().stats, atol=1e-5, rtol=1e-4)
