"""logitlenskit's V2 layout (meta, layers, input, topk, tracked): written, read, round-tripped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _explorer_helpers import V2
from tuned_lens.errors import InvalidInputError
from tuned_lens.explorer import (
    build_data,
    decode_view,
    from_logitlenskit,
    is_logitlenskit,
    load_data,
    to_logitlenskit,
)


def close(left, right, tol=2e-3):
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(close(left[k], right[k], tol) for k in left)
    if isinstance(left, list):
        return len(left) == len(right) and all(close(x, y, tol) for x, y in zip(left, right))
    if isinstance(left, float) and isinstance(right, (int, float)):
        return abs(left - right) <= tol
    return left == right


def test_v2_reads_and_writes_back_the_same_document():
    assert is_logitlenskit(V2)
    data = from_logitlenskit(V2)
    view = decode_view(data, 0)
    text = data["tokens"]["text"]
    assert [text[i] for i in view["input"]] == ["The", "_quick", "\\n"]  # TokenFormatter's way
    assert view["topk_probs"][1, 1].tolist() == pytest.approx([0.6, 0.2], abs=1e-3)
    back = to_logitlenskit(data)
    assert back["meta"]["version"] == 2 and back["meta"]["model"] == "gpt2"
    for key in ("layers", "input", "topk"):
        assert back[key] == V2[key], key
    assert close(back["tracked"], V2["tracked"])


def test_load_data_converts_a_v2_file(tmp_path):
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(V2))
    data = load_data(path)
    assert data["format"] == "tuned-lens-explorer" and data["lenses"][0]["kind"] == "logitlenskit"


def test_our_documents_written_as_v2_keep_every_known_probability(pair):
    a = pair[0]
    data = build_data(a, topk=3, track=[1])
    v2 = to_logitlenskit(data, view=1)
    assert is_logitlenskit(v2)
    rows, t = a.num_layers + 1, a.num_tokens
    assert v2["layers"] == list(range(rows)) and len(v2["topk"]) == rows
    assert v2["input"] == [data["tokens"]["raw"][i] for i in decode_view(data, 1)["input"]]
    _, probs = a._cell_top_k(3)
    lp = np.asarray(a.log_probs)[1]
    for r in range(rows):
        for q in range(t):
            assert len(v2["topk"][r][q]) == 3
            for name, p in zip(v2["topk"][r][q], probs[1, r, q]):
                assert v2["tracked"][q][name][r] == pytest.approx(float(p), rel=2e-3, abs=1e-4)
            # The tracked token is known everywhere.
            tracked_name = "Ġthe"
            assert v2["tracked"][q][tracked_name][r] == pytest.approx(
                float(np.exp(lp[r, q, 1])), rel=2e-3, abs=1e-4
            )
    # Where a token was neither tracked nor in a cell's top-k, its value is unknown (null).
    values = [x for entry in v2["tracked"] for traj in entry.values() for x in traj]
    assert None in values
    # And back: the top-k tokens and their probabilities survive.
    again = decode_view(from_logitlenskit(v2), 0)
    np.testing.assert_allclose(again["topk_probs"], probs[1], rtol=2e-3, atol=1e-4)


def test_malformed_v2_is_rejected():
    with pytest.raises(InvalidInputError, match="V2"):
        from_logitlenskit({"meta": {"version": 1}})
    broken = {**V2, "topk": V2["topk"][:2]}
    with pytest.raises(InvalidInputError, match="topk"):
        from_logitlenskit(broken)
