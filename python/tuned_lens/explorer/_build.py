"""Build an explorer document from trajectories (the data side of :func:`tuned_lens.explorer.explore`).

Every number comes from what a trajectory already reduced, through the same per-cell hooks
its statistic methods average: the top-k tokens and probabilities, entropy, forward KL, the
target's log-probability and rank, the log-probabilities of tracked tokens, and (for two
full trajectories of the same input) KL and JS between lenses. Nothing reads the vocabulary
axis beyond that.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, TypeAlias, Union

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError
from ._codec import encode_array, index_dtype
from .schema import FORMAT, VERSION

if TYPE_CHECKING:  # pragma: no cover
    from ..plotting import CompactTrajectory, PredictionTrajectory, TokenFormatter
    from ..types import Tokenizer

    Trajectory: TypeAlias = "CompactTrajectory | PredictionTrajectory"

__all__ = ["Trajectories", "build_data"]

Trajectories = Union["Trajectory", Sequence["Trajectory"], Mapping[str, "Trajectory"]]
"""One trajectory, a list of them, or ``{lens name: trajectory}``."""


@dataclass
class _Cells:
    """One lens's per-cell arrays with one leading prompt axis ``N``."""

    input_ids: NDArray[np.int64]
    targets: NDArray[np.int64] | None
    mask: NDArray[np.bool_] | None
    topk_ids: NDArray[np.int64]
    topk_probs: NDArray[np.float32]
    stats: dict[str, NDArray[Any]]
    tracked_ids: NDArray[np.int64] | None
    tracked_log_probs: NDArray[np.float32] | None
    row_labels: list[str]


def _flat(array: NDArray[Any], n_batch: int) -> NDArray[Any]:
    """``(*B, ...)`` -> ``(prod(B), ...)``; no batch axis -> a leading axis of 1."""
    return array[None] if n_batch == 0 else array.reshape(-1, *array.shape[n_batch:])


def _tracked(traj: Trajectory, track: Sequence[int] | None) -> tuple[Any, Any]:
    from ..plotting import CompactTrajectory

    if track is None and isinstance(traj, CompactTrajectory):
        return traj.tracked_ids, traj.tracked_log_probs
    if not track:
        return None, None
    ids = np.asarray(list(track), dtype=np.int64)
    return ids, np.stack([traj._cell_token_log_prob(int(i)) for i in ids], axis=-1)


def _cells_of(traj: Trajectory, topk: int, track: Sequence[int] | None) -> _Cells:
    """The per-cell arrays of one trajectory, prompts flattened onto one axis."""
    from ..plotting import CompactTrajectory

    k = min(topk, traj.topk if isinstance(traj, CompactTrajectory) else traj.vocab_size)
    ids, probs = traj._cell_top_k(k)
    stats: dict[str, NDArray[Any]] = {
        "entropy": traj._cell_entropy(),
        "forward_kl": traj._cell_forward_kl(),
    }
    if traj.targets is not None:
        stats["cross_entropy"] = -traj._cell_target_log_prob("targets")
        stats["target_rank"] = traj._cell_target_rank()
    if isinstance(traj, CompactTrajectory) and traj.comparison is not None:
        stats["kl_other"] = traj.comparison.kl
        stats["js_other"] = traj.comparison.js
    tracked_ids, tracked_lp = _tracked(traj, track)
    nb = traj.n_batch_axis

    def maybe(value: NDArray[Any] | None) -> NDArray[Any] | None:
        return None if value is None else _flat(np.asarray(value), nb)

    return _Cells(
        input_ids=_flat(np.asarray(traj.input_ids), nb),
        targets=maybe(traj.targets),
        mask=maybe(traj.attention_mask),
        topk_ids=_flat(np.asarray(ids), nb),
        topk_probs=_flat(np.asarray(probs, dtype=np.float32), nb),
        stats={name: _flat(np.asarray(v), nb) for name, v in stats.items()},
        tracked_ids=tracked_ids,
        tracked_log_probs=maybe(tracked_lp),
        row_labels=traj.row_labels,  # the true hidden-state indices, then "output"
    )


