"""The one loader of frozen language models and their tokenizers.

Both the command line (:class:`tuned_lens.training.ingredients.ModelSpec`) and the offline
assets (:func:`tuned_lens.assets.load_model`, the demo) load through here, so precision,
revision and offline handling are the same everywhere: cache-only loading whenever
:func:`tuned_lens.hub.hub_offline` says so, unless the caller decides explicitly.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Any

import torch

from tuned_lens.errors import InvalidInputError, MissingDependencyError
from tuned_lens.hub import hub_offline

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "PRECISIONS",
    "dtype_kwarg",
    "load_model",
    "load_tokenizer",
    "resolve_dtype",
]

PRECISIONS = ("auto", "float32", "bfloat16", "float16", "int8")


def resolve_dtype(precision: str | torch.dtype, device: torch.device) -> torch.dtype | str:
    """Map a ``--precision`` value (or a dtype, kept as is) to the dtype the model loads in.

    ``auto`` means float32 on the CPU (half-precision matmuls are slow there) and the
    checkpoint's own dtype (``"auto"`` for transformers) on accelerators. ``int8`` loads float16
    weights that bitsandbytes then quantises.

    Raises:
        InvalidInputError: an unknown precision (``option="precision"``).
    """
    if isinstance(precision, torch.dtype):
        return precision
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"precision must be one of {PRECISIONS}, got {precision!r}", option="precision"
        )
    if precision == "auto":
        return torch.float32 if device.type == "cpu" else "auto"
    if precision == "int8":
        return torch.float16
    return getattr(torch, precision)


def dtype_kwarg(dtype: torch.dtype | str) -> dict[str, torch.dtype | str]:
    """The ``from_pretrained`` keyword for a dtype: transformers renamed ``torch_dtype`` to
    ``dtype`` in 4.56."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_tokenizer(
    name: str,
    *,
    revision: str | None = None,
    tokenizer: str | None = None,
    slow_tokenizer: bool = False,
    offline: bool | None = None,
) -> PreTrainedTokenizerBase:
    """Load the tokenizer of ``name`` (or of the ``tokenizer`` override).

    Args:
        name: A local folder or a Hugging Face model id.
        revision: Model revision.
        tokenizer: Tokenizer name or folder to use instead of ``name``'s.
        slow_tokenizer: Load the slow (Python) tokenizer.
        offline: Cache-only loading; ``None`` asks :func:`tuned_lens.hub.hub_offline`.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        tokenizer or name,
        revision=revision,
        use_fast=not slow_tokenizer,
        local_files_only=hub_offline() if offline is None else offline,
    )


def _int8_kwargs(device: torch.device) -> dict[str, Any]:
    """``from_pretrained`` keywords that quantise to int8 with bitsandbytes on ``device``."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise MissingDependencyError(
            "precision int8 needs bitsandbytes: pip install 'tuned-lens-rs[8bit]'"
        )
    if device.type != "cuda":
        raise InvalidInputError(
            "precision int8 needs a CUDA device (bitsandbytes)", option="precision"
        )
    from transformers import BitsAndBytesConfig

    return {
        "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
        "device_map": {"": device},
    }


def load_model(
    name: str,
    *,
    device: str | torch.device,
    precision: str | torch.dtype = "auto",
    revision: str | None = None,
    offline: bool | None = None,
    place_on_device: bool = True,
    freeze: bool = True,
) -> PreTrainedModel:
    """Load a causal LM in eval mode.

    Args:
        name: A local folder or a Hugging Face model id.
        device: Where the model runs.
        precision: One of :data:`PRECISIONS`, or a ``torch.dtype``.
        revision: Model revision.
        offline: Cache-only loading; ``None`` asks :func:`tuned_lens.hub.hub_offline`.
        place_on_device: Move the weights to ``device`` (off when FSDP will shard them).
        freeze: Turn off the parameters' gradients (the lens machinery never trains them).

    Raises:
        MissingDependencyError: ``int8`` without bitsandbytes installed.
        InvalidInputError: an unknown precision, or ``int8`` off CUDA.
    """
    from transformers import AutoModelForCausalLM

    device = torch.device(device)
    kwargs: dict[str, Any] = {
        **dtype_kwarg(resolve_dtype(precision, device)),
        "revision": revision,
        "local_files_only": hub_offline() if offline is None else offline,
        "low_cpu_mem_usage": True,
    }
    if isinstance(precision, str) and precision.lower() == "int8":
        kwargs.update(_int8_kwargs(device))
    model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    if place_on_device and "device_map" not in kwargs:
        model.to(device)  # type: ignore[arg-type]  # transformers types .to via a wrapper
    model.eval()
    if freeze:
        model.requires_grad_(False)
    return model
