"""A lens folder as one unit: saved under a lock with a manifest written last, read as one version.

:func:`write_lens_folder` (behind ``TunedLens.save``) takes an exclusive lock on
``<folder>/.lens.lock``, removes the temporary files of killed writers, writes the parameters and
the config (each atomically) and then ``lens_manifest.json``, which names both files and their
SHA-256. Concurrent savers therefore take turns, and a saver killed between two renames leaves
files that disagree with the manifest. Readers hold a shared lock on the same file while they
read (when it exists; at most 2 s, so a stopped saver cannot block them).

:func:`read_lens_folder` reads each file once into memory and checks the bytes against the
manifest when there is one; a mismatch (a save in progress) is retried a few times and then
refused, so a reader gets one whole version or a :class:`~tuned_lens.errors.LensFileError`.
Folders without a manifest (the original library's, the Hub's) are read as they are. The
config is compared with the model and the parameter file's size with the config before any
tensor is built.

The folder is not swapped as a whole because it may hold other files (a training run keeps its
``checkpoints/`` and ``training_summary.json`` there).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from tuned_lens._atomic import (
    exclusive_lock,
    remove_stale_temp_files,
    shared_lock,
    write_bytes_atomically,
    write_json_atomically,
)
from tuned_lens.errors import InvalidInputError, LensFileError
from tuned_lens.lens_config import (
    MAX_CONFIG_BYTES,
    TunedLensConfig,
    parse_lens_config,
    read_file_once,
)
from tuned_lens.lens_io import (
    encode_lens_params,
    params_byte_limit,
    parse_lens_params,
    validate_lens_params,
)

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "read_lens_folder", "write_lens_folder"]

MANIFEST_NAME = "lens_manifest.json"
LOCK_NAME = ".lens.lock"
_ATTEMPTS = 6


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _refuse_non_finite(state: Mapping[str, torch.Tensor]) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidInputError(
                f"refusing to save the lens: {name} contains NaN or infinite values, and such a "
                "lens could not be loaded again",
                option="lens",
            )


def write_lens_folder(
    folder: str | Path,
    config: TunedLensConfig,
    state: Mapping[str, torch.Tensor],
    *,
    params_name: str = "params.safetensors",
    config_name: str = "config.json",
) -> None:
    """Save a lens to ``folder`` (created with its parents) as one unit.

    Raises:
        InvalidInputError: If ``params_name`` does not end in ``.safetensors``, or a parameter
            holds NaN or infinite values (a lens that loading would refuse is never written).
    """
    folder = Path(folder)
    if Path(params_name).suffix != ".safetensors":
        raise InvalidInputError(
            f"lens parameters are written as safetensors; use a '.safetensors' file name, "
            f"not {params_name!r}",
            option="ckpt",
        )
    _refuse_non_finite(state)
    params = encode_lens_params(state)
    config_bytes = json.dumps(config.to_dict()).encode("utf-8")
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / LOCK_NAME):
        remove_stale_temp_files(folder, {params_name, config_name, MANIFEST_NAME}.__contains__)
        write_bytes_atomically(folder / params_name, params)
        write_bytes_atomically(folder / config_name, config_bytes)
        manifest = {"files": {params_name: _sha256(params), config_name: _sha256(config_bytes)}}
        write_json_atomically(folder / MANIFEST_NAME, manifest)


def _read_manifest(folder: Path) -> dict[str, str] | None:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        files = json.loads(read_file_once(path, "lens manifest", MAX_CONFIG_BYTES))["files"]
    except (ValueError, KeyError, TypeError, RecursionError) as err:
        raise LensFileError(f"lens manifest {path} is corrupt: {err!s:.200}") from err
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise LensFileError(f"lens manifest {path} is corrupt: 'files' is not a name -> hash map")
    return files


def _check_against_model(
    config: TunedLensConfig, source: Path, d_model: int | None, num_layers: int | None
) -> None:
    if d_model is not None and config.d_model != d_model:
        raise LensFileError(
            f"lens config {source} has d_model={config.d_model} but the model's hidden size "
            f"is {d_model}"
        )
    if num_layers is not None and config.num_hidden_layers != num_layers:
        raise LensFileError(
            f"lens config {source} has num_hidden_layers={config.num_hidden_layers}: "
            f"{config.num_hidden_layers} translators but the model has {num_layers} layers"
        )


def read_lens_folder(
    config_path: str | Path,
    params_path: str | Path,
    *,
    d_model: int | None = None,
    num_layers: int | None = None,
) -> tuple[TunedLensConfig, dict[str, torch.Tensor]]:
    """Read a lens's config and parameters as one version, checked before anything is built.

    Args:
        config_path: The ``config.json``.
        params_path: The parameter file (safetensors or the original's ``params.pt``).
        d_model: The model's hidden size, compared with the config's first.
        num_layers: The model's number of layers, compared with the config's first.

    Returns:
        The config and the validated parameters (CPU tensors).

    Raises:
        LensFileError: A malformed, unsafe or mismatched file, or files that do not match the
            folder's manifest after a few retries (a save was interrupted or is running).
    """
    config_path, params_path = Path(config_path), Path(params_path)
    mismatch: list[str] = []
    for attempt in range(_ATTEMPTS):
        if attempt:
            time.sleep(0.02 * attempt)
        same_folder = config_path.parent == params_path.parent
        with shared_lock(config_path.parent / LOCK_NAME):  # savers wait until we have read
            manifest = _read_manifest(config_path.parent) if same_folder else None
            config_bytes = read_file_once(config_path, "lens config", MAX_CONFIG_BYTES)
            config = parse_lens_config(config_bytes, config_path)
            _check_against_model(config, config_path, d_model, num_layers)
            params = read_file_once(params_path, "lens parameters", params_byte_limit(config))
        read = {config_path.name: config_bytes, params_path.name: params}
        mismatch = [
            name
            for name, data in read.items()
            if manifest is not None and name in manifest and manifest[name] != _sha256(data)
        ]
        if not mismatch:
            state = parse_lens_params(params, params_path, config)
            validate_lens_params(state, config, source=str(params_path))
            return config, state
    raise LensFileError(
        f"the files {mismatch} of lens folder {config_path.parent} do not match its manifest "
        f"{MANIFEST_NAME} (a save was interrupted or is still running); save the lens again, or "
        f"delete {MANIFEST_NAME} to load the files as they are"
    )
