"""The lens losses of training: mixed precision for the lens forward, and each layer's loss
against the model (KL(model ‖ lens) or next-token cross-entropy), back-propagated one layer at
a time. Where the lens's output path can be fused exactly (:mod:`.fused_loss`), the loss walks
the vocabulary in chunks and no vocabulary-sized lens activation is ever materialised; otherwise
one layer's ``(B, T, V)`` logits, log-softmax and gradient are alive at a time."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tuned_lens.errors import InvalidInputError
from tuned_lens.training.fused_loss import (
    FusedHead,
    ce_target,
    fused_lens_loss,
    kl_target,
)

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.nn.lenses import Lens

__all__ = ["GROUP_ROWS", "autocast_for", "fused_head_for", "layer_losses", "model_dtype"]

GROUP_ROWS = 4096
"""The fused loss decodes consecutive layers together, up to this many rows in one pass (at
least one layer): the unembedding is read once per group instead of once per layer, and the
chunk matmuls get enough rows to run at the machine's matmul rate (a 128-row micro-batch runs
torch's sgemm at ~70% of what 3,840 rows reach on the CPU)."""


def _autocast_dtype(device: torch.device, model_dtype: torch.dtype) -> torch.dtype | None:
    """The dtype :func:`autocast_for` runs the lens in (``None``: no autocast)."""
    if device.type == "cuda":
        if model_dtype in (torch.float16, torch.bfloat16):
            return model_dtype
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if model_dtype in (torch.float16, torch.bfloat16):
        return model_dtype
    return None


def autocast_for(
    device: torch.device, model_dtype: torch.dtype
) -> contextlib.AbstractContextManager:
    """Mixed precision for the lens forward where it helps; master weights stay float32."""
    dtype = _autocast_dtype(device, model_dtype)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def fused_head_for(lens: Lens, device: torch.device, model_dtype: torch.dtype) -> FusedHead | None:
    """The fused head of ``lens`` for training on ``device``, or ``None`` where not exact.

    Exact where the lens decodes as ``unembed(transform_hidden(h))`` (the tuned and the logit
    lens, not a subclass with its own ``forward``) and :meth:`FusedHead.from_unembed` accepts
    its unembedding. The chunk matmuls run in the dtype :func:`autocast_for` gives the lens.
    """
    from tuned_lens.nn.lenses import LogitLens, TunedLens

    if type(lens).forward not in (TunedLens.forward, LogitLens.forward):
        return None
    return FusedHead.from_unembed(lens.unembed, _autocast_dtype(device, model_dtype))


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 if none)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def layer_losses(
    model_logits: torch.Tensor,
    input_ids: torch.Tensor,
    lens_logits_fn: Callable[[int], torch.Tensor],
    num_layers: int,
    *,
    loss: str,
    token_shift: int,
    scale: float,
    head: FusedHead | None = None,
    lens_state_fn: Callable[[int], torch.Tensor] | None = None,
    fused: bool = True,
    chunk_size: int | None = None,
    group_rows: int = GROUP_ROWS,
) -> Iterator[torch.Tensor]:
    """Yield each layer's loss (already back-propagated with weight ``scale``), detached.

    With ``fused`` and both ``head`` and ``lens_state_fn`` given, each loss is computed by
    :func:`~tuned_lens.training.fused_loss.fused_lens_loss` from the lens state, ``C`` rows of
    the vocabulary at a time (``lens_logits_fn`` is not called); otherwise from the
    materialised lens logits. Both give the same values and gradients to float tolerance.

    Args:
        model_logits: the model's final logits, ``(B, T, V)``.
        input_ids: ``(B, T)`` token ids (CE labels).
        lens_logits_fn: ``layer -> (B, T, V)`` lens logits with autograd.
        num_layers: layers to run.
        loss: ``"KL"`` or ``"CE"``.
        token_shift: compare lens position ``t`` with target position ``t + token_shift``.
        scale: multiplies each loss before ``backward`` (1 / micro-batches per step).
        head: the lens's output path (:func:`fused_head_for`); ``None``: not fused.
        lens_state_fn: ``layer -> (B, T, d)`` lens states before the output projection
            (:func:`~tuned_lens.training.fused_loss.lens_state`), with autograd.
        fused: use the fused loss where ``head`` and ``lens_state_fn`` allow it.
        chunk_size: vocabulary rows per chunk of the fused loss (``None``: automatic,
            :func:`~tuned_lens.training.fused_loss.auto_chunk_size`).
        group_rows: the fused loss decodes as many consecutive layers together as fit in this
            many rows (:data:`GROUP_ROWS`); their losses are back-propagated together.
    """
    seq_len = model_logits.shape[1]
    if token_shift >= seq_len:
        raise InvalidInputError(
            f"token_shift {token_shift} must be smaller than the chunk length {seq_len}",
            option="token_shift",
        )
    if fused and head is not None and lens_state_fn is not None:
        yield from _fused_layer_losses(
            model_logits,
            input_ids,
            lens_state_fn,
            num_layers,
            head,
            loss=loss,
            token_shift=token_shift,
            scale=scale,
            chunk_size=chunk_size,
            group_rows=group_rows,
        )
        return
    keep = seq_len - token_shift
    if loss == "KL":
        target_lp = torch.log_softmax(model_logits[:, token_shift:].float(), dim=-1)
        target_p = target_lp.exp()
        neg_entropy = (target_p * target_lp).sum(-1)  # Σ p log p, (B, T')
    else:
        labels = input_ids[:, token_shift:]
    for layer in range(num_layers):
        logits = lens_logits_fn(layer)[:, :keep]
        lens_lp = torch.log_softmax(logits.float(), dim=-1)
        if loss == "KL":
            # KL(p ‖ q) = Σ p log p − Σ p log q, averaged over every position.
            value = (neg_entropy - (target_p * lens_lp).sum(-1)).mean()
        else:
            value = F.nll_loss(lens_lp.flatten(0, 1), labels.flatten())
        (value * scale).backward()
        yield value.detach()


