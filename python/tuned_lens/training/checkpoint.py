"""Resumable training snapshots: safetensors for tensors, JSON for everything else.

A snapshot is one file ``checkpoint_<step>.safetensors`` holding the lens parameters
(``lens.<name>``), the optimiser state tensors (``optim.<param index>.<key>``) and, in the
safetensors metadata, a JSON document with the step, the data position, the optimiser's
non-tensor state and the run settings. Nothing is ever unpickled.

Writes are atomic: the bytes go to a temporary file in the same folder, which is fsync'ed and
then renamed over the final name with ``os.replace`` (and the folder is fsync'ed), so a process
killed at any moment leaves either the previous snapshots or the new one, never a torn file.
The two newest snapshots are kept; the temporary files of killed writers are removed by
:func:`remove_stale_temporaries` when the next run starts.

Since format 2 the metadata also lists every tensor (name, dtype, shape) and a SHA-256 over the
document and the tensor bytes: a flipped bit, a deleted optimiser tensor or a step that does not
match the file name makes :func:`read_checkpoint` refuse the file, and :func:`latest_checkpoint`
falls back to the previous one with a warning. (Format 1 files, without a checksum, are read
with a warning.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from tuned_lens._atomic import remove_stale_temp_files, write_bytes_atomically
from tuned_lens.errors import InvalidInputError, LensFileError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_NAME = re.compile(r"^checkpoint_(\d+)\.safetensors$")
KEEP_LAST = 2


@dataclass
class Snapshot:
    """What a checkpoint restores.

    Attributes:
        step: optimiser steps completed.
        lens_state: lens parameters by name.
        optimizer_state: a ``torch.optim.Optimizer.state_dict()``-shaped dict.
        extra: JSON-able run information (data position, settings, W&B id, …).
        format_version: the file's format (1: no checksum, no model or data fingerprint).
    """

    step: int
    lens_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    extra: dict[str, Any]
    format_version: int = FORMAT_VERSION


def checkpoint_path(folder: str | os.PathLike[str], step: int) -> Path:
    return Path(folder) / f"checkpoint_{step:08d}.safetensors"


def list_checkpoints(folder: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Snapshots in ``folder`` as ``(step, path)``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> None:
    """Delete the temporary files of snapshot writers that were killed (their process is
    gone), logging what was removed."""
    for path in remove_stale_temp_files(Path(folder), lambda name: bool(_NAME.match(name))):
        logger.warning("removed %s, left by a checkpoint writer that was killed", path)


def _digest(document: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the JSON document and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode("utf-8"))
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"\0{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _tensor_manifest(tensors: Mapping[str, torch.Tensor]) -> dict[str, list[Any]]:
    return {name: [str(t.dtype), list(t.shape)] for name, t in sorted(tensors.items())}


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    plain_state: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        plain: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain[key] = value
        plain_state[str(index)] = plain
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()}
        for group in state["param_groups"]
    ]
    return tensors, {"state": plain_state, "param_groups": groups}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], plain: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {
        int(index): dict(entries) for index, entries in plain["state"].items()
    }
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    groups = []
    for group in plain["param_groups"]:
        group = dict(group)
        if "betas" in group and isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    folder: str | os.PathLike[str],
    *,
    step: int,
    lens_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    extra: dict[str, Any],
    keep_last: int = KEEP_LAST,
) -> Path:
    """Write a snapshot atomically and delete all but the ``keep_last`` newest.

    Returns:
        The path of the new snapshot.

    Raises:
        InvalidInputError: ``step`` is not a non-negative integer.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidInputError(f"a checkpoint step must be an int >= 0, got {step!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"lens.{k}": v.detach().cpu().contiguous() for k, v in lens_state.items()}
    optim_tensors, optim_plain = _split_optimizer_state(optimizer_state)
    tensors.update(optim_tensors)
    document = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "optimizer": optim_plain,
        "extra": extra,
        "tensors": _tensor_manifest(tensors),
    }
    metadata = {"tuned_lens": json.dumps(document), "sha256": _digest(document, tensors)}
    payload = save_safetensors_bytes(tensors, metadata=metadata)
    final = checkpoint_path(folder, step)
    write_bytes_atomically(final, payload, durable=True)
    for _, old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def _parse(data: bytes, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """The tensors, the JSON document and the stored checksum of a snapshot's bytes."""
    try:
        tensors = load_safetensors_bytes(data)
        # The metadata sits in the JSON header; parse it ourselves to stay version-agnostic.
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len])["__metadata__"]
        document = json.loads(metadata["tuned_lens"])
        checksum = metadata.get("sha256", "")
    except (SafetensorError, KeyError, TypeError, ValueError, RecursionError) as err:
        raise LensFileError(f"{path} is not a tuned-lens checkpoint: {err!s:.200}") from err
    if not isinstance(document, dict) or not isinstance(checksum, str):
        raise LensFileError(f"{path} is not a tuned-lens checkpoint: bad metadata")
    return tensors, document, checksum


def _check_integrity(
    path: Path, tensors: dict[str, torch.Tensor], document: dict[str, Any], checksum: str
) -> None:
    version = document.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise LensFileError(f"{path}: unsupported checkpoint format {version!r:.40}")
    if version == 1:
        logger.warning("%s has no checksum (format 1); its contents cannot be verified", path)
    elif document.get("tensors") != _tensor_manifest(tensors):
        raise LensFileError(
            f"{path}: the file's tensors are not the ones its metadata lists (incomplete state: "
            "an optimiser or lens tensor is missing or was changed)"
        )
    elif checksum != _digest(document, tensors):
        raise LensFileError(f"{path}: checksum mismatch (the file is corrupt)")
    step = document.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise LensFileError(f"{path}: step {step!r:.40} is not an integer >= 0")
    match = _NAME.match(path.name)
    if match and int(match.group(1)) != step:
        raise LensFileError(f"{path}: holds step {step}, but its name says {match.group(1)}")


