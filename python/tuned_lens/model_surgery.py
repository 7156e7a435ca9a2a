"""Find and temporarily rearrange the parts of a transformer.

The lookups (:func:`get_final_norm`, :func:`get_transformer_layers`,
:func:`get_unembedding_matrix`) go through :mod:`tuned_lens.architectures`, so registering an
architecture there makes every tool here work with it.

The context managers (:func:`delete_layers`, :func:`permute_layers`, :func:`replace_layers`,
:func:`assign_key_path`) restore the model exactly on exit, including on exceptions. While the
block list is rearranged, ``config.num_hidden_layers`` (and ``config.layer_types``, which some
families index by position) follow the new order, because ``transformers`` loops over
``layers[:num_hidden_layers]``. Run the rearranged model with ``use_cache=False``: each block
keeps its original ``layer_idx`` for the KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Union

from torch import nn

from .architectures import get_key_path as _get_key_path
from .architectures import is_transformer_lens_model, resolve_architecture
from .errors import InvalidInputError

__all__ = [
    "Model",
    "Norm",
    "get_value_for_key",
    "set_value_for_key_",
    "get_key_path",
    "set_key_path_",
    "assign_key_path",
    "get_final_norm",
    "get_unembedding_matrix",
    "get_transformer_layers",
    "delete_layers",
    "permute_layers",
    "permute_layers_",
    "replace_layers",
]

#: A Hugging Face ``PreTrainedModel`` or a TransformerLens ``HookedTransformer``.
Model = nn.Module
if TYPE_CHECKING:
    #: Any normalisation module (LayerNorm, RMSNorm, Gemma's RMSNorm, ...).
    Norm = nn.Module
else:

    def __getattr__(name: str) -> Any:
        """``Norm``: the original's ``typing.Union`` of norm classes, built on first use.

        ``Union[nn.LayerNorm, LlamaRMSNorm, GemmaRMSNorm, nn.Module]`` as in the original, so
        code reading ``Norm.__args__`` keeps working; it is built lazily because importing the
        two ``transformers`` modeling modules takes seconds.
        """
        if name != "Norm":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
        from transformers.models.llama.modeling_llama import LlamaRMSNorm

        norm = Union[nn.LayerNorm, LlamaRMSNorm, GemmaRMSNorm, nn.Module]  # noqa: UP007
        globals()["Norm"] = norm
        return norm


def get_value_for_key(obj: Any, key: str) -> Any:
    """``obj[int(key)]`` if ``key`` is all digits, else ``getattr(obj, key)``."""
    return obj[int(key)] if key.isdigit() else getattr(obj, key)


def set_value_for_key_(obj: Any, key: str, value: Any) -> None:
    """``obj[int(key)] = value`` if ``key`` is all digits, else ``setattr(obj, key, value)``."""
    if key.isdigit():
        obj[int(key)] = value
    else:
        setattr(obj, key, value)


def get_key_path(model: Any, key_path: str) -> Any:
    """Follow a dotted path such as ``"model.layers.0.mlp"`` (digits index into lists)."""
    return _get_key_path(model, key_path)


def set_key_path_(model: Any, key_path: str, value: Any) -> None:
    """Set the object at a dotted path, in place."""
    if not key_path:
        raise InvalidInputError("key_path must be non-empty", option="key_path")
    parent_path, _, last = key_path.rpartition(".")
    set_value_for_key_(get_key_path(model, parent_path), last, value)


@contextmanager
def assign_key_path(model: Any, key_path: str, value: Any) -> Iterator[None]:
    """Temporarily replace the object at ``key_path`` with ``value``; restore it on exit."""
    old = get_key_path(model, key_path)
    set_key_path_(model, key_path, value)
    try:
        yield
    finally:
        set_key_path_(model, key_path, old)


def get_final_norm(model: Model) -> Norm:
    """The model's final norm module (the live module, not a copy).

    Raises:
        ValueError: If the model has no final norm (e.g. OPT-350m, whose
            ``decoder.final_layer_norm`` is ``None``).
        tuned_lens.architectures.UnsupportedArchitectureError: For unknown architectures.
    """
    norm = resolve_architecture(model).final_norm
    if norm is None:
        raise InvalidInputError(f"{type(model).__name__} has no final norm (it is None)")
    return norm


def get_unembedding_matrix(model: Model) -> nn.Linear:
    """The output projection as an ``nn.Linear`` (weight ``(vocab, d)``).

    For TransformerLens models a new ``nn.Linear`` with weight ``W_U.T`` and bias ``b_U`` is
    built; for Hugging Face models it is the live ``lm_head``.

    Raises:
        ValueError: If the model's output embeddings are not an ``nn.Linear``.
    """
    return resolve_architecture(model).unembedding


def get_transformer_layers(model: Model) -> tuple[str, nn.ModuleList]:
    """The dotted path (relative to ``model``) and the ``nn.ModuleList`` of its blocks."""
    parts = resolve_architecture(model)
    return parts.layers_path, parts.layers


def _text_config(model: Model) -> Any:
    if is_transformer_lens_model(model):
        return getattr(model, "cfg", None)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config()
    return config


def _layer_count_attr(config: Any) -> str | None:
    for attr in ("num_hidden_layers", "n_layers"):
        if isinstance(getattr(config, attr, None), int):
            return attr
    return None


def _check_indices(indices: Sequence[int], n: int, name: str = "indices") -> list[int]:
    out = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int):
            raise TypeError(f"{name} must be integers, got {i!r}")
        if not -n <= i < n:
            raise IndexError(f"{name}: layer {i} out of range for a model with {n} layers")
        out.append(i % n)
    return out


def _rearrange(model: Model, order: list[int]) -> tuple[nn.ModuleList, Any]:
    """Point the model at blocks ``order`` of its list; returns what is needed to undo it."""
    path, layers = get_transformer_layers(model)
    config = _text_config(model)
    saved: dict[str, Any] = {}
    count_attr = _layer_count_attr(config)
    if count_attr is not None:
        saved[count_attr] = getattr(config, count_attr)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        saved["layer_types"] = layer_types
    set_key_path_(model, path, nn.ModuleList([layers[i] for i in order]))
    if count_attr is not None:
        setattr(config, count_attr, len(order))
    if "layer_types" in saved:
        config.layer_types = [saved["layer_types"][i] for i in order]
    return layers, (path, config, saved)


def _restore(model: Model, layers: nn.ModuleList, undo: Any) -> None:
    path, config, saved = undo
    set_key_path_(model, path, layers)
    for attr, value in saved.items():
        setattr(config, attr, value)


@contextmanager
def permute_layers(model: Model, indices: Sequence[int]) -> Iterator[None]:
    """Temporarily run the blocks in the order ``indices`` (may drop or repeat blocks).

    Args:
        model: The model to modify.
        indices: Block indices in the new order, e.g. ``[1, 0, 2]``; negative indices count
            from the end.
    """
    _, layers = get_transformer_layers(model)
    order = _check_indices(indices, len(layers))
    original, undo = _rearrange(model, order)
    try:
        yield
    finally:
        _restore(model, original, undo)


def permute_layers_(model: Model, indices: Sequence[int]) -> None:
    """Permanently run the blocks in the order ``indices`` (updates the config to match)."""
    _, layers = get_transformer_layers(model)
    _rearrange(model, _check_indices(indices, len(layers)))


@contextmanager
def delete_layers(model: Model, indices: Sequence[int]) -> Iterator[None]:
    """Temporarily remove the blocks at ``indices``."""
    _, layers = get_transformer_layers(model)
    drop = set(_check_indices(indices, len(layers)))
    with permute_layers(model, [i for i in range(len(layers)) if i not in drop]):
        yield


@contextmanager
def replace_layers(
    model: Model, indices: Sequence[int], replacements: Sequence[nn.Module]
) -> Iterator[None]:
    """Temporarily swap the blocks at ``indices`` for ``replacements`` (same length)."""
    _, layers = get_transformer_layers(model)
    positions = _check_indices(indices, len(layers))
    if len(positions) != len(replacements):
        raise InvalidInputError(
            f"got {len(positions)} indices but {len(replacements)} replacement modules"
        )
    originals = [layers[i] for i in positions]
    try:
        for i, module in zip(positions, replacements):
            layers[i] = module
        yield
    finally:
        for i, module in zip(positions, originals):
            layers[i] = module
