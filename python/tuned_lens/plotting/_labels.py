"""Cell labels and hover tables from top-k token ids (computed once by ``lens_stats``).

Everything here works on small arrays: token ids of shape ``(*B, rows, T, k)`` with
``k <= 64``, never on the vocabulary axis. Token strings are looked up once per distinct id.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..types import Tokenizer
from .token_formatter import TokenFormatter

# Shown in a cell whose batch elements disagree.
HETEROGENEOUS_LABEL = "*"


def format_token_ids(
    ids: NDArray[np.integer], tokenizer: Tokenizer, formatter: TokenFormatter
) -> NDArray[np.str_]:
    """Formatted token strings for an array of token ids (any shape).

    Args:
        ids: Integer token ids, any shape.
        tokenizer: A Hugging Face tokenizer (``convert_ids_to_tokens`` is used).
        formatter: How tokens are shown.

    Returns:
        A ``numpy.str_`` array of the same shape; ids the tokenizer does not know show as
        ``"<unk>"``.
    """
    ids = np.asarray(ids)
    if ids.size == 0:
        return np.zeros(ids.shape, dtype="<U1")
    unique_ids, inverse = np.unique(ids, return_inverse=True)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in unique_ids])
    token_array = np.empty(len(unique_ids), dtype=object)
    token_array[:] = [tokens] if isinstance(tokens, str) else list(tokens)
    formatted = formatter.vectorized_format(token_array)
    return formatted[inverse.reshape(ids.shape)]


def consolidate_over_batch(
    ids: NDArray[np.integer], n_batch_axes: int, valid: NDArray[np.bool_] | None
) -> tuple[NDArray[np.int64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Collapse the batch axes of an id array, noting where batch elements disagree.

    Args:
        ids: ``(*B, *rest)`` token ids.
        n_batch_axes: ``len(B)``.
        valid: ``None`` or a boolean array broadcastable to ``ids``; invalid (padded) entries
            are ignored.

    Returns:
        ``(first, uniform, present)``, each of shape ``rest``: the id shared by the valid
        elements, whether they all agree, and whether there was any valid element.
    """
    ids64: NDArray[np.int64] = np.asarray(ids, dtype=np.int64)
    axes = tuple(range(n_batch_axes))
    if valid is None:
        if n_batch_axes == 0:
            return ids64, np.ones(ids64.shape, bool), np.ones(ids64.shape, bool)
        low: NDArray[np.int64] = np.asarray(ids64.min(axis=axes))
        high: NDArray[np.int64] = np.asarray(ids64.max(axis=axes))
        return low, np.asarray(low == high), np.ones(low.shape, bool)
    valid_all = np.broadcast_to(valid, ids64.shape)
    big = np.iinfo(np.int64).max
    low = np.asarray(np.where(valid_all, ids64, big).min(axis=axes))
    high = np.asarray(np.where(valid_all, ids64, -1).max(axis=axes))
    present: NDArray[np.bool_] = np.asarray(valid_all.any(axis=axes) if n_batch_axes else valid_all)
    return np.where(present, low, 0), present & (low == high), present


def consolidated_labels(
    ids: NDArray[np.integer],
    n_batch_axes: int,
    valid: NDArray[np.bool_] | None,
    tokenizer: Tokenizer,
    formatter: TokenFormatter,
) -> NDArray[np.str_]:
    """One formatted token per cell: the batch's common token, ``"*"`` or ``""`` (all padded).

    Args:
        ids: ``(*B, *rest)`` token ids.
        n_batch_axes: ``len(B)``.
        valid: ``None`` or a mask broadcastable to ``ids`` (``False`` = padding).
        tokenizer: A Hugging Face tokenizer.
        formatter: How tokens are shown.

    Returns:
        A ``numpy.str_`` array of shape ``rest``.
    """
    first, uniform, present = consolidate_over_batch(ids, n_batch_axes, valid)
    labels = format_token_ids(first, tokenizer, formatter).astype(object)
    labels[~uniform] = HETEROGENEOUS_LABEL
    labels[~present] = ""
    return labels.astype(np.str_)


