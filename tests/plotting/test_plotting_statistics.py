"""Every PredictionTrajectory statistic against a float64 numpy oracle, for several batch
shapes, plus hand-computed examples and the documented edge cases."""

import math

import _plotting_oracle as oracle
import numpy as np
import pytest
from tuned_lens.plotting import MissingTargetsError, PredictionTrajectory, TrajectoryShapeError

BATCH_SHAPES = [(), (1,), (2, 2)]
ROWS, T, V = 3, 10, 12
TOL = {"rtol": 2e-5, "atol": 2e-5}


def make(rng, batch_shape, **kwargs):
    lp = oracle.random_log_probs(rng, batch_shape + (ROWS, T, V))
    ids = rng.integers(0, V, size=batch_shape + (T,))
    targets = rng.integers(0, V, size=batch_shape + (T,))
    anti = rng.integers(0, V, size=batch_shape + (T,))
    return PredictionTrajectory(lp, ids, targets=targets, anti_targets=anti, **kwargs)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_single_trajectory_statistics_match_oracle(rng, batch_shape):
    traj = make(rng, batch_shape)
    nb = len(batch_shape)
    lp = traj.log_probs
    expected = {
        "entropy": oracle.entropy(lp),
        "cross_entropy": -oracle.target_log_prob(lp, traj.targets),
        "rank": oracle.rank(lp, traj.targets),
        "forward_kl": oracle.forward_kl(lp),
        "max_probability": oracle.max_probability(lp),
    }
    names = {
        "entropy": ("Entropy", "nats"),
        "cross_entropy": ("Cross Entropy", "nats"),
        "rank": ("Rank", ""),
        "forward_kl": ("Forward KL", "nats"),
        "max_probability": ("Max Probability", "probs"),
    }
    for method, cells in expected.items():
        stat = getattr(traj, method)()
        assert (stat.name, stat.units) == names[method]
        assert stat.stats.shape == (ROWS, T)
        assert stat.trajectory_labels is None and stat.sequence_labels is None
        np.testing.assert_allclose(stat.stats, oracle.batch_mean(cells, nb), **TOL)
    assert traj.forward_kl().stats[-1].tolist() == [0.0] * T
    rank = traj.rank()
    assert (rank.min, rank.max) == (1, None)

    diff = oracle.target_log_prob(lp, traj.targets) - oracle.target_log_prob(lp, traj.anti_targets)
    stat = traj.log_prob_diff()
    assert (stat.name, stat.units, stat.includes_output) == ("Log Prob Difference", "nats", True)
    np.testing.assert_allclose(stat.stats, oracle.batch_mean(diff, nb), **TOL)
    stat = traj.log_prob_diff(delta=True)
    assert (stat.name, stat.includes_output) == ("Δ Log Prob Difference", False)
    assert stat.stats.shape == (ROWS - 1, T)
    assert stat._layer_labels.tolist() == ["0", "1"]
    np.testing.assert_allclose(stat.stats, oracle.batch_mean(np.diff(diff, axis=-2), nb), **TOL)


@pytest.mark.parametrize("batch_shape", BATCH_SHAPES)
def test_pairwise_statistics_match_oracle(rng, batch_shape):
    traj, other = make(rng, batch_shape), make(rng, batch_shape)
    nb = len(batch_shape)
    p, q = traj.log_probs, other.log_probs
    cases = [
        ("kl_divergence", {}, "KL(Self | Other)", "nats", (0, None), oracle.kl(p, q)),
        ("js_divergence", {}, "JS(Self | Other)", "nats", (0, math.log(2)), oracle.js(p, q)),
        (
            "js_divergence",
            {"definition": "original"},
            "Symmetrised KL(Self | Other)",
            "nats",
            (0, None),
            oracle.symmetric_kl(p, q),
        ),
        ("total_variation", {}, "TV(Self | Other)", "probs", (0, 1), oracle.total_variation(p, q)),
        (
            "total_variation",
            {"definition": "original"},
            "Max |Δp|(Self | Other)",
            "probs",
            (0, 1),
            oracle.max_abs_diff(p, q),
        ),
    ]
    for method, options, name, units, (lo, hi), cells in cases:
        stat = getattr(traj, method)(other, **options)
        assert (stat.name, stat.units, stat.min, stat.max) == (name, units, lo, hi)
        np.testing.assert_allclose(stat.stats, oracle.batch_mean(cells, nb), **TOL)
        # A trajectory against itself is at distance 0.
        np.testing.assert_allclose(getattr(traj, method)(traj, **options).stats, 0, atol=1e-6)