class _TokenTable:
    """The shared table of token strings: every id a document mentions, once."""

    def __init__(self) -> None:
        self._chunks: list[NDArray[np.int64]] = []
        self.ids: NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self.dtype = "u16"

    def add(self, ids: NDArray[Any] | None) -> None:
        if ids is not None:
            self._chunks.append(np.unique(np.asarray(ids, dtype=np.int64)))

    def freeze(self) -> None:
        self.ids = np.unique(np.concatenate(self._chunks)) if self._chunks else self.ids
        self.dtype = index_dtype(len(self.ids))

    def encode(self, ids: NDArray[Any]) -> dict[str, Any]:
        return encode_array(np.searchsorted(self.ids, np.asarray(ids, dtype=np.int64)), self.dtype)

    def index(self, ids: NDArray[Any]) -> list[int]:
        return [int(i) for i in np.searchsorted(self.ids, np.asarray(ids, dtype=np.int64))]

    def strings(self, tokenizer: Tokenizer | None, formatter: TokenFormatter) -> dict[str, Any]:
        from ..plotting._labels import format_token_ids

        ids = self.ids
        if tokenizer is None:
            names = [f"#{i}" for i in ids.tolist()]
            return {"ids": encode_array(ids, "i32"), "text": names, "short": names, "raw": names}
        full = replace(formatter, max_string_len=None)
        decode = getattr(tokenizer, "batch_decode", None)
        raw = decode([[i] for i in ids.tolist()]) if decode else None
        text = format_token_ids(ids, tokenizer, full).tolist()
        return {
            "ids": encode_array(ids, "i32"),
            "text": text,
            "short": format_token_ids(ids, tokenizer, formatter).tolist(),
            "raw": list(raw) if raw is not None else text,
        }


def _lens_items(trajectories: Trajectories, names: Sequence[str] | None) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]]
    if isinstance(trajectories, Mapping):
        items = [(str(k), v) for k, v in trajectories.items()]
    elif isinstance(trajectories, (list, tuple)):
        items = [(f"lens {i}", t) for i, t in enumerate(trajectories)]
    else:
        items = [("lens", trajectories)]
    if names is not None:
        if len(names) != len(items):
            raise InvalidInputError(
                f"lens_names has {len(names)} names for {len(items)} trajectories",
                option="lens_names",
            )
        items = [(str(n), t) for n, (_, t) in zip(names, items)]
    if not items:
        raise InvalidInputError("explore needs at least one trajectory", option="trajectories")
    return items


def _view(cells: _Cells, lens: int, prompt: int, table: _TokenTable) -> dict[str, Any]:
    keep = slice(None) if cells.mask is None else np.flatnonzero(cells.mask[prompt])
    ids = cells.topk_ids[prompt][:, keep]
    rows, positions, k = ids.shape
    stats = {}
    for name, values in cells.stats.items():
        cut = values[prompt][:, keep]
        stats[name] = encode_array(cut, "u32" if name == "target_rank" else "f16")
    tracked = None
    if cells.tracked_ids is not None and cells.tracked_log_probs is not None:
        tracked = {
            "tokens": table.index(cells.tracked_ids),
            "log_probs": encode_array(cells.tracked_log_probs[prompt][:, keep], "f16"),
        }
    targets = None if cells.targets is None else table.encode(cells.targets[prompt][keep])
    return {
        "lens": lens,
        "prompt": prompt,
        "rows": rows,
        "positions": positions,
        "k": k,
        "row_labels": cells.row_labels,
        "input": table.encode(cells.input_ids[prompt][keep]),
        "targets": targets,
        "topk_tokens": table.encode(ids),
        "topk_probs": encode_array(cells.topk_probs[prompt][:, keep], "f16"),
        "stats": stats,
        "tracked": tracked,
    }