def _fused_layer_losses(
    model_logits: torch.Tensor,
    input_ids: torch.Tensor,
    lens_state_fn: Callable[[int], torch.Tensor],
    num_layers: int,
    head: FusedHead,
    *,
    loss: str,
    token_shift: int,
    scale: float,
    chunk_size: int | None,
    group_rows: int,
) -> Iterator[torch.Tensor]:
    """:func:`layer_losses` through the fused, chunked loss (same arguments), several layers
    per pass: each group's states are stacked ``(layers · N, d)`` against the target repeated,
    and the sum of the group's losses is back-propagated once (the layers share no parameter,
    so each translator gets exactly its own layer's gradient)."""
    if group_rows < 1:
        raise InvalidInputError(f"group_rows must be >= 1, got {group_rows}", option="group_rows")
    keep = model_logits.shape[1] - token_shift
    if loss == "KL":
        target = kl_target(model_logits[:, token_shift:], head, chunk_size)
        count = None
    else:
        target = ce_target(input_ids[:, token_shift:], head, chunk_size)
        count = target.mass.sum()
    rows = target.mass.shape[0]
    per_group = max(1, group_rows // max(rows, 1))
    for first in range(0, num_layers, per_group):
        layers = range(first, min(first + per_group, num_layers))
        states = [lens_state_fn(layer)[:, :keep] for layer in layers]
        stacked = torch.cat([state.reshape(-1, state.shape[-1]) for state in states])
        group_target = target if len(layers) == 1 else target.repeated(len(layers))
        per_row = fused_lens_loss(stacked, head, group_target).view(len(layers), rows)
        # KL: mean over every position; CE: mean over the rows with a label (F.nll_loss).
        values = per_row.mean(-1) if count is None else per_row.sum(-1) / count
        (values.sum() * scale).backward()
        yield from values.detach().unbind()
