"""Where the pieces a lens needs live inside each model architecture.

A lens needs four things from a causal language model: the list of transformer blocks, the final
norm, the output projection (``lm_head``) and whatever the model does to the logits after that
projection (Gemma-2's soft-capping, Cohere's and Granite's scaling). OPT-350m also projects the
residual stream down before ``lm_head`` (``project_out``).

Resolution order for a model:

1. the registry, by the model's class name, then its base model's class name, then any class
   name in their MROs, then ``config.model_type`` (see :func:`register_architecture`);
2. introspection: a unique ``nn.ModuleList`` of length ``num_hidden_layers`` and a final norm
   under one of the usual attribute names. Introspected models log a warning once, since a
   missed logit post-processing step cannot be detected this way.

If neither works, :class:`UnsupportedArchitectureError` explains how to register the model.

Example:
    >>> from tuned_lens.architectures import ArchitectureSpec, register_architecture
    >>> register_architecture(
    ...     "my_model",  # config.model_type or a model class name
    ...     ArchitectureSpec(final_norm="norm", layers="layers"),
    ... )

Paths in an :class:`ArchitectureSpec` are dotted attribute paths relative to the *base model*
(``model.base_model``, e.g. ``LlamaModel`` inside ``LlamaForCausalLM``); digits index into
module lists.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from tuned_lens.architecture_registry import (
    ArchitectureSpec,
    LogitScale,
    LogitSoftcap,
    LogitTransformBuilder,
    ResolvedArchitecture,
    inverse_scale_from_config,
    register_architecture,
    registered_architectures,
    scale_from_config,
    softcap_from_config,
    unregister_architecture,
)
from tuned_lens.errors import InvalidInputError, UnsupportedArchitectureError

__all__ = [
    "ArchitectureSpec",
    "LogitSoftcap",
    "LogitScale",
    "ResolvedArchitecture",
    "UnsupportedArchitectureError",
    "register_architecture",
    "unregister_architecture",
    "registered_architectures",
    "resolve_architecture",
    "softcap_from_config",
    "scale_from_config",
    "inverse_scale_from_config",
    "is_transformer_lens_model",
    "LogitTransformBuilder",
]

logger = logging.getLogger(__name__)


# Attribute names tried by introspection for models the registry does not know.
_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm", "norm_f")
_LAYER_NAMES = ("layers", "h", "blocks", "decoder.layers", "transformer.h", "block")

_warned_introspection: set[str] = set()


def is_transformer_lens_model(model: Any) -> bool:
    """Whether ``model`` looks like a TransformerLens ``HookedTransformer`` (duck-typed)."""
    return type(model).__name__ == "HookedTransformer" or (
        hasattr(model, "W_U") and hasattr(model, "ln_final") and hasattr(model, "blocks")
    )


def get_key_path(obj: Any, path: str) -> Any:
    """Follow a dotted path of attributes (digits index into sequences); ``""`` is ``obj``."""
    for key in path.split(".") if path else ():
        obj = obj[int(key)] if key.isdigit() else getattr(obj, key)
    return obj


def _has_path(obj: Any, path: str) -> bool:
    try:
        get_key_path(obj, path)
    except (AttributeError, IndexError, KeyError, TypeError):
        return False
    return True


def _base_model(model: nn.Module) -> tuple[nn.Module, str]:
    """The base model inside ``model`` and its dotted path ("" if ``model`` is the base)."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    base = getattr(model, "base_model", model)
    if base is model or not prefix or not _has_path(model, prefix):
        return base, ""
    return base, prefix


def _config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    if config is None:
        return None
    get_text = getattr(config, "get_text_config", None)
    return get_text() if callable(get_text) else config


def _registry_lookup(model: nn.Module) -> tuple[str, ArchitectureSpec] | None:
    registry = registered_architectures()
    base = getattr(model, "base_model", model)
    candidates: list[str] = [type(model).__name__, type(base).__name__]
    for cls in (*type(model).__mro__[1:], *type(base).__mro__[1:]):
        candidates.append(cls.__name__)
    config = getattr(model, "config", None)
    for cfg in (config, _config(model)):
        model_type = getattr(cfg, "model_type", None)
        if model_type:
            candidates.append(model_type)
    for name in candidates:
        if name in registry and name not in ("Module", "PreTrainedModel", "object"):
            return name, registry[name]
    return None


def _num_layers_from_config(model: nn.Module) -> int | None:
    config = _config(model)
    for attr in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return None


def _introspect(model: nn.Module) -> ArchitectureSpec | None:
    base, _ = _base_model(model)
    n_layers = _num_layers_from_config(model)
    layer_paths = [
        p
        for p in _LAYER_NAMES
        if _has_path(base, p)
        and isinstance(get_key_path(base, p), nn.ModuleList)
        and (n_layers is None or len(get_key_path(base, p)) == n_layers)
    ]
    norm_paths = [
        p
        for p in _NORM_NAMES
        if _has_path(base, p) and isinstance(get_key_path(base, p), nn.Module)
    ]
    if len(layer_paths) != 1 or len(norm_paths) != 1:
        return None
    config = _config(model)
    transforms: list[LogitTransformBuilder] = []
    if getattr(config, "final_logit_softcapping", None):
        transforms.append(softcap_from_config())
    if getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        transforms.append(scale_from_config())
    if getattr(config, "logits_scaling", None) not in (None, 1, 1.0):
        transforms.append(inverse_scale_from_config())
    return ArchitectureSpec(
        final_norm=norm_paths[0], layers=layer_paths[0], logit_transforms=tuple(transforms)
    )