def test_true_js_and_tv_differ_from_the_original_definitions(rng):
    traj, other = make(rng, ()), make(rng, ())
    js = traj.js_divergence(other).stats
    assert (js <= math.log(2) + 1e-6).all()
    assert not np.allclose(js, traj.js_divergence(other, definition="original").stats)
    tv = traj.total_variation(other).stats
    assert (tv >= traj.total_variation(other, definition="original").stats - 1e-6).all()
    with pytest.raises(ValueError, match="definition"):
        traj.js_divergence(other, definition="jsd")
    with pytest.raises(ValueError, match="definition"):
        traj.total_variation(other, definition="l1")


def test_rank_hand_computed_3_2_2_2():
    probs = [[0.4, 0.3, 0.2, 0.1]] * 4
    lp = oracle.log_probs_from_probs([probs, probs, probs])  # (rows=3, T=4, V=4)
    traj = PredictionTrajectory(lp, np.zeros(4, np.int64), targets=np.array([2, 1, 1, 1]))
    assert traj.rank().stats.tolist() == [[3, 2, 2, 2]] * 3


def test_rank_hand_computed_with_ties():
    # Targets ranked 3, 2, 2, 2: probabilities 0.4, 0.3, 0.2, 0.1 (ties share the best rank).
    probs = [
        [0.4, 0.3, 0.2, 0.1],
        [0.4, 0.3, 0.2, 0.1],
        [0.3, 0.3, 0.3, 0.1],  # three-way tie at the top, target 2 is tied with the best
        [0.1, 0.3, 0.2, 0.4],
    ]
    lp = oracle.log_probs_from_probs([probs, probs])  # (rows=2, T=4, V=4)
    targets = np.array([2, 1, 2, 2])
    traj = PredictionTrajectory(lp, np.zeros(4, dtype=np.int64), targets=targets)
    assert traj.rank().stats.tolist() == [[3, 2, 1, 3]] * 2

    targets = np.array([2, 1, 3, 1])
    traj = PredictionTrajectory(lp, np.zeros(4, dtype=np.int64), targets=targets)
    assert traj.rank().stats.tolist() == [[3, 2, 4, 2]] * 2

    # Batch means may be fractional.
    batched = PredictionTrajectory(
        np.stack([lp, lp]),
        np.zeros((2, 4), dtype=np.int64),
        targets=np.array([[2, 1, 3, 1], [0, 0, 0, 0]]),
    )
    assert batched.rank().stats[0].tolist() == [2.0, 1.5, 2.5, 3.0]


def test_log_prob_diff_hand_computed():
    lp = oracle.log_probs_from_probs(
        [
            [[0.5, 0.25, 0.25]],
            [[0.25, 0.5, 0.25]],
            [[0.1, 0.8, 0.1]],
        ]
    )  # rows=3, T=1, V=3
    traj = PredictionTrajectory(
        lp, np.array([0]), targets=np.array([1]), anti_targets=np.array([0])
    )
    np.testing.assert_allclose(
        traj.log_prob_diff().stats[:, 0], [math.log(0.5), math.log(2), math.log(8)], rtol=1e-6
    )
    np.testing.assert_allclose(
        traj.log_prob_diff(delta=True).stats[:, 0], [math.log(4), math.log(4)], rtol=1e-6
    )


def test_statistics_need_targets(rng):
    traj = PredictionTrajectory(oracle.random_log_probs(rng, (2, 3, 4)), np.zeros(3, np.int64))
    with pytest.raises(MissingTargetsError, match="targets"):
        traj.cross_entropy()
    with pytest.raises(ValueError, match="targets"):
        traj.rank()
    with_targets = PredictionTrajectory(traj.log_probs, traj.input_ids, targets=traj.input_ids)
    with pytest.raises(ValueError, match="anti_targets"):
        with_targets.log_prob_diff()


def test_shape_validation(rng):
    lp = oracle.random_log_probs(rng, (2, 3, 5, 4))
    with pytest.raises(TrajectoryShapeError, match="input_ids"):
        PredictionTrajectory(lp, np.zeros((2, 4), np.int64))
    with pytest.raises(TrajectoryShapeError, match="targets"):
        PredictionTrajectory(lp, np.zeros((2, 5), np.int64), targets=np.zeros((2, 4), np.int64))
    with pytest.raises(TypeError, match="integer"):
        PredictionTrajectory(lp, np.zeros((2, 5)))
    traj = PredictionTrajectory(lp, np.zeros((2, 5), np.int64))
    other = PredictionTrajectory(lp[:1], np.zeros((1, 5), np.int64))
    with pytest.raises(TrajectoryShapeError, match="other"):
        traj.kl_divergence(other)
    with pytest.raises(TypeError, match="PredictionTrajectory"):
        traj.kl_divergence(lp)


