"""The lens losses of training: mixed precision for the lens forward, and each layer's loss
against the model (KL(model ‖ lens) or next-token cross-entropy), back-propagated one layer at
a time so only one layer's vocabulary-sized activations are alive."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from tuned_lens.errors import InvalidInputError

__all__ = ["autocast_for", "layer_losses", "model_dtype"]


def autocast_for(
    device: torch.device, model_dtype: torch.dtype
) -> contextlib.AbstractContextManager:
    """Mixed precision for the lens forward where it helps; master weights stay float32."""
    if device.type == "cuda":
        dtype = (
            model_dtype
            if model_dtype in (torch.float16, torch.bfloat16)
            else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        )
        return torch.autocast("cuda", dtype=dtype)
    if model_dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device.type, dtype=model_dtype)
    return contextlib.nullcontext()


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
) -> Iterator[torch.Tensor]:
    """Yield each layer's loss (already back-propagated with weight ``scale``), detached.

    Args:
        model_logits: the model's final logits, ``(B, T, V)``.
        input_ids: ``(B, T)`` token ids (CE labels).
        lens_logits_fn: ``layer -> (B, T, V)`` lens logits with autograd.
        num_layers: layers to run.
        loss: ``"KL"`` or ``"CE"``.
        token_shift: compare lens position ``t`` with target position ``t + token_shift``.
        scale: multiplies each loss before ``backward`` (1 / micro-batches per step).
    """
    seq_len = model_logits.shape[1]
    if token_shift >= seq_len:
        raise InvalidInputError(
            f"token_shift {token_shift} must be smaller than the chunk length {seq_len}",
            option="token_shift",
        )
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