def percent_strings(values: NDArray[np.floating], *, prefix: str = "") -> NDArray[np.str_]:
    """``prefix + "%.2f%%"`` of ``100 * values`` for every element.

    Args:
        values: Probabilities (or probability differences), any shape.
        prefix: Put before the number (``"Δ"`` for differences).

    Returns:
        A ``numpy.str_`` array of the same shape.
    """
    values = np.asarray(values, dtype=np.float64) * 100.0
    return np.char.add(np.char.add(prefix, np.char.mod("%.2f", values)), "%")


def hover_table(
    token_strings: NDArray[np.str_],
    value_strings: NDArray[np.str_],
    n_rows: int,
    n_positions: int,
    max_entries_to_show: int,
    valid: NDArray[np.bool_] | None = None,
) -> NDArray[np.str_]:
    """Interleave tokens and values into the hover table of every cell.

    Args:
        token_strings: ``(*B, n_rows, n_positions, k)`` formatted tokens.
        value_strings: ``(*B, n_rows, n_positions, k)`` formatted values.
        n_rows: Layers (rows of the heat map).
        n_positions: Positions (columns of the heat map).
        max_entries_to_show: How many batch elements get a (token, value) column pair.
        valid: ``None`` or ``(*B, n_positions)``; padded entries are shown blank.

    Returns:
        ``(n_rows, n_positions, k, 2 * min(batch, max_entries_to_show))``: row ``j`` lists the
        ``j``-th entry of each batch element as ``token, value`` column pairs.
    """
    k = token_strings.shape[-1]
    shape = (-1, n_rows, n_positions, k)
    n_show = max(int(max_entries_to_show), 0)
    tokens = token_strings.reshape(shape)[:n_show]
    values = value_strings.reshape(shape)[:n_show]
    if valid is not None:
        keep = np.broadcast_to(
            np.asarray(valid).reshape(-1, 1, n_positions, 1)[:n_show], tokens.shape
        )
        tokens = np.where(keep, tokens, "")
        values = np.where(keep, values, "")
    n_batch = tokens.shape[0]
    table = np.empty((n_rows, n_positions, k, 2 * n_batch), dtype=np.result_type(tokens, values))
    table[..., 0::2] = np.moveaxis(tokens, 0, -1)
    table[..., 1::2] = np.moveaxis(values, 0, -1)
    return table


def batch_hover_table(
    ids: NDArray[np.int64],
    values: NDArray[np.floating],
    tokenizer: Tokenizer,
    formatter: TokenFormatter,
    n_rows: int,
    max_entries_to_show: int,
    position_mask: NDArray[np.bool_] | None,
    *,
    prefix: str = "",
) -> NDArray[np.str_]:
    """The hover table of top-k cells; only the batch elements shown are formatted.

    Args:
        ids: ``(*B, n_rows, T, k)`` token ids.
        values: ``(*B, n_rows, T, k)`` their probabilities (or probability changes).
        tokenizer: For the token strings.
        formatter: How tokens are shown.
        n_rows: Rows of the heat map.
        max_entries_to_show: Batch elements shown.
        position_mask: ``(*B, T)`` True at real tokens, or None.
        prefix: Put before each percentage (``"Δ"`` for changes).

    Returns:
        See :func:`hover_table`.
    """
    n_show = max(int(max_entries_to_show), 0)
    n_positions = int(ids.shape[-2])
    flat_ids = ids.reshape((-1,) + ids.shape[-3:])[:n_show]
    flat_values = values.reshape((-1,) + values.shape[-3:])[:n_show]
    flat_mask = None
    if position_mask is not None:
        flat_mask = position_mask.reshape(-1, position_mask.shape[-1])[:n_show]
    tokens = format_token_ids(flat_ids, tokenizer, formatter)
    strings = percent_strings(flat_values, prefix=prefix)
    return hover_table(tokens, strings, n_rows, n_positions, n_show, flat_mask)


def rank_strings(ranks: NDArray[np.floating] | NDArray[np.integer]) -> NDArray[np.str_]:
    """``"%d"`` for whole ranks, ``"%.1f"`` for fractional batch means, ``""`` for NaN."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out = np.full(ranks.shape, "", dtype=object)
    finite = np.isfinite(ranks)
    whole = finite & (ranks == np.round(ranks))
    out[whole] = np.char.mod("%d", ranks[whole].astype(np.int64))
    frac = finite & ~whole
    out[frac] = np.char.mod("%.1f", ranks[frac])
    return out.astype(np.str_)
