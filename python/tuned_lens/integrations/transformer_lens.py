"""TransformerLens: 4's ``TransformerBridge`` (and its ``ActivationCache``); 3's ``HookedTransformer``.

A ``TransformerBridge`` wraps a Hugging Face model. Its lenses read out through the bridge's own
final norm (``bridge.ln_final``), unembedding (``W_U``, ``b_U``) and output-logits transform
(``bridge.adapter.apply_output_logits_transform``: Gemma-2 soft-capping, Cohere/Granite
scaling), and the hidden states are the bridge's ``blocks.{i}.hook_in``; so a bridge booted
with raw weights gives the same lens logits as the Hugging Face model it wraps. A bridge whose
weights were processed (``enable_compatibility_mode()``, ``process_weights()``) computes
different hidden states and unembedding weights: :func:`warn_if_processed` says so.

``HookedTransformer`` (TransformerLens 3) is resolved by
:mod:`tuned_lens.architectures` itself; nothing here imports ``transformer_lens``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from tuned_lens.architecture_registry import ResolvedArchitecture
from tuned_lens.errors import InvalidInputError

__all__ = [
    "BridgeLogitTransform",
    "cached_residual",
    "is_bridge",
    "model_name_or_path",
    "processing_reasons",
    "resolve_bridge",
    "run_bridge",
    "warn_if_processed",
]

#: Residual components of a cache and the bridge's canonical hook of the same tensor.
_CANONICAL = {"resid_pre": "hook_in", "resid_post": "hook_out"}
_LEGACY = {canonical: legacy for legacy, canonical in _CANONICAL.items()}


def is_bridge(model: Any) -> bool:
    """Whether ``model`` is a TransformerLens 4 ``TransformerBridge`` (by class name)."""
    return any(cls.__name__ == "TransformerBridge" for cls in type(model).__mro__)


def processing_reasons(bridge: Any) -> list[str]:
    """Why the bridge's numbers differ from the raw Hugging Face model's (empty: they do not)."""
    reasons = []
    if getattr(bridge, "compatibility_mode", False):
        reasons.append("compatibility mode is on (enable_compatibility_mode())")
    if getattr(bridge, "_weights_processed", False):
        reasons.append(
            "its weights were processed (fold_ln / center_writing_weights / center_unembed / "
            "fold_value_biases)"
        )
    return reasons


def warn_if_processed(bridge: Any, stacklevel: int = 3) -> None:
    """Warn, naming the reason, when the bridge does not compute the raw model's numbers."""
    reasons = processing_reasons(bridge)
    if reasons:
        warnings.warn(
            "the TransformerBridge's numbers differ from the raw Hugging Face model's: "
            + "; ".join(reasons)
            + ". Lens logits follow the bridge (its folded final norm and processed "
            "unembedding, its processed residual stream), so a tuned lens trained on the raw "
            "model is applied to other hidden states; boot the bridge without "
            "enable_compatibility_mode() (or with no_processing=True) for the raw numbers",
            UserWarning,
            stacklevel=stacklevel,
        )


class BridgeLogitTransform(nn.Module):
    """The bridge's own post-unembedding step (``adapter.apply_output_logits_transform``).

    The adapter is shared, not copied, by :func:`copy.deepcopy`: it holds the model's
    configuration, which the lens must follow.
    """

    def __init__(self, adapter: Any) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return self.adapter.apply_output_logits_transform(logits)

    def __deepcopy__(self, memo: dict[int, Any]) -> BridgeLogitTransform:
        return BridgeLogitTransform(self.adapter)


def resolve_bridge(bridge: Any) -> ResolvedArchitecture:
    """The bridge's blocks, final norm, unembedding (``W_U``/``b_U``) and logit transform."""
    warn_if_processed(bridge, stacklevel=5)
    cfg = bridge.cfg
    weight = bridge.W_U.detach()
    unembedding = nn.Linear(weight.shape[0], weight.shape[1], bias=True)
    with torch.no_grad():
        unembedding.weight = nn.Parameter(weight.T.clone(), requires_grad=False)
        bias = getattr(bridge, "b_U", None)
        bias = torch.zeros(weight.shape[1], dtype=weight.dtype) if bias is None else bias
        unembedding.bias = nn.Parameter(bias.detach().clone().to(weight), requires_grad=False)
    adapter = getattr(bridge, "adapter", None)
    transforms: list[nn.Module] = []
    if adapter is not None and hasattr(adapter, "apply_output_logits_transform"):
        transforms.append(BridgeLogitTransform(adapter))
    elif (getattr(cfg, "output_logits_soft_cap", None) or 0) > 0:
        from tuned_lens.architecture_registry import LogitSoftcap

        transforms.append(LogitSoftcap(cfg.output_logits_soft_cap))
    return ResolvedArchitecture(
        final_norm=bridge.ln_final,
        layers=bridge.blocks,
        layers_path="blocks",
        unembedding=unembedding,
        pre_unembed=None,
        logit_transforms=transforms,
        source="transformer_bridge",
    )


def model_name_or_path(bridge: Any) -> str | None:
    """The Hugging Face id of the wrapped model (``cfg.model_name`` when it has none)."""
    config = getattr(getattr(bridge, "original_model", None), "config", None)
    name = getattr(config, "name_or_path", None) or getattr(bridge.cfg, "model_name", None)
    return str(name) if name else None


def run_bridge(
    bridge: Any, ids: Any, mask: Any, device: torch.device | str
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Run the bridge once: ``(hidden_states, logits)`` as :func:`tuned_lens.decoding.run_model`.

    ``hidden_states[i]`` is ``blocks.{i}.hook_in`` for ``i < L`` and the last is
    ``blocks.{L-1}.hook_out``; only those hooks are cached.
    """
    warn_if_processed(bridge, stacklevel=6)
    n_layers = len(bridge.blocks)
    names = [f"blocks.{i}.hook_in" for i in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_out"]
    wanted = set(names)
    kwargs: dict[str, Any] = {}
    input_ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if mask is not None:
        mask_t = torch.as_tensor(mask, dtype=torch.long, device=device)
        kwargs["attention_mask"] = mask_t
        kwargs["position_ids"] = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(
            input_ids, names_filter=lambda name: name in wanted, **kwargs
        )
    return tuple(cache[name] for name in names), logits


def cached_residual(cache: Mapping[Any, torch.Tensor], component: str, layer: int) -> torch.Tensor:
    """``cache[component, layer]`` for any TransformerLens cache or plain mapping.

    ``component`` is a TransformerLens name (``"resid_pre"``, ``"attn_out"``, ...) or a
    bridge hook (``"hook_in"``/``"hook_out"``, also written ``"in"``/``"out"``); the
    canonical ``blocks.{i}.hook_in`` / ``hook_out`` and the legacy ``hook_resid_pre`` /
    ``hook_resid_post`` names stand for each other, so a cache that holds only one of them
    (``names_filter``) serves both.
    """
    short = component.removeprefix("hook_")
    names = [f"blocks.{layer}.hook_{short}"]
    if short in _CANONICAL:
        names.append(f"blocks.{layer}.{_CANONICAL[short]}")
    elif f"hook_{short}" in _LEGACY:
        names.append(f"blocks.{layer}.hook_{_LEGACY[f'hook_{short}']}")
    keys = getattr(cache, "keys", None)
    present = set(keys()) if callable(keys) else set()
    for name in names:
        if name in present:
            return cache[name]
    try:
        return cache[component, layer]
    except (KeyError, TypeError, ValueError, AssertionError) as err:
        raise InvalidInputError(
            f"the cache holds none of {names} (nor ({component!r}, {layer}))", option="cache"
        ) from err
