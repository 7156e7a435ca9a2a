"""Cell labels and hover tables on a tiny offline tokenizer."""

import _plotting_oracle as oracle
import numpy as np
import pytest
from _plotting_oracle import TINY_VOCAB
from tuned_lens.plotting import PredictionTrajectory, TokenFormatter


def one_hot_ish(top: list[list[int]], top_prob: float | list[list[float]], vocab: int):
    """(rows, T, V) log-probs whose most likely token in each cell is ``top[r][t]``."""
    top = np.asarray(top)
    top_prob = np.broadcast_to(np.asarray(top_prob, dtype=np.float64), top.shape)
    probs = np.empty(top.shape + (vocab,))
    probs[...] = ((1 - top_prob) / (vocab - 1))[..., None]
    np.put_along_axis(probs, top[..., None], top_prob[..., None], axis=-1)
    return oracle.log_probs_from_probs(probs)


def test_largest_prob_labels_single_sequence(rng, tiny_tokenizer):
    lp = oracle.random_log_probs(rng, (3, 10, len(TINY_VOCAB)))
    ids = rng.integers(0, len(TINY_VOCAB), size=10)
    traj = PredictionTrajectory(lp, ids, targets=ids, tokenizer=tiny_tokenizer)
    labels = traj.largest_prob_labels(min_prob=0.0, topk=5)
    assert labels.label_strings.shape == (3, 10)
    assert labels.hover_over_entries.shape == (3, 10, 5, 2)

    formatter = TokenFormatter()
    top_ids, top_probs = oracle.top_k(lp, 5)
    tokens = np.array(TINY_VOCAB, dtype=object)
    assert (
        labels.label_strings.tolist()
        == formatter.vectorized_format(tokens[top_ids[..., 0]]).tolist()
    )
    assert (
        labels.hover_over_entries[..., 0].tolist()
        == formatter.vectorized_format(tokens[top_ids]).tolist()
    )
    expected_values = [[[f"{100 * p:.2f}%" for p in cell] for cell in row] for row in top_probs]
    assert labels.hover_over_entries[..., 1].tolist() == expected_values

    stat = traj.entropy(topk=5)
    assert stat.sequence_labels.tolist() == formatter.vectorized_format(tokens[ids]).tolist()
    assert stat.trajectory_labels.label_strings.tolist() == labels.label_strings.tolist()
    assert stat.heatmap().customdata.shape == (3, 10, 10)


def test_formatter_is_applied_to_labels(tiny_tokenizer):
    lp = one_hot_ish([[4, 1, 3]], 0.9, len(TINY_VOCAB))
    traj = PredictionTrajectory(lp, np.array([4, 1, 3]), tokenizer=tiny_tokenizer)
    assert traj.entropy().trajectory_labels.label_strings.tolist() == [["ThisIs…", "_the", "\\n"]]
    raw = TokenFormatter(max_string_len=None, whitespace_replacement=" ")
    stat = traj.entropy(formatter=raw)
    assert stat.trajectory_labels.label_strings.tolist() == [["ThisIsALongToken", " the", "\\n"]]
    assert stat.sequence_labels.tolist() == ["ThisIsALongToken", " the", "\\n"]


def test_labels_consolidate_over_batch_and_hover_lists_batch_columns(tiny_tokenizer):
    # Batch of 4 (2×2): element (1, 1) disagrees at position 1.
    tops = np.array([[2, 5]] * 4)
    tops[3, 1] = 6
    lp = np.stack([one_hot_ish([t, t], 0.8, len(TINY_VOCAB)) for t in tops]).reshape(
        2, 2, 2, 2, len(TINY_VOCAB)
    )
    ids = np.array([[[1, 2], [1, 2]], [[1, 2], [1, 7]]])
    traj = PredictionTrajectory(lp, ids, tokenizer=tiny_tokenizer)
    stat = traj.max_probability(topk=3, max_entries_to_show=3)
    assert stat.trajectory_labels.label_strings.tolist() == [["_cat", "*"], ["_cat", "*"]]
    assert stat.sequence_labels.tolist() == ["_the", "*"]
    hover = stat.trajectory_labels.hover_over_entries
    # rows = topk, columns = (token, value) for the first 3 batch elements.
    assert hover.shape == (2, 2, 3, 6)
    assert hover[0, 1, 0].tolist() == ["a", "80.00%", "a", "80.00%", "a", "80.00%"]
    all_four = traj.max_probability(topk=3, max_entries_to_show=10)
    assert all_four.trajectory_labels.hover_over_entries[0, 1, 0, 6:].tolist() == ["b", "80.00%"]


