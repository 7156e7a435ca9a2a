"""Reading and writing logitlenskit's published V2 layout, so files travel between tools.

A V2 document is ``{"meta": {"version": 2, "timestamp", "model"}, "layers": [ints],
"input": [token strings], "topk": [layer][position] -> [token strings], "tracked":
[position] -> {token string: [probability per layer]}}``: strings instead of ids, and the
probabilities of the top-k tokens looked up in ``tracked``.

Writing one view of an explorer document, a token's probability at a layer is taken from the
tracked tokens, then from the top-k of that cell; where the trajectory did not keep it (the
token was outside that cell's top-k and not tracked) the value is ``null``, never a guess.
Reading, every tracked trajectory is kept (as the view's ``pos_tracked``) and the top-k
probabilities come from it; V2 carries no entropy, KL or ranks, so those statistics are absent.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ._codec import encode_array, index_dtype
from .schema import FORMAT, VERSION, decode_view

__all__ = ["from_logitlenskit", "is_logitlenskit", "to_logitlenskit"]

_V2_KEYS = ("meta", "layers", "input", "topk", "tracked")


def is_logitlenskit(data: Any) -> bool:
    """Whether ``data`` looks like a logitlenskit V2 document."""
    return (
        isinstance(data, dict)
        and all(key in data for key in _V2_KEYS)
        and isinstance(data["meta"], dict)
        and data["meta"].get("version") == 2
    )


def _prob_lookup(data: dict[str, Any], view: dict[str, Any]) -> Any:
    """``prob(row, position, token index)`` from what the view kept, or None."""
    tracked = {int(t): j for j, t in enumerate(view["tracked_tokens"])}
    tracked_lp = view["tracked_log_probs"]
    pos_tracked: dict[tuple[int, int], Any] = {}
    if view["pos_tracked"] is not None:
        pt = view["pos_tracked"]
        for n, (p, t) in enumerate(zip(pt["positions"].tolist(), pt["tokens"].tolist())):
            pos_tracked[p, t] = pt["probs"][n]

    def prob(row: int, position: int, token: int) -> float | None:
        if token in tracked and tracked_lp is not None:
            value = float(np.exp(tracked_lp[row, position, tracked[token]]))
        elif (position, token) in pos_tracked:
            value = float(pos_tracked[position, token][row])
        else:
            hits = np.flatnonzero(view["topk_tokens"][row, position] == token)
            value = float(view["topk_probs"][row, position, hits[0]]) if hits.size else math.nan
        return None if math.isnan(value) else round(value, 6)

    return prob


def to_logitlenskit(data: dict[str, Any], view: int = 0) -> dict[str, Any]:
    """One view of an explorer document in logitlenskit's V2 layout.

    Args:
        data: A version-1 explorer document.
        view: Which view (lens × prompt).

    Returns:
        The V2 document (token strings are the tokenizer's decoded strings, ``tokens.raw``).
    """
    v = decode_view(data, view)
    raw = data["tokens"]["raw"]
    rows, positions, _ = v["topk_tokens"].shape
    labels = data["views"][view].get("row_labels")
    layers = [int(x) for x in labels] if labels and all(_is_int(x) for x in labels) else None
    prob = _prob_lookup(data, v)
    topk = [
        [
            [raw[t] for t, p in zip(v["topk_tokens"][r, q], v["topk_probs"][r, q]) if p == p]
            for q in range(positions)
        ]
        for r in range(rows)
    ]
    tracked = []
    for q in range(positions):
        tokens = list(dict.fromkeys(v["topk_tokens"][:, q].ravel().tolist()))
        tokens += [t for t in v["tracked_tokens"].tolist() if t not in tokens]
        if v["pos_tracked"] is not None:
            here = v["pos_tracked"]["positions"] == q
            tokens += [t for t in v["pos_tracked"]["tokens"][here].tolist() if t not in tokens]
        entry: dict[str, list[float | None]] = {}
        for t in tokens:
            entry.setdefault(raw[t], [prob(r, q, t) for r in range(rows)])
        tracked.append(entry)
    lens = data["lenses"][v["lens"]]["name"]
    return {
        "meta": {
            "version": 2,
            "timestamp": data["meta"].get("created", ""),
            "model": data["meta"].get("model", ""),
            "lens": lens,
            "prompt": data["prompts"][v["prompt"]],
        },
        "layers": layers if layers is not None else list(range(rows)),
        "input": [raw[t] for t in v["input"].tolist()],
        "topk": topk,
        "tracked": tracked,
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())


def _check_v2(v2: Any) -> tuple[int, int]:
    if not is_logitlenskit(v2):
        raise InvalidInputError(
            "not a logitlenskit V2 document (needs meta.version = 2, layers, input, topk, tracked)",
            option="data",
        )
    rows, positions = len(v2["layers"]), len(v2["input"])
    if len(v2["topk"]) != rows or any(len(layer) != positions for layer in v2["topk"]):
        raise InvalidInputError(
            f"logitlenskit topk must be [layer][position] = [{rows}][{positions}]", option="data"
        )
    if len(v2["tracked"]) != positions:
        raise InvalidInputError(
            f"logitlenskit tracked has {len(v2['tracked'])} positions, input has {positions}",
            option="data",
        )
    return rows, positions


def _table(strings: list[str]) -> dict[str, Any]:
    from ..plotting import TokenFormatter

    # V2 strings are decoded text: spaces and newlines are the real characters.
    short = TokenFormatter(whitespace_token=" ", newline_token="\n")
    full = TokenFormatter(whitespace_token=" ", newline_token="\n", max_string_len=None)
    return {
        "ids": encode_array(np.full(len(strings), -1), "i32"),
        "text": [full.format(s) for s in strings],
        "short": [short.format(s) for s in strings],
        "raw": list(strings),
    }


def from_logitlenskit(v2: dict[str, Any], lens_name: str = "logitlenskit") -> dict[str, Any]:
    """A logitlenskit V2 document as a version-1 explorer document (one lens, one prompt).

    Args:
        v2: The V2 document.
        lens_name: The name of its one lens.

    Returns:
        The explorer document; token ids are unknown (``-1``).
    """
    rows, positions = _check_v2(v2)
    strings: dict[str, int] = {"": 0}  # entry 0 pads cells with fewer than k tokens
    for s in [*v2["input"], *(s for layer in v2["topk"] for cell in layer for s in cell)]:
        strings.setdefault(str(s), len(strings))
    for entry in v2["tracked"]:
        for s in entry:
            strings.setdefault(str(s), len(strings))
    k = max((len(cell) for layer in v2["topk"] for cell in layer), default=1) or 1
    ids = np.zeros((rows, positions, k), dtype=np.int64)
    probs = np.full((rows, positions, k), np.nan, dtype=np.float32)
    for r, layer in enumerate(v2["topk"]):
        for q, cell in enumerate(layer):
            for j, s in enumerate(cell):
                ids[r, q, j] = strings[str(s)]
                trajectory = v2["tracked"][q].get(s)
                value = None if trajectory is None else trajectory[r]
                probs[r, q, j] = np.nan if value is None else float(value)
    pos, tok, traj = [], [], []
    for q, entry in enumerate(v2["tracked"]):
        for s, values in entry.items():
            pos.append(q)
            tok.append(strings[str(s)])
            traj.append([np.nan if x is None else float(x) for x in values])
    dtype = index_dtype(len(strings))
    view = {
        "lens": 0,
        "prompt": 0,
        "rows": rows,
        "positions": positions,
        "k": k,
        "row_labels": [str(layer) for layer in v2["layers"]],
        "input": encode_array(np.array([strings[str(s)] for s in v2["input"]]), dtype),
        "targets": None,
        "topk_tokens": encode_array(ids, dtype),
        "topk_probs": encode_array(probs, "f16"),
        "stats": {},
        "tracked": None,
        "pos_tracked": {
            "positions": encode_array(np.array(pos, dtype=np.int64), "u32"),
            "tokens": encode_array(np.array(tok, dtype=np.int64), dtype),
            "probs": encode_array(np.array(traj, dtype=np.float32).reshape(len(pos), rows), "f16"),
        },
    }
    meta = v2["meta"]
    return {
        "format": FORMAT,
        "version": VERSION,
        "meta": {
            "title": str(meta.get("prompt", "")),
            "model": str(meta.get("model", "")),
            "created": str(meta.get("timestamp", "")),
            "generator": "logitlenskit V2 (converted)",
            "formatter": None,
        },
        "tokens": _table(list(strings)),
        "lenses": [{"name": str(meta.get("lens", lens_name)), "kind": "logitlenskit"}],
        "prompts": [str(meta.get("prompt", "prompt 0"))],
        "views": [view],
        "pairs": [],
    }