def _unsupported_message(model: nn.Module, reason: str) -> str:
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    key = model_type or type(model).__name__
    return (
        f"{reason} for {type(model).__name__} (model_type={model_type!r}). Tell tuned_lens where "
        "its parts live, with paths relative to model.base_model, e.g.\n"
        "    from tuned_lens.architectures import ArchitectureSpec, register_architecture\n"
        f"    register_architecture({key!r}, ArchitectureSpec(final_norm='norm', layers='layers'))\n"
        "Add pre_unembed='...' for a projection between the final norm and lm_head, and "
        "logit_transforms=(softcap_from_config(), ...) if the model post-processes its logits."
    )


def _resolve_optional(base: nn.Module, path: str | None) -> nn.Module | None:
    if path is None or not _has_path(base, path):
        return None
    return get_key_path(base, path)


def _resolve_transformer_lens(model: Any) -> ResolvedArchitecture:
    cfg = model.cfg
    unembedding = nn.Linear(cfg.d_model, cfg.d_vocab_out, bias=True)
    with torch.no_grad():
        unembedding.weight = nn.Parameter(model.W_U.detach().T.clone(), requires_grad=False)
        unembedding.bias = nn.Parameter(model.b_U.detach().clone(), requires_grad=False)
    transforms: list[nn.Module] = []
    softcap = getattr(cfg, "output_logits_soft_cap", None)
    if softcap and softcap > 0:
        transforms.append(LogitSoftcap(softcap))
    return ResolvedArchitecture(
        final_norm=getattr(model, "ln_final", None),
        layers=model.blocks,
        layers_path="blocks",
        unembedding=unembedding,
        pre_unembed=None,
        logit_transforms=transforms,
        source="transformer_lens",
    )


def resolve_architecture(model: nn.Module) -> ResolvedArchitecture:
    """Find the final norm, blocks, output projection and logit post-processing of ``model``.

    Args:
        model: A Hugging Face ``PreTrainedModel`` (a ``*ForCausalLM`` or its base model), a
            TransformerLens ``HookedTransformer`` or ``TransformerBridge``, or an nnsight model
            (see :mod:`tuned_lens.integrations`).

    Returns:
        The resolved modules (the live modules of ``model``, not copies).

    Raises:
        UnsupportedArchitectureError: If the model is neither registered nor introspectable;
            the message shows the ``register_architecture`` call to make.
        ValueError: If the spec's paths do not lead to a block list or a linear output layer.
    """
    from tuned_lens.integrations import unwrap_model
    from tuned_lens.integrations.transformer_lens import is_bridge, resolve_bridge

    model = unwrap_model(model)  # an nnsight model: the Hugging Face model inside it
    if is_bridge(model):  # before the HookedTransformer test, which a bridge also passes
        return resolve_bridge(model)
    if is_transformer_lens_model(model):
        return _resolve_transformer_lens(model)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")

    found = _registry_lookup(model)
    spec: ArchitectureSpec | None
    if found is not None:
        key, spec = found
        source = f"registry:{key}"
    else:
        spec = _introspect(model)
        if spec is None:
            raise UnsupportedArchitectureError(
                _unsupported_message(model, "could not locate the final norm and block list")
            )
        source = "introspection"
        name = type(model).__name__
        if name not in _warned_introspection:
            _warned_introspection.add(name)
            logger.warning(
                "%s is not in the tuned_lens architecture registry; using final norm %r and "
                "blocks %r found by introspection. Register it to silence this warning.",
                name,
                spec.final_norm,
                spec.layers,
            )

    base, prefix = _base_model(model)
    if not _has_path(base, spec.layers):
        raise UnsupportedArchitectureError(
            _unsupported_message(model, f"no block list at {spec.layers!r} ({source})")
        )
    layers = get_key_path(base, spec.layers)
    if not isinstance(layers, nn.ModuleList):
        raise InvalidInputError(
            f"{type(model).__name__}: {spec.layers!r} is a {type(layers).__name__}, "
            "not an nn.ModuleList of blocks"
        )
    if spec.final_norm is not None and not _has_path(base, spec.final_norm):
        raise UnsupportedArchitectureError(
            _unsupported_message(model, f"no final norm at {spec.final_norm!r} ({source})")
        )
    final_norm = _resolve_optional(base, spec.final_norm)

    if spec.unembedding is not None:
        unembedding = get_key_path(model, spec.unembedding)
    else:
        get_output = getattr(model, "get_output_embeddings", None)
        unembedding = get_output() if callable(get_output) else None
    if not isinstance(unembedding, nn.Linear):
        raise InvalidInputError(
            f"{type(model).__name__} has no linear output projection "
            f"(found {type(unembedding).__name__}); load it with a language-modelling head, "
            "e.g. AutoModelForCausalLM, or set ArchitectureSpec.unembedding"
        )
    config = _config(model)
    transforms = [m for m in (build(config) for build in spec.logit_transforms) if m is not None]
    layers_path = f"{prefix}.{spec.layers}" if prefix else spec.layers
    return ResolvedArchitecture(
        final_norm=final_norm,
        layers=layers,
        layers_path=layers_path,
        unembedding=unembedding,
        pre_unembed=_resolve_optional(base, spec.pre_unembed),
        logit_transforms=transforms,
        source=source,
    )
