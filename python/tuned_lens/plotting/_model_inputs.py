"""Turning user token ids (one sequence, a batch, ragged lists) into a rectangular batch.

Running the model and decoding its layers is :mod:`tuned_lens.decoding`'s job; its helpers
are re-exported here under their earlier names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar, overload

import numpy as np
from numpy.typing import NDArray

from ..decoding import check_lens_matches, input_vocab_mask, model_device, run_model
from ..errors import DTypeError, InvalidInputError
from ..types import BoolArray, IdArray, TokenIds

__all__ = [
    "TokenBatch",
    "aligned_ids",
    "check_lens_matches",
    "input_vocab_mask",
    "model_device",
    "run_model",
    "token_batch",
]

_A = TypeVar("_A", bound=np.ndarray)


class TokenBatch:
    """Token ids as a rectangular ``(B, T)`` batch with an optional padding mask.

    Attributes:
        ids: ``(B, T)`` int64 token ids (padding filled with ``pad_token_id``).
        mask: ``(B, T)`` bool, True at real tokens; ``None`` when nothing is padded.
        single: Whether the caller passed one 1-D sequence (results drop the batch axis).
    """

    def __init__(self, ids: IdArray, mask: BoolArray | None, single: bool):
        self.ids = ids
        self.mask = mask
        self.single = single

    @property
    def shape(self) -> tuple[int, int]:
        """``(B, T)``."""
        return int(self.ids.shape[0]), int(self.ids.shape[1])

    @overload
    def unbatch(self, array: None) -> None: ...

    @overload
    def unbatch(self, array: _A) -> _A: ...

    def unbatch(self, array: _A | None) -> _A | None:
        """Drop the leading batch axis of a result when the input was a single sequence."""
        if array is None:
            return None
        return array[0] if self.single else array


def _to_numpy(value: object) -> object:
    """A torch tensor as numpy (anything else unchanged)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def token_batch(
    input_ids: TokenIds,
    *,
    attention_mask: TokenIds | BoolArray | None = None,
    pad_token_id: int = 0,
    name: str = "input_ids",
) -> TokenBatch:
    """Normalise token ids to a :class:`TokenBatch`.

    Args:
        input_ids: A sequence of ints / 1-D array or tensor (one sequence), a 2-D ``(B, T)``
            array or tensor, or a list of sequences of different lengths (right-padded).
        attention_mask: Optional ``(B, T)`` (or ``(T,)``) mask, 1/True at real tokens.
        pad_token_id: Filler id for ragged lists.
        name: The argument's name, for error messages.

    Returns:
        The batch.
    """
    given_ids = _to_numpy(input_ids)
    mask: BoolArray | None = None
    ids: NDArray[np.generic]
    if isinstance(given_ids, np.ndarray):
        ids = given_ids
    elif isinstance(given_ids, Sequence) and given_ids and not np.isscalar(given_ids[0]):
        rows = [np.asarray(_to_numpy(row)).reshape(-1) for row in given_ids]
        lengths = {len(row) for row in rows}
        if len(lengths) == 1:
            ids = np.stack(rows)
        else:
            width = max(lengths)
            ids = np.full((len(rows), width), pad_token_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=bool)
            for i, row in enumerate(rows):
                ids[i, : len(row)] = row
                mask[i, : len(row)] = True
    else:
        ids = np.asarray(given_ids)
    if ids.ndim not in (1, 2) or ids.shape[-1] == 0:
        raise InvalidInputError(
            f"{name} must be (T,) or (B, T) with T > 0, got shape {ids.shape}", option=name
        )
    if ids.shape[0] == 0:
        raise InvalidInputError(
            f"{name} holds no sequences (shape {ids.shape}); pass at least one", option=name
        )
    if not np.issubdtype(ids.dtype, np.integer):
        raise DTypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    single = ids.ndim == 1
    batch_ids: IdArray = np.atleast_2d(ids).astype(np.int64, copy=False)
    if attention_mask is not None:
        given = np.atleast_2d(np.asarray(_to_numpy(attention_mask))).astype(bool)
        if given.shape != batch_ids.shape:
            raise InvalidInputError(
                f"attention_mask has shape {given.shape}, {name} has {batch_ids.shape}",
                option="attention_mask",
            )
        mask = given if mask is None else (mask & given)
    if mask is not None and mask.all():
        mask = None
    return TokenBatch(batch_ids, mask, single)


def aligned_ids(values: TokenIds | None, batch: TokenBatch, name: str) -> IdArray | None:
    """Targets / anti-targets shaped like ``batch.ids`` (ragged lists padded with 0).

    Args:
        values: ``None`` or ids in any form :func:`token_batch` accepts.
        batch: The input batch they belong to.
        name: The argument's name, for error messages.

    Returns:
        ``(B, T)`` int64, or ``None``.
    """
    if values is None:
        return None
    other = token_batch(values, name=name)
    if other.ids.shape != batch.ids.shape:
        raise InvalidInputError(
            f"{name} has shape {other.ids.shape[1:] if other.single else other.ids.shape}, "
            f"input_ids has {batch.ids.shape[1:] if batch.single else batch.ids.shape}",
            option=name,
        )
    return other.ids
