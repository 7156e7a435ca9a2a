"""Where converted models live, how a folder is built into place, and how one is loaded.

Converted folders live in ``$TUNED_LENS_CACHE`` (default ``~/.cache/tuned_lens``). Each is
built in a temporary sibling (:func:`tuned_lens._atomic.atomic_folder`) that is renamed into
place only when complete, so an interrupted conversion never leaves a half-written model.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens._atomic import atomic_folder, remove_stale_temp_folders
from tuned_lens.errors import AssetMissingError, InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# Files a converted model folder must hold; a folder missing one is rebuilt.
MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds converted models.

    Args:
        cache_dir: Explicit folder; when ``None``, ``$TUNED_LENS_CACHE`` or
            ``~/.cache/tuned_lens``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TUNED_LENS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tuned_lens"


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds every file of a converted model."""
    return folder.is_dir() and all((folder / name).is_file() for name in MODEL_FILES)


def remove_stale_temp_dirs(root: Path, name: str) -> None:
    """Delete temp folders of ``root / name`` left by conversions whose process is gone."""
    remove_stale_temp_folders(root / name)


def build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a fresh temp folder, then rename it to ``final``.

    If ``final`` already holds a complete model, it is returned untouched (also when another
    process finishes first). A folder that exists but is incomplete (edited by hand, say) is
    replaced.

    Raises:
        RuntimeError: ``build`` did not write every file of :data:`MODEL_FILES`.
    """
    if is_complete(final):
        return final
    with atomic_folder(final, keep_existing=is_complete) as tmp:
        with quiet_transformers():
            build(tmp)
        if not is_complete(tmp):
            missing = [n for n in MODEL_FILES if not (tmp / n).is_file()]
            raise RuntimeError(f"conversion into {tmp} did not write {missing}")
    return final


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-shard progress bars while converting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def package_dir(module: str, pip_hint: str) -> Path:
    """The folder of an installed wheel's package.

    Raises:
        AssetMissingError: ``module`` is not installed (the message says ``pip_hint``).
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise AssetMissingError(
            f"the {module!r} package is not installed; install it with `{pip_hint}`"
        )
    return Path(spec.origin).parent


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``"unknown"``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def mark_fast_tokenizer(folder: Path) -> None:
    """transformers 5.x writes ``TokenizersBackend``, which 4.x cannot load."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_folder(
    folder: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None,
    device: str | torch.device,
    precision: str | None = None,
    revision: str | None = None,
    offline: bool | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model (eval mode, gradients left on) and its tokenizer through the one loader
    :func:`tuned_lens.model_loading.load_model`.

    Args:
        folder: A model folder (or a Hub id).
        dtype: Parameter dtype; ``torch.float32`` when both it and ``precision`` are ``None``.
        device: Where to put the model.
        precision: Instead of ``dtype``, a ``--precision`` value (``"auto"``, ``"bfloat16"``...).
        revision: Model revision.
        offline: Cache-only loading; ``None`` asks :func:`tuned_lens.hub.hub_offline`.

    Raises:
        TypeError: ``dtype`` is not a ``torch.dtype``.
        InvalidInputError: both ``dtype`` and ``precision`` given, or an unknown precision.
    """
    import torch

    from tuned_lens.model_loading import load_model, load_tokenizer

    if precision is not None and dtype is not None:
        raise InvalidInputError("pass dtype or precision, not both", option="precision")
    chosen: str | torch.dtype
    if precision is None:
        chosen = torch.float32 if dtype is None else dtype
        if not isinstance(chosen, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype, got {chosen!r}")
    else:
        chosen = precision
    name = os.fspath(folder)
    tokenizer = load_tokenizer(name, revision=revision, offline=offline)
    model = load_model(
        name,
        device=device,
        precision=chosen,
        revision=revision,
        offline=offline,
        freeze=False,
    )
    return model, tokenizer
