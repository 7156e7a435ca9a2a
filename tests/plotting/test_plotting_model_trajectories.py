"""End to end on a real tiny model (glassllm): text → trajectory → statistics → figure, and
the compact path against the full path."""

import math
import re

import numpy as np
import pytest
import torch
from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory, write_html

pytestmark = pytest.mark.slow

TEXTS = [
    "Alice was beginning to get very tired of sitting by her sister",
    "The Queen had only one way of settling all difficulties",
    "Curiouser and curiouser!",
]


@pytest.fixture(scope="module")
def glassllm():
    from tuned_lens.assets import load_glassllm

    torch.manual_seed(0)
    return load_glassllm()


@pytest.fixture(scope="module")
def lenses(glassllm):
    from tuned_lens.nn.lenses import LogitLens, TunedLens

    model, _ = glassllm
    tuned = TunedLens.from_model(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in tuned.layer_translators.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return LogitLens.from_model(model), tuned


def encode(tokenizer, text):
    ids = tokenizer(text).input_ids
    return ids, ids[1:] + [tokenizer.eos_token_id or 0]


def assert_same_statistic(full, compact, *, rtol=1e-5, atol=2e-6):
    assert (full.name, full.units, full.min, full.max) == (
        compact.name,
        compact.units,
        compact.min,
        compact.max,
    )
    np.testing.assert_allclose(compact.stats, full.stats, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(compact.sequence_labels, full.sequence_labels)
    if full.trajectory_labels is None:
        assert compact.trajectory_labels is None
        return
    np.testing.assert_array_equal(
        compact.trajectory_labels.label_strings, full.trajectory_labels.label_strings
    )
    np.testing.assert_array_equal(
        compact.trajectory_labels.hover_over_entries, full.trajectory_labels.hover_over_entries
    )


def test_text_to_figure(glassllm, lenses, tmp_path):
    model, tokenizer = glassllm
    logit_lens, _ = lenses
    ids, targets = encode(tokenizer, TEXTS[0])
    traj = PredictionTrajectory.from_lens_and_model(
        logit_lens, model, ids, tokenizer=tokenizer, targets=targets
    )
    n_layers = model.config.num_hidden_layers
    assert traj.log_probs.shape == (n_layers + 1, len(ids), model.config.vocab_size)
    assert (traj.num_layers, traj.num_tokens) == (n_layers, len(ids))
    # Every row is a distribution; the output row is the model's own log-softmax.
    np.testing.assert_allclose(np.exp(traj.log_probs).sum(-1), 1.0, rtol=1e-4)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    np.testing.assert_allclose(
        traj.model_log_probs, torch.log_softmax(logits, -1).numpy(), atol=1e-5
    )
    # The logit lens of the last layer is nearly the model (same norm and unembedding, one
    # block fewer): its forward KL is finite and the output row's is 0.
    forward_kl = traj.forward_kl()
    assert np.isfinite(forward_kl.stats).all() and (forward_kl.stats[-1] == 0).all()

    third = traj.slice_sequence(slice(2, 9))
    stat = third.cross_entropy(topk=5)
    assert stat.stats.shape == (n_layers + 1, 7)
    figure = stat.stride(2).figure(title="glassllm")
    assert figure.data[0].z.shape == (3, 7)
    path = write_html(figure, tmp_path / "trajectory.html")
    html = path.read_text(encoding="utf-8")
    assert "Cross Entropy (nats)" in html
    assert "customdata[0]" in html  # the hover table travels with the figure
    # plotly.js is embedded: no external script, so the file works offline.
    assert re.search(r"<script[^>]*\bsrc=", html) is None and len(html) > 1_000_000


def test_length_one_sequence_keeps_its_axis(glassllm, lenses):
    model, tokenizer = glassllm
    ids, targets = encode(tokenizer, "Alice")
    traj = PredictionTrajectory.from_lens_and_model(
        lenses[0], model, ids[:1], tokenizer=tokenizer, targets=targets[:1]
    )
    assert traj.log_probs.shape[-2] == 1
    assert traj.entropy().stats.shape == (model.config.num_hidden_layers + 1, 1)
    assert traj.rank().figure() is not None


def all_statistics(traj, other=None):
    stats = {
        "entropy": traj.entropy(topk=5),
        "cross_entropy": traj.cross_entropy(topk=5, min_prob=0.05),
        "rank": traj.rank(show_ranks=True),
        "forward_kl": traj.forward_kl(),
        "max_probability": traj.max_probability(max_entries_to_show=2),
        "log_prob_diff": traj.log_prob_diff(),
        "delta_log_prob_diff": traj.log_prob_diff(delta=True),
        "token_log_prob": traj.token_log_prob(7),
    }
    if other is not None or isinstance(traj, CompactTrajectory):
        for definition in ("jensen-shannon", "original"):
            stats["js_" + definition] = traj.js_divergence(other, definition=definition, topk=4)
        for definition in ("half-l1", "original"):
            stats["tv_" + definition] = traj.total_variation(other, definition=definition)
        stats["kl"] = traj.kl_divergence(other, min_prob_delta=0.01)
    return stats


@pytest.mark.parametrize("mask_input", [False, True])
def test_compact_equals_full_on_one_sequence(glassllm, lenses, mask_input):
    model, tokenizer = glassllm
    logit_lens, tuned = lenses
    ids, targets = encode(tokenizer, TEXTS[0])
    anti = [ids[0]] * len(ids)
    full = PredictionTrajectory.from_lens_and_model(
        logit_lens, model, ids, tokenizer, targets, anti, mask_input=mask_input
    )
    other = PredictionTrajectory.from_lens_and_model(
        tuned, model, ids, tokenizer, targets, anti, mask_input=mask_input
    )
    compact = CompactTrajectory.from_lens_and_model(
        logit_lens,
        model,
        ids,
        tokenizer=tokenizer,
        targets=targets,
        anti_targets=anti,
        track=[7, 11],
        other_lens=tuned,
        topk=10,
        mask_input=mask_input,
        progress=False,
    )
    assert compact.entropy_cells.shape == (1, model.config.num_hidden_layers + 1, len(ids))
    expected = all_statistics(full, other)
    got = all_statistics(compact)
    assert expected.keys() == got.keys()
    for name in expected:
        assert_same_statistic(expected[name], got[name])
    # The compact form is tiny next to the full array.
    assert compact.nbytes < full.log_probs.nbytes / 10


def test_compact_equals_full_on_a_ragged_batch(glassllm, lenses):
    model, tokenizer = glassllm
    logit_lens, _ = lenses
    encoded = [encode(tokenizer, text) for text in TEXTS]
    ids = [e[0] for e in encoded]
    targets = [e[1] for e in encoded]
    full = PredictionTrajectory.from_lens_and_model(
        logit_lens, model, ids, tokenizer=tokenizer, targets=targets
    )
    lengths = [len(x) for x in ids]
    assert full.log_probs.shape[:1] == (3,) and full.num_tokens == max(lengths)
    assert full.attention_mask.sum(1).tolist() == lengths

    # batch_size=2 pads the batches differently from the full path: results agree to
    # float32 noise, labels exactly.
    compact = CompactTrajectory.from_lens_and_model(
        logit_lens,
        model,
        ids,
        tokenizer=tokenizer,
        targets=targets,
        batch_size=2,
        progress=False,
    )
    for method in ("entropy", "cross_entropy", "rank", "forward_kl", "max_probability"):
        assert_same_statistic(
            getattr(full, method)(topk=3), getattr(compact, method)(topk=3), rtol=1e-4, atol=1e-4
        )
    # Each prompt alone gives the same cells as inside the padded batch.
    for row, (prompt, target) in enumerate(zip(ids, targets)):
        alone = PredictionTrajectory.from_lens_and_model(
            logit_lens, model, prompt, tokenizer=tokenizer, targets=target
        )
        n = len(prompt)
        np.testing.assert_allclose(
            compact.select_prompts([row]).slice_sequence(slice(0, n)).entropy().stats,
            alone.entropy().stats,
            rtol=1e-4,
            atol=1e-4,
        )
    assert np.isnan(compact.entropy_cells[2, :, lengths[2] :]).all()


def test_compact_from_a_rectangular_batch_with_next_token_targets(glassllm, lenses):
    model, tokenizer = glassllm
    ids = torch.tensor([tokenizer(t).input_ids[:8] for t in TEXTS])
    compact = CompactTrajectory.from_lens_and_model(
        lenses[0], model, ids, tokenizer=tokenizer, targets="next", progress=False
    )
    full = PredictionTrajectory.from_lens_and_model(
        lenses[0],
        model,
        ids,
        tokenizer=tokenizer,
        targets=np.concatenate([ids[:, 1:].numpy(), np.full((3, 1), tokenizer.eos_token_id)], 1),
    )
    assert_same_statistic(full.cross_entropy(), compact.cross_entropy(), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="other_lens"):
        compact.kl_divergence()
    with pytest.raises(ValueError, match="track"):
        compact.token_log_prob(3)
    with pytest.raises(ValueError, match="topk"):
        compact.entropy(topk=11)


def test_mask_input_on_a_real_model(glassllm, lenses):
    model, tokenizer = glassllm
    ids, targets = encode(tokenizer, TEXTS[2])
    traj = PredictionTrajectory.from_lens_and_model(
        lenses[0], model, ids, tokenizer=tokenizer, targets=targets, mask_input=True
    )
    seen = sorted(set(ids))
    assert np.isneginf(traj.log_probs[:-1][..., seen]).all()
    assert np.isfinite(traj.log_probs[-1]).all()  # the model row is not masked
    assert np.isfinite(traj.entropy().stats).all()
    assert np.isfinite(traj.max_probability().stats).all()
    assert np.isposinf(traj.forward_kl().stats[:-1]).all()
    top_ids = traj._cell_top_k(10)[0]
    assert not np.isin(top_ids[:-1], seen).any()
    masked_target = np.isin(targets, seen)
    ce = traj.cross_entropy().stats
    assert np.isposinf(ce[:-1, masked_target]).all()
    assert np.isfinite(ce[:-1, ~masked_target]).all()


def test_bfloat16_model_statistics_stay_close(glassllm, lenses):
    model, tokenizer = glassllm
    ids, targets = encode(tokenizer, TEXTS[1])
    reference = CompactTrajectory.from_lens_and_model(
        lenses[0], model, ids, tokenizer=tokenizer, targets=targets, track=[7], progress=False
    )
    from tuned_lens.nn.lenses import LogitLens

    model_bf16 = model.to(torch.bfloat16)
    try:
        half = CompactTrajectory.from_lens_and_model(
            LogitLens.from_model(model_bf16),
            model_bf16,
            ids,
            tokenizer=tokenizer,
            targets=targets,
            track=[7],
            progress=False,
        )
    finally:
        model.to(torch.float32)
    assert half.entropy_cells.dtype == np.float32
    np.testing.assert_allclose(half.entropy().stats, reference.entropy().stats, atol=0.15)
    np.testing.assert_allclose(
        half.cross_entropy().stats, reference.cross_entropy().stats, atol=0.3
    )
    assert abs(float(np.mean(half.rank().stats)) - float(np.mean(reference.rank().stats))) < 5
    np.testing.assert_allclose(
        half.token_log_prob(7).stats, reference.token_log_prob(7).stats, atol=0.3
    )


def test_from_lens_and_cache_with_hidden_state_mapping(glassllm, lenses):
    """Any mapping ``cache[component, layer]`` works; here one built from HF hidden states."""
    model, tokenizer = glassllm
    ids, targets = encode(tokenizer, TEXTS[0])
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    cache = {("resid_pre", i): h for i, h in enumerate(out.hidden_states)}
    _, tuned = lenses
    from_cache = PredictionTrajectory.from_lens_and_cache(
        tuned,
        torch.tensor([ids]),
        cache,
        out.logits,
        targets=torch.tensor([targets]),
        tokenizer=tokenizer,
    )
    direct = PredictionTrajectory.from_lens_and_model(
        tuned, model, [ids], tokenizer=tokenizer, targets=[targets]
    )
    assert from_cache.log_probs.shape == direct.log_probs.shape
    np.testing.assert_allclose(from_cache.log_probs, direct.log_probs, atol=1e-5)
    with pytest.raises(ValueError, match="input_ids"):
        PredictionTrajectory.from_lens_and_cache(tuned, torch.tensor([ids[:-1]]), cache, out.logits)


def test_from_lens_and_cache_transformer_lens():
    tl = pytest.importorskip("transformer_lens")
    from tuned_lens.nn.lenses import LogitLens

    config = tl.HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_ctx=32,
        d_vocab=50,
        act_fn="gelu",
        normalization_type="LN",
        seed=0,
    )
    model = tl.HookedTransformer(config)
    ids = torch.tensor([[1, 5, 7, 9, 11]])
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids)
    traj = PredictionTrajectory.from_lens_and_cache(
        LogitLens.from_model(model), ids, cache, logits, targets=ids
    )
    assert traj.log_probs.shape == (1, 3, 5, 50)
    assert math.isfinite(float(traj.cross_entropy().stats.mean()))
