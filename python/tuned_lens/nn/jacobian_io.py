"""Jacobian-lens files: the reference ``.pt`` format, safetensors + JSON, and the model checks.

Two layouts are read and written:

* **reference** (the format of Anthropic's ``jlens`` and TransformerLens, the files published
  on the Hub): one ``torch.save`` dict ``{"J": {block: (d, d) tensor}, "n_prompts": int,
  "source_layers": [block, ...], "d_model": int, "metadata": {...}}``. Keys of ``J`` are
  *block* indices (the output of block ``l`` is ``hidden_states[l + 1]`` in this project's
  convention). A lens of ours that also covers the embedding output (``hidden_states[0]``,
  which has no block index) stores it under the extra top-level key ``"J_embedding"``; the
  reference loaders ignore extra keys. The file is read by the allow-list unpickler of
  :mod:`tuned_lens.lens_io` (tensors, dicts, lists, tuples, numbers, strings, ``None``): a
  pickle that names any other global is refused before anything runs. The fitting checkpoint
  schema of ``jlens`` (``jacobian_sum`` + ``n_done``) is read too (sums divided by ``n_done``).
* **safetensors**: a folder with ``config.json`` (``lens_type = "jacobian_lens"``, ``d_model``,
  ``n_prompts``, ``layers`` as hidden-state indices, ``metadata``) and ``params.safetensors``
  with one ``(d, d)`` tensor ``"J.{i}"`` per hidden-state index ``i``.

Every file is written through :mod:`tuned_lens._atomic`.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path, write_json_atomically
from ..errors import InvalidInputError, LensFileError, UnsafeLensFileError
from ..hub import hub_offline

__all__ = [
    "CONFIG_FILE",
    "PARAMS_FILE",
    "REFERENCE_FILE",
    "JacobianLensData",
    "check_lens_fits_model",
    "read_jacobian_lens",
    "read_plain_torch_file",
    "resolve_jacobian_lens_path",
    "write_reference",
    "write_safetensors",
]

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
REFERENCE_FILE = "lens.pt"  # the reference's default file name
LENS_TYPE = "jacobian_lens"
_EMBEDDING_KEY = "J_embedding"


@dataclass
class JacobianLensData:
    """The content of a Jacobian-lens file, in this project's index convention.

    Attributes:
        jacobians: Hidden-state index ``i`` -> ``(d_model, d_model)`` float32 CPU tensor (rows:
            final-block dimensions, columns: source dimensions).
        d_model: Residual width.
        n_prompts: Number of prompts averaged in.
        metadata: Provenance (plain JSON-like values).
    """

    jacobians: dict[int, torch.Tensor]
    d_model: int
    n_prompts: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


# -- reading --------------------------------------------------------------------------------------


def read_plain_torch_file(path: str | Path) -> Any:
    """Read a ``torch.save`` zip archive of plain data without executing pickled code.

    Uses :class:`tuned_lens.lens_io._TensorOnlyUnpickler` (the project's one allow-list
    unpickler); plain containers, numbers, strings and ``None`` need no global, so they load,
    and every other global (``os.system``, ``builtins.eval``, ...) is refused.

    Raises:
        UnsafeLensFileError: A bare pickle, or one that names a global outside the allow-list.
        LensFileError: The file is missing or is not an intact torch archive.
    """
    from ..lens_io import _TensorOnlyUnpickler

    path = Path(path)
    head = b""
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        if head[:1] == b"\x80":
            raise UnsafeLensFileError(
                f"refusing to load {path}: a bare (non-zip) pickle cannot be read without "
                "executing it; re-save it with torch.save's default zip format"
            ) from err
        raise LensFileError(f"cannot read {path} as a torch archive: {err}") from err
    with archive:
        pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise LensFileError(f"{path}: expected one data.pkl, found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            data = archive.read(pickles[0])
            names = archive.namelist()
            order = archive.read(prefix + "byteorder") if prefix + "byteorder" in names else b""
            unpickler = _TensorOnlyUnpickler(data, archive, prefix, path)
            unpickler._big_endian = order.strip() == b"big"
            return unpickler.load()
        except LensFileError:
            raise
        except Exception as err:  # a damaged archive raises many types
            raise LensFileError(f"corrupt archive {path}: {type(err).__name__}: {err}") from err


def _as_int(value: Any, what: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LensFileError(f"{source}: {what} must be an integer, got {value!r:.60}")
    return value


def _square(tensor: Any, d_model: int, what: str, source: str) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise LensFileError(f"{source}: {what} is a {type(tensor).__name__}, not a tensor")
    if tuple(tensor.shape) != (d_model, d_model):
        raise LensFileError(
            f"{source}: {what} has shape {tuple(tensor.shape)}, expected ({d_model}, {d_model})"
        )
    if not tensor.dtype.is_floating_point:
        raise LensFileError(f"{source}: {what} has dtype {tensor.dtype}, expected a float type")
    out = tensor.float()
    if not bool(torch.isfinite(out).all()):
        raise LensFileError(f"{source}: {what} contains NaN or infinite values")
    return out


def parse_reference(obj: Any, source: str) -> JacobianLensData:
    """Validate a reference-format dict (or a ``jlens`` fitting checkpoint) read from a file.

    Raises:
        LensFileError: On a missing key, a wrong type or shape, or non-finite values.
    """
    if not isinstance(obj, dict):
        raise LensFileError(f"{source}: expected a dict, got {type(obj).__name__}")
    scale = 1.0
    if "J" not in obj and "jacobian_sum" in obj and "n_done" in obj:  # a jlens checkpoint
        n_done = _as_int(obj["n_done"], "n_done", source)
        if n_done <= 0:
            raise LensFileError(f"{source}: a fitting checkpoint with n_done={n_done}")
        obj = {**obj, "J": obj["jacobian_sum"], "n_prompts": n_done}
        scale = 1.0 / n_done
    blocks = obj.get("J")
    if not isinstance(blocks, dict) or not (blocks or _EMBEDDING_KEY in obj):
        raise LensFileError(f"{source}: no 'J' dict of layer -> matrix (not a Jacobian lens?)")
    first = next(iter(blocks.values()), obj.get(_EMBEDDING_KEY))
    d_model = _as_int(obj.get("d_model", getattr(first, "shape", [0])[-1]), "d_model", source)
    jacobians: dict[int, torch.Tensor] = {}
    for key, tensor in blocks.items():
        block = int(key) if isinstance(key, str) and key.lstrip("-").isdigit() else key
        block = _as_int(block, "a layer key of J", source)
        if block < 0:
            raise LensFileError(f"{source}: negative layer key {block} in J")
        jacobians[block + 1] = _square(tensor, d_model, f"J[{block}]", source) * scale
    if _EMBEDDING_KEY in obj:
        jacobians[0] = _square(obj[_EMBEDDING_KEY], d_model, _EMBEDDING_KEY, source) * scale
    listed = obj.get("source_layers")
    blocks_found = sorted(i - 1 for i in jacobians if i > 0)
    if listed is not None and (
        not isinstance(listed, (list, tuple))
        or sorted(_as_int(x, "a source layer", source) for x in listed) != blocks_found
    ):
        raise LensFileError(f"{source}: source_layers {listed!r:.80} do not match the keys of J")
    n_prompts = _as_int(obj.get("n_prompts", 0), "n_prompts", source)
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise LensFileError(f"{source}: metadata must be a dict, got {type(metadata).__name__}")
    return JacobianLensData(dict(sorted(jacobians.items())), d_model, n_prompts, metadata)


def _read_safetensors_folder(folder: Path) -> JacobianLensData:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    source = str(folder)
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / PARAMS_FILE), device="cpu")
    except (OSError, ValueError, SafetensorError) as err:
        raise LensFileError(f"cannot read the Jacobian lens in {folder}: {err}") from err
    if not isinstance(config, dict) or config.get("lens_type") != LENS_TYPE:
        raise LensFileError(f"{folder / CONFIG_FILE} is not a Jacobian-lens config")
    d_model = _as_int(config.get("d_model"), "d_model", source)
    layers = [_as_int(i, "a layer index", source) for i in config.get("layers", [])]
    if sorted(tensors) != sorted(f"J.{i}" for i in layers):
        raise LensFileError(f"{source}: tensors {sorted(tensors)[:8]} do not match layers {layers}")
    jacobians = {i: _square(tensors[f"J.{i}"], d_model, f"J.{i}", source) for i in sorted(layers)}
    n_prompts = _as_int(config.get("n_prompts", 0), "n_prompts", source)
    return JacobianLensData(jacobians, d_model, n_prompts, dict(config.get("metadata") or {}))


def read_jacobian_lens(path: str | Path, *, max_bytes: int | None = None) -> JacobianLensData:
    """Read a Jacobian lens: a reference ``.pt`` file, or a safetensors folder.

    Args:
        path: The ``.pt`` file, or a folder with ``config.json`` and ``params.safetensors``.
        max_bytes: Refuse an archive that declares more uncompressed bytes than this (checked
            before any tensor is read).

    Raises:
        LensFileError: Malformed, oversized or not a Jacobian lens.
        UnsafeLensFileError: A pickle that references code.
    """
    path = Path(path)
    if path.is_dir():
        return _read_safetensors_folder(path)
    if max_bytes is not None and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
        if declared > max_bytes:
            raise LensFileError(
                f"{path} declares {declared} bytes, more than a Jacobian lens for this model "
                f"needs ({max_bytes}); refusing to read it"
            )
    return parse_reference(read_plain_torch_file(path), str(path))


# -- finding ----------------------------------------------------------------------------------------


def resolve_jacobian_lens_path(
    path_or_repo: str | os.PathLike[str],
    *,
    filename: str | None = None,
    revision: str | None = None,
    cache_dir: str | None = None,
) -> Path:
    """A local file or folder to pass to :func:`read_jacobian_lens`.

    A local file is used as is; a local folder gives ``folder / filename``, else the folder
    itself when it holds a safetensors lens, else its ``lens.pt`` or its only ``.pt`` file. Any
    other string is a Hugging Face repository id: ``filename`` (default ``lens.pt``) is fetched
    with ``hf_hub_download`` at ``revision`` (from the cache only when ``HF_HUB_OFFLINE`` is
    set).

    Raises:
        LensFileError: Nothing usable is found (the message says where it looked).
    """
    local = Path(os.path.expanduser(os.fspath(path_or_repo)))
    if local.is_file():
        return local
    if local.is_dir():
        if filename is not None:
            return local / filename
        if (local / CONFIG_FILE).is_file() and (local / PARAMS_FILE).is_file():
            return local
        candidates = sorted(local.glob("*.pt"))
        if (local / REFERENCE_FILE).is_file():
            return local / REFERENCE_FILE
        if len(candidates) == 1:
            return candidates[0]
        raise LensFileError(
            f"{local} holds no Jacobian lens ({CONFIG_FILE} + {PARAMS_FILE}, {REFERENCE_FILE} or "
            f"one .pt file; found {[c.name for c in candidates]}); pass filename="
        )
    return _download(os.fspath(path_or_repo), filename or REFERENCE_FILE, revision, cache_dir)


def _download(repo_id: str, filename: str, revision: str | None, cache_dir: str | None) -> Path:
    from huggingface_hub import hf_hub_download

    from ..load_artifacts import _hub_not_found_errors

    not_found: tuple[type[Exception], ...] = (*_hub_not_found_errors(), ValueError)
    try:
        return Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=hub_offline(),
            )
        )
    except not_found as err:
        mode = " (looked in the local cache only: HF_HUB_OFFLINE is set)" if hub_offline() else ""
        raise LensFileError(
            f"no Jacobian lens at {repo_id!r}: not a local path, and {filename!r} at revision "
            f"{revision or 'main'!r} is not available from the Hub{mode}: {type(err).__name__}"
        ) from err


# -- writing ----------------------------------------------------------------------------------------


def _check_plain(value: Any, where: str) -> None:
    """Metadata must survive ``torch.load(weights_only=True)`` and JSON: plain values only."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(f"{where} has a non-string key {key!r}", option="metadata")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise InvalidInputError(
        f"{where} is a {type(value).__name__}; metadata holds only None, bool, int, float, str, "
        "lists and dicts with string keys",
        option="metadata",
    )


