"""Tiny random causal language models for tests, built offline from inline configs.

Every supported architecture family has a configuration here that is as small as the family
allows (hidden size 32–64, two blocks, a vocabulary of 256), so a sweep over all of them takes
seconds on a CPU. The weights are random but deterministic for a given ``seed``.

Example:
    >>> from tuned_lens.testing import TINY_FAMILIES, tiny_model
    >>> model = tiny_model("llama")
    >>> model.config.num_hidden_layers
    2

Other helpers' tests import :func:`tiny_model` and :data:`TINY_FAMILIES`; keep the names stable.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = [
    "TINY_FAMILIES",
    "TINY_FAMILY_SINCE",
    "TINY_VOCAB_SIZE",
    "tiny_config",
    "tiny_family_unavailable",
    "tiny_model",
    "tiny_input_ids",
]

#: Vocabulary size shared by all tiny models, so token ids are interchangeable between them.
TINY_VOCAB_SIZE = 256

_ROPE_COMMON: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}

# model_type -> keyword arguments of its config class. Families whose names differ from their
# model_type (e.g. "pythia", "opt-350m") are listed in _ALIASES below.
_TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 128},
    "gpt_neo": {
        "model_type": "gpt_neo",
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 4,
        "attention_types": [[["global", "local"], 1]],
        "window_size": 16,
        "max_position_embeddings": 128,
    },
    "gptj": {
        "model_type": "gptj",
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "rotary_dim": 4,
        "n_positions": 128,
    },
    "bloom": {"model_type": "bloom", "hidden_size": 32, "n_layer": 2, "n_head": 4},
    "gpt_neox": {
        "model_type": "gpt_neox",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
    },
    "opt": {
        "model_type": "opt",
        "hidden_size": 32,
        "ffn_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "word_embed_proj_dim": 32,
        "max_position_embeddings": 128,
    },
    # Like facebook/opt-350m: post-LN blocks, no final norm, embeddings of width 16 projected in
    # and out of the 32-wide residual stream.
    "opt-350m": {
        "model_type": "opt",
        "hidden_size": 32,
        "ffn_dim": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "word_embed_proj_dim": 16,
        "do_layer_norm_before": False,
        "max_position_embeddings": 128,
    },
    "llama": {"model_type": "llama", **_ROPE_COMMON},
    "mistral": {"model_type": "mistral", **_ROPE_COMMON, "sliding_window": 16},
    "mixtral": {
        "model_type": "mixtral",
        **_ROPE_COMMON,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    "gemma": {"model_type": "gemma", **_ROPE_COMMON, "head_dim": 8},
    "gemma2": {
        "model_type": "gemma2",
        **_ROPE_COMMON,
        "head_dim": 8,
        "sliding_window": 16,
        "final_logit_softcapping": 3.0,
        "attn_logit_softcapping": 50.0,
    },
    "gemma3_text": {
        "model_type": "gemma3_text",
        **_ROPE_COMMON,
        "head_dim": 8,
        "sliding_window": 16,
        "final_logit_softcapping": 3.0,
    },
    "qwen2": {"model_type": "qwen2", **_ROPE_COMMON},
    "qwen3": {"model_type": "qwen3", **_ROPE_COMMON, "head_dim": 8},
    "qwen2_moe": {
        "model_type": "qwen2_moe",
        **_ROPE_COMMON,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 32,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    },
    "qwen3_moe": {
        "model_type": "qwen3_moe",
        **_ROPE_COMMON,
        "head_dim": 8,
        "moe_intermediate_size": 32,
        "num_experts": 4,
        "num_experts_per_tok": 2,
    },
    "phi3": {"model_type": "phi3", **_ROPE_COMMON},
    "phi": {"model_type": "phi", **_ROPE_COMMON},
    "falcon": {
        "model_type": "falcon",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 128,
    },
    "olmo": {"model_type": "olmo", **_ROPE_COMMON},
    "olmo2": {"model_type": "olmo2", **_ROPE_COMMON},
    "stablelm": {"model_type": "stablelm", **_ROPE_COMMON},
    "cohere": {"model_type": "cohere", **_ROPE_COMMON, "logit_scale": 0.5},
    "granite": {"model_type": "granite", **_ROPE_COMMON, "logits_scaling": 4.0},
    "granitemoe": {
        "model_type": "granitemoe",
        **_ROPE_COMMON,
        "logits_scaling": 4.0,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
    },
    "cohere2": {"model_type": "cohere2", **_ROPE_COMMON, "logit_scale": 0.5, "sliding_window": 16},
    "codegen": {
        "model_type": "codegen",
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "rotary_dim": 4,
        "n_positions": 128,
    },
    "gpt_bigcode": {
        "model_type": "gpt_bigcode",
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 4,
        "n_positions": 128,
    },
    "starcoder2": {"model_type": "starcoder2", **_ROPE_COMMON, "sliding_window": 16},
    "smollm3": {"model_type": "smollm3", **_ROPE_COMMON},
}

#: Every family name :func:`tiny_model` accepts, in a stable order.
TINY_FAMILIES: tuple[str, ...] = tuple(_TINY_CONFIGS)

_ALIASES = {"pythia": "gpt_neox", "neox": "gpt_neox", "gemma3": "gemma3_text", "opt-125m": "opt"}

#: The first ``transformers`` release with the config class of each tiny family that is newer
#: than the lowest supported release (4.46); every other family is in 4.46 already.
TINY_FAMILY_SINCE: dict[str, str] = {
    "olmo2": "4.47",
    "cohere2": "4.48",
    "gemma3_text": "4.50",
    "qwen3": "4.51",
    "qwen3_moe": "4.51",
    "smollm3": "4.53.1",
}


def _family_name(family: str) -> str:
    """The key of ``family`` in the inline configs (aliases resolved); unknown names raise."""
    from .errors import InvalidInputError

    name = _ALIASES.get(family, family)
    if name not in _TINY_CONFIGS:
        raise InvalidInputError(
            f"unknown tiny model family {family!r}; choose one of {TINY_FAMILIES}", option="family"
        )
    return name


def tiny_family_unavailable(family: str) -> str | None:
    """Why the installed ``transformers`` cannot build a tiny model of ``family``, if it cannot.

    Args:
        family: One of :data:`TINY_FAMILIES` (or an alias such as ``"gemma3"``).

    Returns:
        ``None`` when the family's config class is installed, else one sentence naming the
        family, the ``transformers`` release that added it and the installed one (a test's
        skip reason).

    Raises:
        InvalidInputError: If ``family`` is unknown (a ``ValueError``).
    """
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    name = _family_name(family)
    model_type = _TINY_CONFIGS[name]["model_type"]
    if model_type in CONFIG_MAPPING:
        return None
    since = TINY_FAMILY_SINCE.get(name, "a newer release")
    return (
        f"tiny family {name!r} needs transformers >= {since} (model type {model_type!r} is not "
        f"in the installed transformers {transformers.__version__})"
    )


def tiny_config(family: str, **overrides: Any):
    """Build the ``transformers`` config of a tiny model of ``family``.

    Args:
        family: One of :data:`TINY_FAMILIES` (or an alias such as ``"pythia"``).
        **overrides: Config attributes to change, e.g. ``num_hidden_layers=3``.

    Returns:
        A ``PretrainedConfig`` with ``vocab_size == TINY_VOCAB_SIZE`` unless overridden.

    Raises:
        InvalidInputError: If ``family`` is unknown (a ``ValueError``).
        MissingDependencyError: If the installed ``transformers`` is older than the family
            (:func:`tiny_family_unavailable` says which release has it).
    """
    from transformers import AutoConfig

    from .errors import MissingDependencyError

    name = _family_name(family)
    missing = tiny_family_unavailable(name)
    if missing is not None:
        raise MissingDependencyError(missing)
    kwargs = copy.deepcopy(_TINY_CONFIGS[name])
    model_type = kwargs.pop("model_type")
    kwargs.setdefault("vocab_size", TINY_VOCAB_SIZE)
    kwargs.setdefault("tie_word_embeddings", False)
    # Keep special tokens inside the tiny vocabulary (the families' defaults are not).
    kwargs.setdefault("bos_token_id", 1)
    kwargs.setdefault("eos_token_id", 2)
    kwargs.setdefault("pad_token_id", 0)
    kwargs.update(overrides)
    config = AutoConfig.for_model(model_type, **kwargs)
    config.name_or_path = f"tiny-random-{name}"
    return config


def tiny_model(
    family: str,
    *,
    seed: int = 0,
    dtype=None,
    attn_implementation: str = "eager",
    **overrides: Any,
):
    """Create a tiny randomly initialised causal LM of ``family``, in eval mode.

    Args:
        family: One of :data:`TINY_FAMILIES` (or an alias such as ``"pythia"``).
        seed: Seed for the random weights.
        dtype: Optional ``torch.dtype`` to cast the model to (default float32).
        attn_implementation: Attention kernel; ``"eager"`` is the most portable.
        **overrides: Config attributes to change, e.g. ``num_hidden_layers=3``.

    Returns:
        A ``transformers.PreTrainedModel`` whose ``config.name_or_path`` is
        ``"tiny-random-<family>"``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = tiny_config(family, **overrides)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        # Norm weights start at exactly 1 (or 0 for Gemma's 1 + w); randomise them a little so
        # that tests notice a norm that was skipped or applied twice.
        with torch.no_grad():
            for module in model.modules():
                if "norm" in type(module).__name__.lower():
                    for param in module.parameters(recurse=False):
                        param.add_(torch.randn_like(param) * 0.1)
            output = model.get_output_embeddings()
            if output is not None and getattr(output, "bias", None) is not None:
                output.bias.normal_(0.0, 0.1)
    if dtype is not None:
        model = model.to(dtype)
    model.config.name_or_path = config.name_or_path
    return model.eval()


def tiny_input_ids(
    batch: int = 2, seq_len: int = 8, *, seed: int = 0, vocab_size: int = TINY_VOCAB_SIZE
):
    """Random token ids of shape ``(batch, seq_len)`` for the tiny models."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch, seq_len), generator=generator)
