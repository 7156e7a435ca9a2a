"""Context managers that ablate a transformer block's output with a forward hook."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from tuned_lens.causal.subspaces import AblationMode, derange, remove_subspace

__all__ = ["ablate_layer", "ablate_subspace"]

LayerAblationMethod = Literal["resample", "mean", "zero"]
_METHODS = ("resample", "mean", "zero")
_MODES = ("batch", "token")


def _block(model: nn.Module, layer_index: int) -> nn.Module:
    from tuned_lens.model_surgery import get_transformer_layers

    _, layers = get_transformer_layers(model)
    count = len(layers)
    if isinstance(layer_index, bool) or not isinstance(layer_index, int):
        raise TypeError(f"layer_index must be an int, got {type(layer_index).__name__}")
    if not -count <= layer_index < count:
        raise IndexError(f"layer_index {layer_index} is out of range for {count} blocks")
    return layers[layer_index]


def _block_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Tensor:
    if args and isinstance(args[0], Tensor):
        return args[0]
    hidden = kwargs.get("hidden_states")
    if not isinstance(hidden, Tensor):
        raise RuntimeError("could not find the block's input hidden states in its arguments")
    return hidden


def _replace_hidden(output: Any, new_hidden: Tensor) -> Any:
    """Put ``new_hidden`` where the block returned its hidden states (a tensor or a tuple's head)."""
    if isinstance(output, Tensor):
        return new_hidden
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return (new_hidden, *output[1:])
    raise RuntimeError(f"unsupported block output type {type(output).__name__}")


def _output_hidden(output: Any) -> Tensor:
    if isinstance(output, Tensor):
        return output
    if isinstance(output, tuple) and output and isinstance(output[0], Tensor):
        return output[0]
    raise RuntimeError(f"unsupported block output type {type(output).__name__}")


@contextmanager
def _hook_block_output(
    model: nn.Module, layer_index: int, edit: Callable[[Tensor, Tensor], Tensor]
) -> Iterator[None]:
    """Run ``edit(block_input, block_output) -> new_output`` on every call of one block."""
    block = _block(model, layer_index)

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        hidden_in = _block_input(args, kwargs)
        hidden_out = _output_hidden(output)
        return _replace_hidden(output, edit(hidden_in, hidden_out))

    handle = block.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def ablate_layer(
    model: nn.Module,
    layer_index: int,
    method: LayerAblationMethod = "resample",
    *,
    mode: Literal["batch", "token"] = "batch",
    generator: torch.Generator | None = None,
) -> Iterator[None]:
    """Ablate the residual contribution of one transformer block while the context is active.

    With block input x and output y, the contribution is r = y − x, and the block returns
    x + r' instead, where r' is:

    * ``"zero"``: 0 (the block is skipped; the residual stream itself is kept);
    * ``"mean"``: the mean of r over the samples;
    * ``"resample"``: r of another sample (a random derangement of the samples).

    With ``mode="batch"`` the samples are the sequences (axis 0) and each position keeps its
    own statistics; with ``mode="token"`` every (sequence, position) pair is a sample. Mean and
    resample ablation need at least two samples.

    Args:
        model: a Hugging Face causal LM whose block list ``model_surgery`` can find.
        layer_index: which block (negative indices count from the end).
        method: ``"resample"``, ``"mean"`` or ``"zero"``.
        mode: ``"batch"`` or ``"token"``.
        generator: random source for ``"resample"``.

    The hook is removed on exit, also when the body raises.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")

    def edit(x: Tensor, y: Tensor) -> Tensor:
        if method == "zero":
            return x.clone()
        residual = y - x
        samples = residual.reshape(-1, residual.shape[-1]) if mode == "token" else residual
        if samples.shape[0] < 2:
            raise ValueError(
                f"{method} ablation needs at least 2 samples along the {mode} axis, got "
                f"{samples.shape[0]} (block output shape {tuple(y.shape)})"
            )
        if method == "mean":
            replaced = samples.mean(dim=0, keepdim=True).expand_as(samples)
        else:
            replaced = derange(samples, generator=generator)
        return x + replaced.reshape(residual.shape)

    with _hook_block_output(model, layer_index, edit):
        yield


@contextmanager
def ablate_subspace(
    model: nn.Module,
    A: Tensor,
    layer_index: int,
    mode: AblationMode = "zero",
    orthonormal: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> Iterator[None]:
    """Ablate col(A) in the output of one transformer block while the context is active.

    The block output (B, T, d) is passed through :func:`remove_subspace` with every
    (sequence, position) pair as a sample, so ``"mean"`` uses the mean over all tokens of the
    batch and ``"resample"`` takes components from other tokens.

    Args:
        model: a Hugging Face causal LM whose block list ``model_surgery`` can find.
        A: (d, k) matrix whose columns span the subspace to ablate.
        layer_index: which block.
        mode: ``"zero"``, ``"mean"`` or ``"resample"``.
        orthonormal: the columns of ``A`` are orthonormal already.
        generator: random source for ``"resample"``.
    """

    def edit(x: Tensor, y: Tensor) -> Tensor:
        ablated = remove_subspace(y, A, mode, orthonormal, generator=generator)
        return ablated.to(y.dtype)

    with _hook_block_output(model, layer_index, edit):
        yield