def test_min_prob_blanks_cells_individually(tiny_tokenizer):
    probs = [[0.9, 0.3, 0.6], [0.2, 0.95, 0.5]]
    lp = one_hot_ish([[1, 2, 7], [8, 9, 10]], probs, len(TINY_VOCAB))
    traj = PredictionTrajectory(lp, np.array([1, 2, 3]), tokenizer=tiny_tokenizer)
    assert traj.entropy(min_prob=0.5).trajectory_labels.label_strings.tolist() == [
        ["_the", "", "_sat"],
        ["", "_mat", "."],
    ]
    assert traj.entropy().trajectory_labels.label_strings.tolist() == [
        ["_the", "_cat", "_sat"],
        ["_on", "_mat", "."],
    ]


def test_min_prob_uses_the_batch_mean_of_the_top_probability(tiny_tokenizer):
    a = one_hot_ish([[1, 1]], [[0.9, 0.9]], len(TINY_VOCAB))
    b = one_hot_ish([[1, 1]], [[0.5, 0.1]], len(TINY_VOCAB))
    traj = PredictionTrajectory(
        np.stack([a, b]), np.ones((2, 2), np.int64), tokenizer=tiny_tokenizer
    )
    # Means are 0.7 and 0.5.
    assert traj.entropy(min_prob=0.6).trajectory_labels.label_strings.tolist() == [["_the", ""]]


def test_largest_delta_labels_and_min_prob_delta(tiny_tokenizer):
    vocab = len(TINY_VOCAB)
    base = np.full((1, 3, vocab), 1.0 / vocab)
    changed = base.copy()
    # Position 0: token 5 gains 6 points; position 1: token 6 loses 5; position 2: unchanged.
    changed[0, 0, [5, 2, 3]] += [0.06, -0.04, -0.02]
    changed[0, 1, [6, 7, 8]] += [-0.05, 0.03, 0.02]
    lp_self = oracle.log_probs_from_probs(np.concatenate([base, base]))
    lp_other = oracle.log_probs_from_probs(np.concatenate([changed, changed]))
    ids = np.array([1, 2, 3])
    traj = PredictionTrajectory(lp_self, ids, tokenizer=tiny_tokenizer)
    other = PredictionTrajectory(lp_other, ids, tokenizer=tiny_tokenizer)

    stat = traj.kl_divergence(other, topk=2)
    labels = stat.trajectory_labels
    assert labels.label_strings[0, :2].tolist() == ["a", "b"]
    assert labels.hover_over_entries[0, 0, 0].tolist() == ["a", "Δ6.00%"]
    assert labels.hover_over_entries[0, 1, 0].tolist() == ["b", "Δ-5.00%"]

    filtered = traj.total_variation(other, min_prob_delta=0.055).trajectory_labels.label_strings
    assert filtered.tolist() == [["a", "", ""], ["a", "", ""]]
    filtered = traj.js_divergence(other, min_prob_delta=0.01).trajectory_labels.label_strings
    assert filtered[0].tolist() == ["a", "b", ""]


