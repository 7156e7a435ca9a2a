"""The explorer's data file: built from what the trajectories reduced, compact, versioned."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _explorer_helpers import VOCAB, compact_from_full, make_pair
from tuned_lens.errors import InvalidInputError
from tuned_lens.explorer import build_data, decode_view, load_data, render_html, save_data
from tuned_lens.explorer._codec import decode_array, encode_array
from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory, TokenFormatter

F16 = dict(rtol=1e-3, atol=1e-4)


def table_ids(data: dict, indices: np.ndarray) -> np.ndarray:
    return decode_array(data["tokens"]["ids"])[indices]


def test_codec_round_trips_and_keeps_nan_and_inf():
    values = np.array([[0.5, np.nan], [np.inf, -np.inf]], dtype=np.float32)
    back = decode_array(json.loads(json.dumps(encode_array(values, "f16"))))
    assert back.shape == (2, 2) and np.isnan(back[0, 1]) and back[1, 0] == np.inf
    assert back[0, 0] == 0.5 and back[1, 1] == -np.inf
    ids = np.array([0, 65535, 7])
    assert decode_array(encode_array(ids, "u16")).tolist() == ids.tolist()
    with pytest.raises(InvalidInputError, match="bytes"):
        decode_array({"dtype": "u16", "shape": [4], "data": encode_array(ids, "u16")["data"]})


def test_views_hold_what_python_computed(pair):
    a, b = pair
    data = build_data({"logit": a, "tuned": b}, track=[1, 2])
    assert [lens["name"] for lens in data["lenses"]] == ["logit", "tuned"]
    assert len(data["views"]) == 4 and len(data["prompts"]) == 2
    ids, probs = a._cell_top_k(10)
    entropy, ce, rank = (
        a._cell_entropy(),
        -a._cell_target_log_prob("targets"),
        a._cell_target_rank(),
    )
    for prompt in range(2):
        view = decode_view(data, prompt)
        assert (view["lens"], view["prompt"]) == (0, prompt)
        assert np.array_equal(table_ids(data, view["topk_tokens"]), ids[prompt])
        np.testing.assert_allclose(view["topk_probs"], probs[prompt], **F16)
        np.testing.assert_allclose(view["stats"]["entropy"], entropy[prompt], **F16)
        np.testing.assert_allclose(view["stats"]["cross_entropy"], ce[prompt], **F16)
        assert np.array_equal(view["stats"]["target_rank"], rank[prompt])
        assert np.array_equal(table_ids(data, view["input"]), a.input_ids[prompt])
        assert np.array_equal(table_ids(data, view["targets"]), a.targets[prompt])
        assert table_ids(data, view["tracked_tokens"]).tolist() == [1, 2]
        expected = np.asarray(a.log_probs)[prompt][..., [1, 2]]
        np.testing.assert_allclose(view["tracked_log_probs"], expected, **F16)


def test_pairs_are_exact_kl_both_ways_and_js(pair):
    a, b = pair
    data = build_data([a, b])
    assert len(data["pairs"]) == 2
    first = data["pairs"][0]
    assert (first["a"], first["b"]) == (0, 2)  # lens 0 prompt 0 against lens 1 prompt 0
    np.testing.assert_allclose(decode_array(first["kl_ab"]), a._cell_pairwise(b, "kl")[0], **F16)
    np.testing.assert_allclose(decode_array(first["kl_ba"]), b._cell_pairwise(a, "kl")[0], **F16)
    np.testing.assert_allclose(decode_array(first["js"]), a._cell_pairwise(b, "js")[0], **F16)


def test_compact_and_full_trajectories_give_the_same_document(pair):
    full = pair[0]
    compact = compact_from_full(full, k=6, track=[3, 4])
    from_full = build_data(full, topk=6, track=[3, 4])
    from_compact = build_data(compact, topk=6)
    for view in range(2):
        left, right = decode_view(from_full, view), decode_view(from_compact, view)
        for key in ("input", "targets", "topk_tokens", "tracked_tokens"):
            assert np.array_equal(left[key], right[key]), key
        np.testing.assert_allclose(left["topk_probs"], right["topk_probs"], **F16)
        for name in ("entropy", "forward_kl", "cross_entropy", "target_rank"):
            np.testing.assert_allclose(left["stats"][name], right["stats"][name], **F16)
    assert from_full["tokens"] == from_compact["tokens"]


def test_token_strings_are_formatted_as_token_formatter_does(pair):
    data = build_data(pair[0])
    ids = decode_array(data["tokens"]["ids"]).tolist()
    assert data["tokens"]["short"] == [TokenFormatter().format(VOCAB[i]) for i in ids]
    full = TokenFormatter(max_string_len=None)
    assert data["tokens"]["text"] == [full.format(VOCAB[i]) for i in ids]
    assert "_the" in data["tokens"]["short"] and "\\n" in data["tokens"]["short"]
    assert "ThisIs…" in data["tokens"]["short"] and "ThisIsALongToken" in data["tokens"]["text"]


def test_padding_is_dropped_per_prompt(tokenizer):
    a, _ = make_pair(tokenizer, n=2, t=6)
    mask = np.ones((2, 6), dtype=bool)
    mask[1, :2] = False  # left-padded second prompt
    padded = PredictionTrajectory(
        log_probs=a.log_probs,
        input_ids=a.input_ids,
        targets=a.targets,
        tokenizer=tokenizer,
        attention_mask=mask,
    )
    data = build_data(padded)
    assert [v["positions"] for v in data["views"]] == [6, 4]
    view = decode_view(data, 1)
    assert np.array_equal(table_ids(data, view["input"]), a.input_ids[1, 2:])
    ids, _ = a._cell_top_k(10)
    assert np.array_equal(table_ids(data, view["topk_tokens"]), ids[1][:, 2:])


def test_save_load_round_trip_and_validation(pair, tmp_path):
    data = build_data(pair[0], title="round trip")
    path = save_data(data, tmp_path / "t.json")
    assert load_data(path) == json.loads(json.dumps(data))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically, nothing left behind
    for broken, match in (
        ({**data, "version": 2}, "version"),
        ({**data, "format": "other"}, "format"),
        ({**data, "views": []}, "no views"),
        ({**data, "views": [{**data["views"][0], "rows": 3}]}, "shape"),
        ({**data, "views": [{**data["views"][0], "lens": 5}]}, "lens"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            load_data(broken)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not JSON"):
        load_data(tmp_path / "bad.json")


def test_options_are_checked(pair):
    with pytest.raises(InvalidInputError, match="lens_names"):
        build_data(list(pair), lens_names=["only one"])
    with pytest.raises(InvalidInputError, match="topk"):
        build_data(pair[0], topk=0)
    compact = compact_from_full(pair[0], k=4, track=[3])
    with pytest.raises(InvalidInputError, match="not tracked"):
        build_data(compact, track=[5])


def test_a_30_layer_512_position_top10_page_stays_under_5_mb():
    rng = np.random.default_rng(0)
    n_rows, t, k, vocab = 31, 512, 10, 49_152
    # Worst case for the token table: top-k ids spread over the whole vocabulary.
    ids = rng.integers(0, vocab, size=(1, n_rows, t, k))
    probs = np.sort(rng.dirichlet(np.ones(64), size=(1, n_rows, t))[..., :k], axis=-1)[..., ::-1]
    cells = rng.random((1, n_rows, t)).astype(np.float32)
    compact = CompactTrajectory(
        input_ids=rng.integers(0, vocab, size=(1, t)),
        entropy_cells=cells * 5,
        forward_kl_cells=cells,
        top_k_ids=ids,
        top_k_probs=probs.astype(np.float32),
        targets=rng.integers(0, vocab, size=(1, t)),
        target_log_prob_cells=-cells * 3,
        target_rank_cells=rng.integers(1, vocab, size=(1, n_rows, t)),
        vocab_size=vocab,
    )
    data = build_data(compact)
    page = render_html(data)
    size = len(page.encode())
    print(f"30x512 top-10 page: {size / 1e6:.2f} MB, data {len(json.dumps(data)) / 1e6:.2f} MB")
    assert size < 5_000_000
