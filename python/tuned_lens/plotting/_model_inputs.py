"""Turning user token ids (one sequence, a batch, ragged lists) into model inputs, and running
the model once with all hidden states.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # pragma: no cover
    import torch


class TokenBatch:
    """Token ids as a rectangular ``(B, T)`` batch with an optional padding mask.

    Attributes:
        ids: ``(B, T)`` int64 token ids (padding filled with ``pad_token_id``).
        mask: ``(B, T)`` bool, True at real tokens; ``None`` when nothing is padded.
        single: Whether the caller passed one 1-D sequence (results drop the batch axis).
    """

    def __init__(self, ids: NDArray[np.int64], mask: NDArray[np.bool_] | None, single: bool):
        self.ids = ids
        self.mask = mask
        self.single = single

    @property
    def shape(self) -> tuple[int, int]:
        return self.ids.shape  # type: ignore[return-value]

    def unbatch(self, array: Any) -> Any:
        """Drop the leading batch axis of a result when the input was a single sequence."""
        if array is None:
            return None
        return array[0] if self.single else array


def _to_numpy(value: Any) -> Any:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return value


def token_batch(
    input_ids: Any,
    *,
    attention_mask: Any = None,
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
    input_ids = _to_numpy(input_ids)
    mask = None
    if isinstance(input_ids, np.ndarray):
        ids = input_ids
    elif isinstance(input_ids, Sequence) and input_ids and not np.isscalar(input_ids[0]):
        rows = [np.asarray(_to_numpy(row)).reshape(-1) for row in input_ids]
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
        ids = np.asarray(input_ids)
    if ids.ndim not in (1, 2) or ids.shape[-1] == 0:
        raise ValueError(f"{name} must be (T,) or (B, T) with T > 0, got shape {ids.shape}")
    if not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    single = ids.ndim == 1
    ids = np.atleast_2d(ids).astype(np.int64, copy=False)
    if attention_mask is not None:
        given = np.atleast_2d(np.asarray(_to_numpy(attention_mask))).astype(bool)
        if given.shape != ids.shape:
            raise ValueError(f"attention_mask has shape {given.shape}, {name} has {ids.shape}")
        mask = given if mask is None else (mask & given)
    if mask is not None and mask.all():
        mask = None
    return TokenBatch(ids, mask, single)


def aligned_ids(values: Any, batch: TokenBatch, name: str) -> NDArray[np.int64] | None:
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
        raise ValueError(
            f"{name} has shape {other.ids.shape[1:] if other.single else other.ids.shape}, "
            f"input_ids has {batch.ids.shape[1:] if batch.single else batch.ids.shape}"
        )
    return other.ids


def model_device(model: Any, device: Any = None) -> torch.device:
    """The device inputs go to: ``device`` if given, else the model's."""
    import torch

    if device is not None:
        return torch.device(device)
    found = getattr(model, "device", None)
    if found is not None:
        return torch.device(found)
    return next(model.parameters()).device


def run_model(
    model: Any, ids: NDArray[np.int64], mask: NDArray[np.bool_] | None, device: Any
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Run a Hugging Face causal LM once, returning all hidden states and the logits.

    With padding, the attention mask is passed and (where the model takes them) position
    ids count only real tokens, so left- and right-padded sequences see the positions they
    would see alone.

    Args:
        model: A causal LM returning ``hidden_states`` and ``logits``.
        ids: ``(b, T)`` token ids.
        mask: ``(b, T)`` padding mask or ``None``.
        device: Where the inputs go.

    Returns:
        ``(hidden_states, logits)``: ``L + 1`` tensors ``(b, T, d)`` and ``(b, T, V)``.
    """
    import torch

    # No KV cache: nothing is generated, and it would only hold memory.
    kwargs: dict[str, Any] = {"output_hidden_states": True, "use_cache": False}
    input_ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if mask is not None:
        mask_t = torch.as_tensor(mask, dtype=torch.long, device=device)
        kwargs["attention_mask"] = mask_t
        if "position_ids" in inspect.signature(model.forward).parameters:
            kwargs["position_ids"] = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        outputs = model(input_ids, **kwargs)
    hidden_states = outputs.hidden_states
    if hidden_states is None:
        raise ValueError("the model returned no hidden_states; is it a causal LM?")
    return tuple(hidden_states), outputs.logits


def check_lens_matches(lens: Any, n_hidden_states: int) -> int:
    """Number of lens layers ``L``; the model must return ``L + 1`` hidden states."""
    n_layers = n_hidden_states - 1
    try:
        lens_layers = len(lens)
    except TypeError:
        return n_layers
    if lens_layers != n_layers:
        raise ValueError(
            f"the lens has {lens_layers} layers but the model returned {n_hidden_states} "
            f"hidden states (expected {lens_layers + 1})"
        )
    return n_layers


def input_vocab_mask(
    ids: NDArray[np.int64], mask: NDArray[np.bool_] | None, vocab_size: int
) -> NDArray[np.bool_]:
    """``(b, V)``: True for every vocabulary id occurring among a sequence's real tokens."""
    out = np.zeros((ids.shape[0], vocab_size), dtype=bool)
    for row in range(ids.shape[0]):
        seen = ids[row] if mask is None else ids[row][mask[row]]
        seen = seen[(seen >= 0) & (seen < vocab_size)]
        out[row, seen] = True
    return out