def read_checkpoint(path: str | os.PathLike[str]) -> Snapshot:
    """Read one snapshot file (one read), verifying its checksum and tensor list.

    Raises:
        LensFileError: a foreign, damaged or incomplete file (a ``ValueError``), named.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise LensFileError(f"cannot read checkpoint {path}: {err}") from err
    tensors, document, checksum = _parse(data, path)
    _check_integrity(path, tensors, document, checksum)
    lens_state = {k[5:]: v for k, v in tensors.items() if k.startswith("lens.")}
    optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    try:
        optimizer_state = _join_optimizer_state(optim_tensors, document["optimizer"])
        extra = document["extra"]
        if not isinstance(extra, dict):
            raise TypeError("extra is not a JSON object")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise LensFileError(f"{path}: malformed checkpoint document: {err!s:.200}") from err
    return Snapshot(
        step=document["step"],
        lens_state=lens_state,
        optimizer_state=optimizer_state,
        extra=extra,
        format_version=document["format_version"],
    )


def latest_checkpoint(
    folder: str | os.PathLike[str],
    accept: Callable[[Snapshot], str | None] | None = None,
) -> Snapshot | None:
    """The newest readable (and accepted) snapshot in ``folder``, or ``None``.

    A damaged newest file (which atomic writes should make impossible, but disks fail) or one
    that ``accept`` refuses (it returns the reason) is skipped with a warning in favour of the
    one before it.

    Args:
        folder: The checkpoint folder.
        accept: Returns ``None`` for a usable snapshot, else why it cannot be used; it may also
            raise to stop the search (a snapshot of another run).
    """
    refused = 0
    for _, path in reversed(list_checkpoints(folder)):
        try:
            snapshot = read_checkpoint(path)
        except (OSError, ValueError) as err:
            logger.warning("skipping unreadable checkpoint %s: %s", path, err)
            refused += 1
            continue
        reason = accept(snapshot) if accept is not None else None
        if reason is None:
            return snapshot
        logger.warning("refusing checkpoint %s: %s; trying the one before it", path, reason)
        refused += 1
    if refused:
        logger.warning(
            "no usable checkpoint in %s (%d refused); starting from step 0", folder, refused
        )
    return None


# -- what a resumed run checks --------------------------------------------------------------------


def _blake2b_of(tensor: torch.Tensor, rows_per_block: int = 4096) -> str:
    """A content hash of ``tensor`` (as float32 for floating types), a block of rows at a time."""
    digest = hashlib.blake2b(f"{list(tensor.shape)}".encode(), digest_size=16)
    flat = tensor.detach().reshape(tensor.shape[0], -1) if tensor.dim() else tensor.reshape(1, 1)
    for start in range(0, flat.shape[0], rows_per_block):
        block = flat[start : start + rows_per_block].cpu()
        block = block.float() if block.is_floating_point() else block
        digest.update(block.contiguous().view(torch.uint8).numpy().data)
    return digest.hexdigest()


def model_and_data_fingerprint(
    model: torch.nn.Module, unembedding: torch.Tensor, input_ids: torch.Tensor
) -> dict[str, Any]:
    """The identity of the model (name, revision, a content hash of the unembedding) and of the
    training data (a content hash of the packed token ids), for a run's fingerprint."""
    config = getattr(model, "config", None)
    name = str(getattr(config, "name_or_path", "") or "")
    if name and os.path.isdir(name):
        name = str(Path(name).resolve())
    return {
        "model_name": name,
        "model_revision": getattr(config, "_commit_hash", None),
        "unembedding_hash": _blake2b_of(unembedding),
        "data_hash": _blake2b_of(input_ids),
    }


def _optimizer_problem(
    state: dict[str, Any], optimizer: torch.optim.Optimizer, stateful: bool
) -> str | None:
    groups = [len(g["params"]) for g in optimizer.state_dict()["param_groups"]]
    saved_groups = [len(g.get("params", ())) for g in state.get("param_groups", ())]
    if saved_groups != groups:
        return f"optimiser parameter groups {saved_groups} do not match the run's {groups}"
    entries = state.get("state", {})
    if not stateful:
        return None
    keys = [frozenset(entries.get(i, {})) for i in range(sum(groups))]
    # Parameters of one kind (matrices, vectors) carry the same entries; kinds may differ
    # (the whitened optimiser keeps its preconditioner beside the matrices' momentum only).
    dims = [p.dim() for g in optimizer.param_groups for p in g["params"]]
    kinds = {dim: {k for k, d in zip(keys, dims) if d == dim} for dim in set(dims)}
    if len(entries) != sum(groups) or not all(keys) or any(len(v) != 1 for v in kinds.values()):
        return (
            f"incomplete optimiser state: {len(entries)} of {sum(groups)} parameters have one "
            "(a resumed run would restart its momentum)"
        )
    return None


def snapshot_problem(
    snapshot: Snapshot,
    *,
    translators: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    stateful_optimizer: bool,
    num_steps: int,
) -> str | None:
    """Why ``snapshot`` cannot resume this run (``None`` if it can): a step out of range, lens
    parameters of other names or shapes, or incomplete optimiser state."""
    if not 1 <= snapshot.step <= num_steps:
        return f"step {snapshot.step} is out of range for a run of {num_steps} steps"
    want = {k: tuple(v.shape) for k, v in translators.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in snapshot.lens_state.items()}
    if got != want:
        return "its lens parameters do not match the lens (names or shapes differ)"
    return _optimizer_problem(snapshot.optimizer_state, optimizer, stateful_optimizer)
