"""The architecture registry: where each known model family keeps the parts a lens needs.

:class:`ArchitectureSpec` names the parts by dotted attribute paths; the registry maps a model
class name or a ``config.model_type`` to its spec, and holds every supported family from the
start. The logit post-processing modules (soft-capping, scaling) and their builders live here
too. :mod:`tuned_lens.architectures` resolves a model against this registry (and by
introspection) and re-exports everything below.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tuned_lens.errors import InvalidInputError

__all__ = [
    "ArchitectureSpec",
    "LogitScale",
    "LogitSoftcap",
    "LogitTransformBuilder",
    "ResolvedArchitecture",
    "inverse_scale_from_config",
    "register_architecture",
    "registered_architectures",
    "scale_from_config",
    "softcap_from_config",
    "unregister_architecture",
]


class LogitSoftcap(nn.Module):
    """``cap * tanh(logits / cap)``, the final-logit soft-capping of Gemma-2/3."""

    def __init__(self, cap: float):
        super().__init__()
        if not (cap > 0 and math.isfinite(cap)):
            raise InvalidInputError(f"soft-cap must be a positive finite number, got {cap!r}")
        self.cap = float(cap)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.tanh(logits / self.cap) * self.cap

    def extra_repr(self) -> str:
        return f"cap={self.cap}"


class LogitScale(nn.Module):
    """``logits * factor`` (Cohere's ``logit_scale``; Granite's ``1 / logits_scaling``)."""

    def __init__(self, factor: float):
        super().__init__()
        if not math.isfinite(factor) or factor == 0:
            raise InvalidInputError(f"logit scale must be finite and non-zero, got {factor!r}")
        self.factor = float(factor)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


# Builders of logit post-processing modules from a model's config. Each returns None when the
# config does not ask for the step (e.g. a Gemma-3 config without soft-capping).
LogitTransformBuilder = Callable[[Any], "nn.Module | None"]


def softcap_from_config(attr: str = "final_logit_softcapping") -> LogitTransformBuilder:
    """Soft-cap the logits by ``config.<attr>`` when it is set."""

    def build(config: Any) -> nn.Module | None:
        cap = getattr(config, attr, None)
        return LogitSoftcap(cap) if cap else None

    return build


def scale_from_config(attr: str = "logit_scale") -> LogitTransformBuilder:
    """Multiply the logits by ``config.<attr>`` when it is set and not 1."""

    def build(config: Any) -> nn.Module | None:
        factor = getattr(config, attr, None)
        return LogitScale(factor) if factor not in (None, 1, 1.0) else None

    return build


def inverse_scale_from_config(attr: str = "logits_scaling") -> LogitTransformBuilder:
    """Divide the logits by ``config.<attr>`` when it is set and not 1."""

    def build(config: Any) -> nn.Module | None:
        divisor = getattr(config, attr, None)
        if divisor in (None, 1, 1.0):
            return None
        if divisor == 0:
            raise InvalidInputError(f"config.{attr} is 0; cannot divide logits by it")
        return LogitScale(1.0 / divisor)

    return build


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where a model family keeps the parts a lens needs.

    Attributes:
        final_norm: Dotted path (relative to the base model) of the final norm, or ``None`` if the
            family has none (then the identity is used). A path that exists but holds ``None``
            (OPT-350m's ``decoder.final_layer_norm``) also means "no final norm".
        layers: Dotted path (relative to the base model) of the ``nn.ModuleList`` of blocks.
        unembedding: Dotted path (relative to the *top-level* model) of the output projection,
            or ``None`` to use ``model.get_output_embeddings()``.
        pre_unembed: Optional dotted path (relative to the base model) of a module applied after
            the final norm and before the output projection (OPT-350m's ``decoder.project_out``).
            A path that holds ``None`` is skipped.
        logit_transforms: Builders ``config -> nn.Module | None`` for what the model applies to
            the output of the projection, in order (soft-capping, scaling).
    """

    final_norm: str | None
    layers: str
    unembedding: str | None = None
    pre_unembed: str | None = None
    logit_transforms: tuple[LogitTransformBuilder, ...] = field(default_factory=tuple)


@dataclass
class ResolvedArchitecture:
    """The concrete modules of one model, found through an :class:`ArchitectureSpec`.

    Attributes:
        final_norm: The final norm module, or ``None`` if the model has none.
        layers: The block list.
        layers_path: Dotted path of ``layers`` relative to the model that was resolved.
        unembedding: The output projection, an ``nn.Linear`` mapping to vocabulary logits.
        pre_unembed: Module between final norm and projection, or ``None``.
        logit_transforms: Modules applied to the projected logits, in order.
        source: How the spec was found (``"registry:<key>"``, ``"introspection"``, ...).
    """

    final_norm: nn.Module | None
    layers: nn.ModuleList
    layers_path: str
    unembedding: nn.Linear
    pre_unembed: nn.Module | None
    logit_transforms: list[nn.Module]
    source: str


