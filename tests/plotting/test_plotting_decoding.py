"""The one layer-decoding generator (tuned_lens.decoding), the per-cell statistics table and
the error classes of the trajectory builders, on a tiny random model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from tuned_lens import errors, lens_stats
from tuned_lens.decoding import LayerDecoder, LogSoftmaxBuffers, log_softmax
from tuned_lens.nn.lenses import LogitLens, TunedLens
from tuned_lens.plotting import (
    CompactTrajectory,
    MissingTargetsError,
    PairwiseCells,
    PredictionTrajectory,
    TrajectoryShapeError,
)
from tuned_lens.plotting._cells import CELL_STATISTICS, POSITION_FIELDS, active_statistics
from tuned_lens.testing import tiny_input_ids, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def lenses(model):
    tuned = TunedLens.from_model(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tuned.layer_translators.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return LogitLens.from_model(model), tuned


def decoder_for(model, lenses, ids, **kwargs):
    ids = np.asarray(ids, dtype=np.int64)
    return LayerDecoder.from_model(lenses, model, ids, None, torch.device("cpu"), **kwargs)


def test_rows_come_output_first_per_chunk_and_cover_the_selection(model, lenses):
    ids = tiny_input_ids(2, 6).numpy()
    decoder = decoder_for(model, lenses, ids)
    n_layers = decoder.num_layers
    assert n_layers == model.config.num_hidden_layers
    positions = np.array([0, 1, 2, 5, 7, 8, 11])
    items = list(decoder.rows(positions, chunk_rows=3))
    assert len(items) == 3 * (n_layers + 1)
    chunks = [items[i : i + n_layers + 1] for i in range(0, len(items), n_layers + 1)]
    seen = []
    for chunk in chunks:
        assert chunk[0].is_output and chunk[0].layer == n_layers
        assert [item.layer for item in chunk[1:]] == list(range(n_layers))
        assert all(len(item.log_probs) == 2 for item in chunk)
        assert chunk[0].log_probs[0] is chunk[0].log_probs[1]
        seen.extend(chunk[0].positions.tolist())
    assert seen == positions.tolist()


def test_rows_match_a_direct_log_softmax(model, lenses):
    ids = tiny_input_ids(2, 5).numpy()
    logit_lens, tuned = lenses
    with torch.no_grad():
        out = model(torch.as_tensor(ids), output_hidden_states=True)
    decoder = decoder_for(model, lenses, ids)
    for item in decoder.rows(chunk_rows=4):
        b, t = np.divmod(item.positions, ids.shape[1])
        if item.is_output:
            expected = [torch.log_softmax(out.logits[b, t], -1)] * 2
        else:
            h = out.hidden_states[item.layer][b, t]
            with torch.no_grad():
                expected = [
                    torch.log_softmax(lens(h, item.layer), -1) for lens in (logit_lens, tuned)
                ]
        for got, want in zip(item.log_probs, expected):
            assert isinstance(got, np.ndarray) and got.dtype == np.float32
            np.testing.assert_allclose(got, want.numpy(), atol=1e-5)


def test_mask_input_masks_lens_rows_not_the_output_row(model, lenses):
    ids = np.array([[3, 4, 3, 9]])
    decoder = decoder_for(model, lenses[:1], ids, mask_input=True)
    for item in decoder.rows():
        lp = item.log_probs[0]
        if item.is_output:
            assert np.isfinite(lp).all()
        else:
            assert np.isneginf(lp[:, [3, 4, 9]]).all()
            assert np.isfinite(np.delete(lp, [3, 4, 9], axis=1)).all()


def test_destination_receives_float32_rows(model, lenses):
    ids = tiny_input_ids(1, 4).numpy()
    decoder = decoder_for(model, lenses[:1], ids)
    target = np.zeros((decoder.num_layers + 1, 4, decoder.vocab_size), np.float32)
    for item in decoder.rows(destination=lambda row, positions: target[row]):
        assert np.shares_memory(item.log_probs[0], target[item.layer])
    np.testing.assert_allclose(np.exp(target).sum(-1), 1.0, rtol=1e-5)
    with pytest.raises(errors.InvalidInputError):
        next(decoder_for(model, lenses, ids).rows(destination=lambda row, positions: None))


def test_log_softmax_policy():
    logits = torch.randn(3, 40)
    buffers = LogSoftmaxBuffers(min_rows=8)
    first = log_softmax(logits, buffers=buffers, slot="a")
    assert isinstance(first, np.ndarray) and first.shape == (3, 40)
    again = log_softmax(logits[:2], buffers=buffers, slot="a")
    assert np.shares_memory(first, again)  # the slot's buffer is reused
    half = log_softmax(logits.bfloat16())
    assert isinstance(half, torch.Tensor) and half.dtype == torch.bfloat16
    out = np.empty((3, 40), np.float32)
    assert log_softmax(logits.bfloat16(), out=out) is out  # widened by the kernel, on the host
    np.testing.assert_allclose(out, torch.log_softmax(logits, -1).numpy(), atol=0.05)


def test_cell_table_names_the_dataclass_fields():
    compact_fields = {f.name for f in dataclasses.fields(CompactTrajectory)}
    pairwise_fields = {f.name for f in dataclasses.fields(PairwiseCells)}
    own = {s.name for s in CELL_STATISTICS if s.applies != "other_lens"}
    comparison = {s.name for s in CELL_STATISTICS if s.applies == "other_lens"}
    assert own <= compact_fields and comparison == pairwise_fields
    assert set(POSITION_FIELDS) <= compact_fields
    cell_like = {name for name in compact_fields if name.endswith("_cells")}
    assert cell_like <= own
    assert {s.applies for s in active_statistics(set())} == {"always"}
    assert len(active_statistics({"targets", "anti_targets", "track", "other_lens"})) == len(
        CELL_STATISTICS
    )


def test_compact_views_cut_every_table_array(model, lenses):
    ids = tiny_input_ids(3, 6).numpy()
    compact = CompactTrajectory.from_lens_and_model(
        lenses[0],
        model,
        ids,
        targets=ids,
        anti_targets=ids,
        track=[1, 2],
        other_lens=lenses[1],
        topk=4,
        progress=False,
        chunk_rows=5,
    )
    view = compact.select_prompts([0, 2]).slice_sequence(slice(1, 4))
    for statistic in CELL_STATISTICS:
        holder = view.comparison if statistic.applies == "other_lens" else view
        array = getattr(holder, statistic.name)
        assert array.shape[:3] == (2, compact.num_layers + 1, 3), statistic.name
        assert array.dtype == statistic.dtype
    assert view.input_ids.shape == view.targets.shape == (2, 3)


def test_errors_are_the_library_classes(model, lenses):
    ids = tiny_input_ids(1, 4).numpy()
    build = CompactTrajectory.from_lens_and_model
    for kwargs, option in (
        ({"batch_size": 0}, "batch_size"),
        ({"chunk_rows": 0}, "chunk_rows"),
        ({"topk": lens_stats.MAX_K + 1}, "topk"),
        ({"targets": "previous"}, "targets"),
    ):
        with pytest.raises(errors.InvalidInputError) as caught:
            build(lenses[0], model, ids, progress=False, **kwargs)
        assert caught.value.option == option
    vocab = model.config.vocab_size
    with pytest.raises(errors.TargetIndexError, match=f"\\[0, {vocab}\\)"):
        build(lenses[0], model, ids, track=[vocab], progress=False)
    compact = build(lenses[0], model, ids, progress=False)
    with pytest.raises(MissingTargetsError):
        compact.cross_entropy()
    with pytest.raises(errors.InvalidInputError) as caught:
        compact.kl_divergence()
    assert caught.value.option == "other_lens"
    full = PredictionTrajectory.from_lens_and_model(lenses[0], model, ids)
    with pytest.raises(errors.TargetIndexError, match=str(vocab)):
        full.token_log_prob(vocab)
    assert TrajectoryShapeError is errors.TrajectoryShapeError
    assert MissingTargetsError is errors.MissingTargetsError
    with pytest.raises(errors.InvalidInputError):
        PredictionTrajectory.from_lens_and_model(lenses[0], model, np.zeros((1, 0), np.int64))


def test_grad_mode_is_left_alone_between_items(model, lenses):
    decoder = decoder_for(model, lenses[:1], tiny_input_ids(1, 3).numpy())
    rows = decoder.rows()
    next(rows)
    next(rows)
    assert torch.is_grad_enabled()
    rows.close()