def _cast(tensor: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    out = tensor.detach().to("cpu", dtype).contiguous()
    if not bool(torch.isfinite(out).all()):
        raise InvalidInputError(
            f"{what} overflows {dtype}; save with a wider dtype", option="dtype"
        )
    return out


def write_reference(path: str | Path, data: JacobianLensData, dtype: torch.dtype) -> None:
    """Write ``data`` as one reference-format ``torch.save`` file (atomically)."""
    _check_plain(data.metadata, "metadata")
    blocks = {i - 1: _cast(j, dtype, f"J[{i - 1}]") for i, j in data.jacobians.items() if i > 0}
    obj: dict[str, Any] = {
        "J": blocks,
        "n_prompts": int(data.n_prompts),
        "source_layers": sorted(blocks),
        "d_model": int(data.d_model),
    }
    if 0 in data.jacobians:
        obj[_EMBEDDING_KEY] = _cast(data.jacobians[0], dtype, _EMBEDDING_KEY)
    if data.metadata:
        obj["metadata"] = dict(data.metadata)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_safetensors(folder: str | Path, data: JacobianLensData, dtype: torch.dtype) -> None:
    """Write ``data`` as ``config.json`` + ``params.safetensors`` into ``folder``."""
    from safetensors.torch import save_file

    _check_plain(data.metadata, "metadata")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"J.{i}": _cast(j, dtype, f"J.{i}") for i, j in data.jacobians.items()}
    with atomic_path(folder / PARAMS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "tuned-lens-rs"})
    config = {
        "lens_type": LENS_TYPE,
        "format_version": 1,
        "d_model": int(data.d_model),
        "n_prompts": int(data.n_prompts),
        "layers": sorted(data.jacobians),
        "index_convention": "hidden_states[i]; 0 = embedding output, i = output of block i-1",
        "metadata": dict(data.metadata),
    }
    write_json_atomically(folder / CONFIG_FILE, config)