_REGISTRY_LOCK = threading.Lock()
_REGISTRY: dict[str, ArchitectureSpec] = {}


def register_architecture(
    key: str | type, spec: ArchitectureSpec, *, overwrite: bool = True
) -> None:
    """Teach the lens machinery where a model family keeps its parts.

    Args:
        key: A model class (or its name, e.g. ``"LlamaForCausalLM"`` or ``"LlamaModel"``), or a
            ``config.model_type`` string (e.g. ``"llama"``). Class names take precedence over
            model types, so a registration for one class can override a family default.
        spec: Where the parts live (see :class:`ArchitectureSpec`).
        overwrite: If ``False``, refuse to replace an existing registration.

    Raises:
        TypeError: If ``spec`` is not an :class:`ArchitectureSpec`.
        KeyError: If ``overwrite`` is ``False`` and ``key`` is already registered.
    """
    if not isinstance(spec, ArchitectureSpec):
        raise TypeError(f"spec must be an ArchitectureSpec, got {type(spec).__name__}")
    name = key.__name__ if isinstance(key, type) else str(key)
    if not name:
        raise InvalidInputError("key must be a non-empty model class name or model_type")
    with _REGISTRY_LOCK:
        if not overwrite and name in _REGISTRY:
            raise KeyError(f"architecture {name!r} is already registered")
        _REGISTRY[name] = spec


def unregister_architecture(key: str | type) -> ArchitectureSpec | None:
    """Remove a registration; returns the removed spec (``None`` if there was none)."""
    name = key.__name__ if isinstance(key, type) else str(key)
    with _REGISTRY_LOCK:
        return _REGISTRY.pop(name, None)


def registered_architectures() -> dict[str, ArchitectureSpec]:
    """A snapshot of the registry: key (model_type or class name) -> spec."""
    with _REGISTRY_LOCK:
        return dict(_REGISTRY)


def _builtin_specs() -> dict[str, ArchitectureSpec]:
    rms_decoder = ArchitectureSpec(final_norm="norm", layers="layers")
    softcapped = ArchitectureSpec(
        final_norm="norm", layers="layers", logit_transforms=(softcap_from_config(),)
    )
    gpt_style = ArchitectureSpec(final_norm="ln_f", layers="h")
    table = {
        # model_type: spec
        "gpt2": gpt_style,
        "gpt_neo": gpt_style,
        "gptj": gpt_style,
        "bloom": gpt_style,
        "falcon": gpt_style,
        "codegen": gpt_style,
        "gpt_bigcode": gpt_style,
        "gpt_neox": ArchitectureSpec(final_norm="final_layer_norm", layers="layers"),
        "gpt_neox_japanese": ArchitectureSpec(final_norm="final_layer_norm", layers="layers"),
        "opt": ArchitectureSpec(
            final_norm="decoder.final_layer_norm",
            layers="decoder.layers",
            pre_unembed="decoder.project_out",
        ),
        "phi": ArchitectureSpec(final_norm="final_layernorm", layers="layers"),
        "gemma2": softcapped,
        "gemma3_text": softcapped,
        # Gemma3ForConditionalGeneration: unlike Gemma3ForCausalLM it does not soft-cap its
        # logits (transformers 5.24), so neither do we.
        "gemma3": ArchitectureSpec(
            final_norm="language_model.norm", layers="language_model.layers"
        ),
        "cohere": ArchitectureSpec(
            final_norm="norm", layers="layers", logit_transforms=(scale_from_config("logit_scale"),)
        ),
        "cohere2": ArchitectureSpec(
            final_norm="norm", layers="layers", logit_transforms=(scale_from_config("logit_scale"),)
        ),
        "granite": ArchitectureSpec(
            final_norm="norm",
            layers="layers",
            logit_transforms=(inverse_scale_from_config("logits_scaling"),),
        ),
        "granitemoe": ArchitectureSpec(
            final_norm="norm",
            layers="layers",
            logit_transforms=(inverse_scale_from_config("logits_scaling"),),
        ),
    }
    for model_type in (
        "llama",
        "mistral",
        "mixtral",
        "gemma",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "qwen3_moe",
        "phi3",
        "olmo",
        "olmo2",
        "stablelm",
        "starcoder2",
        "smollm3",
    ):
        table[model_type] = rms_decoder
    return table


for _key, _spec in _builtin_specs().items():
    register_architecture(_key, _spec)