def test_rank_show_ranks(tiny_tokenizer, rng):
    lp = oracle.random_log_probs(rng, (3, 4, len(TINY_VOCAB)))
    ids = np.array([1, 2, 3, 4])
    traj = PredictionTrajectory(lp, ids, targets=ids, tokenizer=tiny_tokenizer)
    stat = traj.rank(show_ranks=True)
    assert stat.trajectory_labels.label_strings.tolist() == [
        [str(int(r)) for r in row] for row in oracle.rank(lp, ids)
    ]
    assert stat.max == tiny_tokenizer.vocab_size
    # Without a tokenizer show_ranks still writes the ranks.
    plain = PredictionTrajectory(lp, ids, targets=ids).rank(show_ranks=True)
    assert plain.trajectory_labels.label_strings.shape == (3, 4)
    assert plain.trajectory_labels.hover_over_entries is None


def test_token_log_prob(tiny_tokenizer, rng):
    lp = oracle.random_log_probs(rng, (3, 4, len(TINY_VOCAB)))
    traj = PredictionTrajectory(lp, np.array([1, 2, 3, 4]), tokenizer=tiny_tokenizer)
    stat = traj.token_log_prob(2)
    assert stat.name == "Log Prob (_cat)"
    np.testing.assert_allclose(stat.stats, lp[..., 2])
    with pytest.raises(IndexError):
        traj.token_log_prob(len(TINY_VOCAB))


def test_padding_is_left_out_of_means_and_labels(tiny_tokenizer, rng):
    vocab = len(TINY_VOCAB)
    lp = oracle.random_log_probs(rng, (2, 3, 4, vocab))
    ids = np.array([[1, 2, 3, 0], [1, 2, 0, 0]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=bool)
    traj = PredictionTrajectory(lp, ids, targets=ids, tokenizer=tiny_tokenizer, attention_mask=mask)
    stat = traj.entropy(topk=2)
    ent = oracle.entropy(lp)
    np.testing.assert_allclose(stat.stats[:, :2], ent[:, :, :2].mean(0), rtol=1e-5)
    np.testing.assert_allclose(stat.stats[:, 2], ent[0, :, 2], rtol=1e-5)
    assert np.isnan(stat.stats[:, 3]).all()
    assert stat.sequence_labels.tolist() == ["_the", "_cat", "Ċ".replace("Ċ", "\\n"), ""]
    top = oracle.top_k(lp, 1)[0][0, :, 2, 0]
    assert (
        stat.trajectory_labels.label_strings[:, 2].tolist()
        == TokenFormatter().vectorized_format(np.array(TINY_VOCAB, dtype=object)[top]).tolist()
    )
    assert (stat.trajectory_labels.label_strings[:, 3] == "").all()
    hover = stat.trajectory_labels.hover_over_entries
    assert (hover[:, 3] == "").all()  # padded in both prompts
    assert (hover[:, 2, :, 2:] == "").all() and (hover[:, 2, :, :2] != "").all()


def test_hover_template_and_customdata_from_a_tokenizer(tiny_tokenizer):
    # One position, rows 0/1: top tokens "Ġcat" (70%) then "Ġthe" (20%); output row "a", "b".
    vocab = len(TINY_VOCAB)
    probs = np.full((2, 1, vocab), 0.1 / (vocab - 2))
    probs[0, 0, [2, 1]] = [0.7, 0.2]
    probs[1, 0, [5, 6]] = [0.6, 0.3]
    traj = PredictionTrajectory(
        oracle.log_probs_from_probs(probs), np.array([1]), tokenizer=tiny_tokenizer
    )
    heatmap = traj.entropy(topk=2).heatmap()
    assert heatmap.hovertemplate == (
        "%{customdata[0]}%{customdata[1]}<br>%{customdata[2]}%{customdata[3]}<br><extra></extra>"
    )
    customdata = np.asarray(heatmap.customdata)
    assert customdata.shape == (2, 1, 4)
    # Token column width 5 ("_cat" + 1), value column width 7 ("70.00%" + 1).
    assert customdata[0, 0].tolist() == [" _cat", " 70.00%", " _the", " 20.00%"]
    assert customdata[1, 0].tolist() == ["    a", " 60.00%", "    b", " 30.00%"]
    assert list(heatmap.text[:, 0]) == ["_cat", "a"]
