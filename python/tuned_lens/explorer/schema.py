"""The explorer's data file: version 1 of the ``tuned-lens-explorer`` JSON schema.

The schema is documented in ``docs/explorer.md``; this module holds its constants, the check
that a document follows it, reading and writing it (atomically), and decoding one view back
into numpy arrays. Building a document from trajectories is :mod:`._build`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._atomic import write_text_atomically
from ..errors import InvalidInputError
from ._codec import decode_array

__all__ = [
    "FORMAT",
    "STATISTICS",
    "VERSION",
    "decode_view",
    "save_data",
    "validate",
]

FORMAT = "tuned-lens-explorer"
VERSION = 1

#: Per-cell statistics a view may carry: name -> (label, units). ``max_prob`` is not stored:
#: it is the first top-k probability.
STATISTICS: dict[str, tuple[str, str]] = {
    "entropy": ("Entropy", "nats"),
    "forward_kl": ("Forward KL(model ‖ row)", "nats"),
    "cross_entropy": ("Cross entropy", "nats"),
    "target_rank": ("Rank of the target", ""),
    "kl_other": ("KL(self ‖ other lens)", "nats"),
    "js_other": ("JS(self, other lens)", "nats"),
}

_VIEW_ARRAYS = ("input", "topk_tokens", "topk_probs")
_PAIR_ARRAYS = ("kl_ab", "kl_ba", "js")


def fail(message: str) -> InvalidInputError:
    return InvalidInputError(f"explorer data: {message}", option="data")


def _check_view(view: Any, index: int, n_tokens: int, n_lenses: int, n_prompts: int) -> None:
    if not isinstance(view, dict):
        raise fail(f"views[{index}] is not an object")
    for key in ("lens", "prompt", "rows", "positions", "k", "stats", *_VIEW_ARRAYS):
        if key not in view:
            raise fail(f"views[{index}] lacks {key!r}")
    if not 0 <= view["lens"] < n_lenses or not 0 <= view["prompt"] < n_prompts:
        raise fail(f"views[{index}] names a lens or prompt that does not exist")
    rows, positions, k = view["rows"], view["positions"], view["k"]
    shapes = {"input": [positions], "topk_tokens": [rows, positions, k]}
    shapes["topk_probs"] = shapes["topk_tokens"]
    for key, shape in shapes.items():
        if view[key]["shape"] != shape:
            raise fail(f"views[{index}].{key} has shape {view[key]['shape']}, not {shape}")
    for name, stat in view["stats"].items():
        if name not in STATISTICS or stat["shape"] != [rows, positions]:
            raise fail(f"views[{index}].stats.{name} is unknown or not {[rows, positions]}")
    tables = [view["input"], view["topk_tokens"], view.get("targets")]
    for table in filter(None, tables):
        ids = decode_array(table, name=f"views[{index}] token indices")
        if ids.size and (ids.min() < 0 or ids.max() >= n_tokens):
            raise fail(f"views[{index}] indexes outside the token table ({n_tokens} entries)")


def validate(data: Any) -> dict[str, Any]:
    """Check that ``data`` is a version-1 explorer document; return it.

    Args:
        data: The parsed JSON.

    Returns:
        ``data`` itself.

    Raises:
        InvalidInputError: It is not one, naming the first problem found.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise fail(f'not a {FORMAT} document (its "format" must be "{FORMAT}")')
    if data.get("version") != VERSION:
        raise fail(f"version {data.get('version')!r} is not supported (this reads {VERSION})")
    for key in ("meta", "tokens", "lenses", "prompts", "views"):
        if key not in data:
            raise fail(f"the document lacks {key!r}")
    tokens = data["tokens"]
    n_tokens = len(tokens.get("text", []))
    for key in ("short", "raw"):
        if len(tokens.get(key, [])) != n_tokens:
            raise fail(f"tokens.{key} and tokens.text differ in length")
    if decode_array(tokens["ids"], name="tokens.ids").shape != (n_tokens,):
        raise fail("tokens.ids and tokens.text differ in length")
    if not data["views"]:
        raise fail("the document has no views")
    for index, view in enumerate(data["views"]):
        _check_view(view, index, n_tokens, len(data["lenses"]), len(data["prompts"]))
    for pair in data.get("pairs", []):
        if not all(0 <= pair[key] < len(data["views"]) for key in ("a", "b")):
            raise fail("a pair names a view that does not exist")
    return data


def save_data(data: dict[str, Any], path: str | Path) -> Path:
    """Write a document as compact JSON (atomically).

    Args:
        data: A document, checked with :func:`validate` first.
        path: Where to write it.

    Returns:
        The path written.
    """
    validate(data)
    path = Path(path)
    write_text_atomically(path, json.dumps(data, separators=(",", ":"), allow_nan=False))
    return path


def decode_view(data: dict[str, Any], index: int) -> dict[str, Any]:
    """One view as numpy arrays, with token indices resolved to table entries.

    Args:
        data: A version-1 document.
        index: Which view.

    Returns:
        ``{"lens", "prompt", "input", "targets", "topk_tokens", "topk_probs", "stats",
        "tracked_tokens", "tracked_log_probs", "pos_tracked"}``: token arrays hold indices into
        ``data["tokens"]``; ``topk_probs`` and ``stats`` are float32 (ranks int64).
    """
    view = data["views"][index]

    def maybe(encoded: Any, name: str) -> NDArray[Any] | None:
        return None if encoded is None else decode_array(encoded, name=name)

    tracked = view.get("tracked") or {}
    pos = view.get("pos_tracked")
    return {
        "lens": view["lens"],
        "prompt": view["prompt"],
        "input": decode_array(view["input"], name="input"),
        "targets": maybe(view.get("targets"), "targets"),
        "topk_tokens": decode_array(view["topk_tokens"], name="topk_tokens"),
        "topk_probs": decode_array(view["topk_probs"], name="topk_probs"),
        "stats": {k: decode_array(v, name=k) for k, v in view["stats"].items()},
        "tracked_tokens": np.asarray(tracked.get("tokens", []), dtype=np.int64),
        "tracked_log_probs": maybe(tracked.get("log_probs"), "tracked.log_probs"),
        "pos_tracked": None
        if pos is None
        else {key: decode_array(pos[key], name=key) for key in ("positions", "tokens", "probs")},
    }
