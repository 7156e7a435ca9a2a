"""Other libraries' models, caches and data sets, through this package's own owners.

* :mod:`tuned_lens.integrations.transformer_lens`: TransformerLens 4's ``TransformerBridge``
  (and its ``ActivationCache``) next to TransformerLens 3's ``HookedTransformer``;
* :mod:`tuned_lens.integrations.nnsight`: ``nnsight.LanguageModel``;
* :mod:`tuned_lens.integrations.hf_datasets`: the original's ``datasets``-based packing.

:func:`unwrap_model` is the one place where the architecture resolver
(:func:`tuned_lens.architectures.resolve_architecture`) and the layer-decoding loop
(:func:`tuned_lens.decoding.run_model`) ask "is this a wrapped model?". None of the wrapped
libraries is imported unless a model of theirs is passed in.
"""

from __future__ import annotations

from typing import Any

__all__ = ["is_wrapped_model", "unwrap_model"]


def is_wrapped_model(model: Any) -> bool:
    """Whether ``model`` is a ``TransformerBridge`` or an ``nnsight`` model (duck-typed)."""
    from tuned_lens.integrations.nnsight import is_nnsight_model
    from tuned_lens.integrations.transformer_lens import is_bridge

    return is_bridge(model) or is_nnsight_model(model)


def unwrap_model(model: Any) -> Any:
    """The Hugging Face model inside an ``nnsight`` model; any other model unchanged.

    A ``TransformerBridge`` is *not* unwrapped: its own final norm, unembedding and logit
    soft-capping are what its lenses read out through (see
    :mod:`tuned_lens.integrations.transformer_lens`).
    """
    from tuned_lens.integrations.nnsight import hf_model, is_nnsight_model

    return hf_model(model) if is_nnsight_model(model) else model