def _pairs(
    items: list[tuple[str, Any]], cells: list[_Cells], view_of: dict[tuple[int, int], int]
) -> list[dict[str, Any]]:
    """Exact KL both ways and JS between full trajectories of the same input."""
    from ..plotting import PredictionTrajectory

    pairs = []
    for a, (_, ta) in enumerate(items):
        for b in range(a + 1, len(items)):
            tb = items[b][1]
            if not (isinstance(ta, PredictionTrajectory) and isinstance(tb, PredictionTrajectory)):
                continue
            if (
                ta.log_probs.shape != tb.log_probs.shape
                or ta.layer_indices != tb.layer_indices
                or not np.array_equal(ta.input_ids, tb.input_ids)
            ):
                continue
            nb = ta.n_batch_axis
            arrays = {
                "kl_ab": _flat(ta._cell_pairwise(tb, "kl"), nb),
                "kl_ba": _flat(tb._cell_pairwise(ta, "kl"), nb),
                "js": _flat(ta._cell_pairwise(tb, "js"), nb),
            }
            mask = cells[a].mask
            for prompt in range(arrays["js"].shape[0]):
                keep = slice(None) if mask is None else np.flatnonzero(mask[prompt])
                pair: dict[str, Any] = {"a": view_of[a, prompt], "b": view_of[b, prompt]}
                for name, values in arrays.items():
                    pair[name] = encode_array(values[prompt][:, keep], "f16")
                pairs.append(pair)
    return pairs


def _prompt_names(cells: _Cells, tokenizer: Tokenizer | None, given: Sequence[str] | None) -> list:
    count = cells.input_ids.shape[0]
    if given is not None:
        if len(given) != count:
            raise InvalidInputError(
                f"prompt_names has {len(given)} names for {count} prompts", option="prompt_names"
            )
        return [str(name) for name in given]
    decode = getattr(tokenizer, "decode", None)
    names = []
    for n in range(count):
        ids = cells.input_ids[n] if cells.mask is None else cells.input_ids[n][cells.mask[n]]
        text = decode([int(i) for i in ids[:12]]) if decode else ""
        names.append(f"prompt {n}" + (f": {' '.join(str(text).split())}…" if text else ""))
    return names


def build_data(
    trajectories: Trajectories,
    *,
    lens_names: Sequence[str] | None = None,
    prompt_names: Sequence[str] | None = None,
    track: Sequence[int] | None = None,
    topk: int = 10,
    formatter: TokenFormatter | None = None,
    title: str = "",
    model: str = "",
) -> dict[str, Any]:
    """A version-1 explorer document for one or more lenses over the same prompts.

    Args:
        trajectories: One trajectory (a lens), a list, or ``{lens name: trajectory}``; each
            may hold several prompts (batch axes are flattened, padding is dropped).
        lens_names: Names for the lenses, overriding the mapping's keys.
        prompt_names: Names for the prompts (default: their first tokens, decoded).
        track: Token ids whose log-probability is stored at every cell (a
            :class:`CompactTrajectory` must have tracked them; default: the ids it tracked).
        topk: Top tokens stored per cell (at most what a compact trajectory kept).
        formatter: How tokens are shown (default ``TokenFormatter()``).
        title: The page's title.
        model: The model's name, for the record.

    Returns:
        The document (a JSON-ready dict).
    """
    from ..plotting import TokenFormatter

    if topk < 1:
        raise InvalidInputError(f"topk must be positive, got {topk}", option="topk")
    formatter = formatter or TokenFormatter()
    items = _lens_items(trajectories, lens_names)
    cells = [_cells_of(traj, topk, track) for _, traj in items]
    counts = {c.input_ids.shape[0] for c in cells}
    if len(counts) > 1:
        raise InvalidInputError(
            f"the lenses hold different numbers of prompts {sorted(counts)}; give every lens "
            "the same prompts",
            option="trajectories",
        )
    table = _TokenTable()
    for c in cells:
        for ids in (c.input_ids, c.targets, c.topk_ids, c.tracked_ids):
            table.add(ids)
    table.freeze()
    tokenizer = next((t.tokenizer for _, t in items if t.tokenizer is not None), None)
    views: list[dict[str, Any]] = []
    view_of: dict[tuple[int, int], int] = {}
    for lens, c in enumerate(cells):
        for prompt in range(c.input_ids.shape[0]):
            view_of[lens, prompt] = len(views)
            views.append(_view(c, lens, prompt, table))
    return {
        "format": FORMAT,
        "version": VERSION,
        "meta": {
            "title": title,
            "model": model,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "generator": "tuned-lens-rs",
            "formatter": asdict(formatter),
        },
        "tokens": table.strings(tokenizer, formatter),
        "lenses": [
            {"name": name, "kind": type(t).__name__, "vocab_size": t.vocab_size}
            for name, t in items
        ],
        "prompts": _prompt_names(cells[0], tokenizer, prompt_names),
        "views": views,
        "pairs": _pairs(items, cells, view_of),
    }