# -- model checks -----------------------------------------------------------------------------------


def _name_tail(name: str) -> str:
    return Path(str(name).rstrip("/")).name


def check_lens_fits_model(data: JacobianLensData, model: nn.Module, d_model: int) -> int:
    """The checks of TransformerLens's ``validate_model``, for a Hugging Face model.

    Returns the model's number of blocks ``L``.

    Raises:
        InvalidInputError: The model is not a causal decoder (``option="model"``).
        LensFileError: Recorded model name or revision differ; ``d_model`` differs; a layer
            outside ``0 .. L-1`` (blocks ``0 .. L-2``); a target other than the last block;
            weights processed away from the raw Hugging Face ones.
    """
    from ..architectures import resolve_architecture

    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        raise InvalidInputError("the Jacobian lens needs a causal decoder model", option="model")
    n_blocks = len(resolve_architecture(model).layers)
    meta = data.metadata
    name = getattr(config, "name_or_path", None)
    if meta.get("model_name") and name and _name_tail(meta["model_name"]) != _name_tail(name):
        raise LensFileError(f"the lens was fitted on {meta['model_name']!r}, the model is {name!r}")
    revision = getattr(config, "_commit_hash", None)
    if meta.get("model_revision") and revision and meta["model_revision"] != revision:
        raise LensFileError(
            f"the lens was fitted on revision {meta['model_revision']!r} of the model, which is "
            f"at revision {revision!r}"
        )
    if data.d_model != d_model:
        raise LensFileError(f"the lens has d_model={data.d_model}, the model {d_model}")
    bad = [i for i in data.jacobians if not 0 <= i < n_blocks]
    if bad:
        raise LensFileError(
            f"the lens covers hidden-state indices {bad} (blocks {[i - 1 for i in bad]}), but a "
            f"model with {n_blocks} blocks has lens layers 0..{n_blocks - 1} (blocks "
            f"0..{n_blocks - 2})"
        )
    depth = meta.get("num_hidden_layers", n_blocks)
    if depth != n_blocks:
        raise LensFileError(f"the lens was fitted on a model with {depth} blocks, not {n_blocks}")
    target = meta.get("target_layer", n_blocks - 1)
    if target != n_blocks - 1:
        raise LensFileError(f"the lens targets block {target}, not the last block {n_blocks - 1}")
    processing = meta.get("processing") or {}
    if isinstance(processing, Mapping) and (
        processing.get("compatibility_mode")
        or processing.get("weight_basis", "raw_huggingface") != "raw_huggingface"
    ):
        raise LensFileError(f"the lens was fitted on processed weights ({processing!r:.80})")
    return n_blocks