def test_properties(rng):
    traj = make(rng, (2, 2))
    assert traj.batch_axes == (0, 1)
    assert traj.batch_shape == (2, 2)
    assert traj.n_batch_axis == 2
    assert (traj.num_layers, traj.num_tokens, traj.vocab_size) == (ROWS - 1, T, V)
    assert traj.model_log_probs.shape == (2, 2, T, V)
    np.testing.assert_array_equal(traj.model_log_probs, traj.log_probs[..., -1, :, :])
    np.testing.assert_allclose(traj.probs, np.exp(traj.log_probs))


def test_slice_sequence_keeps_axes_and_cached_top_k(rng, tiny_tokenizer):
    traj = make(rng, (2,), tokenizer=tiny_tokenizer)
    full = traj.entropy(topk=5)
    part = traj.slice_sequence(slice(2, 6))
    assert part.log_probs.shape == (2, ROWS, 4, V)
    assert part.input_ids.shape == part.targets.shape == (2, 4)
    assert part._cached_top_k() is not None  # the top-k was sliced, not recomputed
    sliced = part.entropy(topk=5)
    np.testing.assert_array_equal(sliced.stats, full.stats[:, 2:6])
    np.testing.assert_array_equal(
        sliced.trajectory_labels.label_strings, full.trajectory_labels.label_strings[:, 2:6]
    )
    one = traj.slice_sequence(3)
    assert one.log_probs.shape == (2, ROWS, 1, V)
    assert one.entropy().stats.shape == (ROWS, 1)


def test_top_k_is_computed_once_and_shared(rng, tiny_tokenizer):
    traj = make(rng, (), tokenizer=tiny_tokenizer)
    traj.entropy(topk=8)
    cached = traj._cached_top_k()
    assert cached["k"] == 8
    ids_before = cached["ids"]
    stat = traj.max_probability(topk=4)  # served from the k=8 cache
    assert traj._cached_top_k()["ids"] is ids_before
    np.testing.assert_allclose(stat.stats, oracle.max_probability(traj.log_probs), **TOL)
    traj.entropy(topk=12)  # a larger k recomputes
    assert traj._cached_top_k()["k"] == 12


def test_half_precision_log_probs_are_read_without_widening(rng):
    lp32 = oracle.random_log_probs(rng, (ROWS, T, V))
    ids = rng.integers(0, V, size=T)
    full = PredictionTrajectory(lp32, ids, targets=ids)
    half = PredictionTrajectory(lp32.astype(np.float16), ids, targets=ids)
    for method in ("entropy", "cross_entropy", "forward_kl", "max_probability"):
        np.testing.assert_allclose(
            getattr(half, method)().stats, getattr(full, method)().stats, rtol=2e-2, atol=2e-2
        )


def test_mask_input_semantics():
    # Two lens rows that gave masked tokens (ids 0 and 1 occur in the input) probability 0,
    # and the unmasked model row.
    lens_row = [[0.0, 0.0, 0.7, 0.3]] * 2
    model_row = [[0.1, 0.2, 0.4, 0.3]] * 2
    lp = oracle.log_probs_from_probs([lens_row, lens_row, model_row])  # (3, T=2, V=4)
    traj = PredictionTrajectory(
        lp, np.array([0, 1]), targets=np.array([1, 2]), anti_targets=np.array([3, 0])
    )
    entropy = traj.entropy().stats
    assert np.isfinite(entropy).all()
    expected = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))
    np.testing.assert_allclose(entropy[0], expected, rtol=1e-5)
    assert np.isfinite(traj.max_probability().stats).all()
    forward_kl = traj.forward_kl().stats
    assert np.isposinf(forward_kl[:2]).all() and (forward_kl[2] == 0).all()
    cross_entropy = traj.cross_entropy().stats
    assert np.isposinf(cross_entropy[:2, 0]).all() and np.isfinite(cross_entropy[:2, 1]).all()
    # Masked targets share the rank after every unmasked token.
    assert traj.rank().stats[:2, 0].tolist() == [3, 3]
    diff = traj.log_prob_diff().stats
    assert np.isneginf(diff[:2, 0]).all() and np.isposinf(diff[:2, 1]).all()
