"""Resumable training snapshots: safetensors for tensors, JSON for everything else.

A snapshot is one file ``checkpoint_<step>.safetensors`` holding the lens parameters
(``lens.<name>``), the optimiser state tensors (``optim.<param index>.<key>``) and, in the
safetensors metadata, a JSON document with the step, the data position, the optimiser's
non-tensor state and the run settings. Nothing is ever unpickled.

Writes are atomic: the bytes go to a temporary file in the same folder, which is fsync'ed and
then renamed over the final name with ``os.replace`` (and the folder is fsync'ed), so a process
killed at any moment leaves either the previous snapshots or the new one, never a torn file.
The two newest snapshots are kept.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from tuned_lens._atomic import write_bytes_atomically
from tuned_lens.errors import LensFileError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
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
    """

    step: int
    lens_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    extra: dict[str, Any]


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
    """
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
    }
    payload = save_safetensors_bytes(tensors, metadata={"tuned_lens": json.dumps(document)})
    final = checkpoint_path(folder, step)
    write_bytes_atomically(final, payload, durable=True)
    for _, old in list_checkpoints(folder)[:-keep_last]:
        old.unlink(missing_ok=True)
    return final


def read_checkpoint(path: str | os.PathLike[str]) -> Snapshot:
    """Read one snapshot file.

    Raises:
        LensFileError: a foreign or damaged file (a ``ValueError``).
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        # The metadata sits in the JSON header; parse it ourselves to stay version-agnostic.
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        document = json.loads(header["__metadata__"]["tuned_lens"])
    except (SafetensorError, KeyError, ValueError) as err:
        raise LensFileError(f"{path} is not a tuned-lens checkpoint: {err}") from err
    if document.get("format_version") != FORMAT_VERSION:
        raise LensFileError(
            f"{path}: unsupported checkpoint format {document.get('format_version')}"
        )
    lens_state = {k[5:]: v for k, v in tensors.items() if k.startswith("lens.")}
    optim_tensors = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    return Snapshot(
        step=int(document["step"]),
        lens_state=lens_state,
        optimizer_state=_join_optimizer_state(optim_tensors, document["optimizer"]),
        extra=document["extra"],
    )


def latest_checkpoint(folder: str | os.PathLike[str]) -> Snapshot | None:
    """The newest readable snapshot in ``folder``, or ``None``.

    A damaged newest file (which atomic writes should make impossible, but disks fail) is
    skipped with a warning in favour of the one before it.
    """
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return read_checkpoint(path)
        except (OSError, ValueError) as err:
            logger.warning("skipping unreadable checkpoint %s: %s", path, err)
    return None
