"""Setting up (optionally distributed) devices, and what the CLI asks to load.

Models and tokenizers load through :mod:`tuned_lens.model_loading` (re-exported here under
their earlier names), the Hub's offline switch is :func:`tuned_lens.hub.hub_offline`.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from tuned_lens.errors import InvalidInputError, MissingDependencyError
from tuned_lens.hub import hub_offline
from tuned_lens.model_loading import PRECISIONS, load_model, load_tokenizer, resolve_dtype
from tuned_lens.training.original_api import Data, Distributed, Model, Optimizer, OptimizerOption

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuned_lens.data import PackedChunks

__all__ = [
    "Data",
    "Distributed",
    "Model",
    "Optimizer",
    "OptimizerOption",
    "PRECISIONS",
    "DataSpec",
    "DistContext",
    "ModelSpec",
    "decoder_blocks",
    "hub_offline",
    "init_distributed",
    "load_model",
    "parse_device",
    "load_tokenizer",
    "resolve_dtype",
    "shard_model_fsdp",
    "tune_cpu_allocator",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Distributed set-up
# ----------------------------------------------------------------------------------------------


@dataclass
class DistContext:
    """Rank, world size and device of this process.

    The process group exists only when the launcher (torchrun) set ``WORLD_SIZE`` > 1 (or
    ``LOCAL_RANK``). The backend is NCCL with CUDA and gloo on the CPU.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Average ``tensor`` over ranks in place (a no-op in a single process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            tensor.div_(self.world_size)
        return tensor

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def close(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialised_here = False


def parse_device(device: str) -> torch.device:
    """The torch device ``--device`` names, refused unless this machine has it.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or another torch device type whose
            backend reports itself available, such as ``"mps"``).

    Returns:
        The device.

    Raises:
        InvalidInputError: Not a device string, a device without data (``meta``), a backend
            this machine lacks, or a CUDA index beyond its devices.
    """
    text = device.strip()
    kind, _, index_text = text.partition(":")
    try:
        parsed = torch.device(kind)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.index is not None or (index_text and not index_text.isdigit()):
        raise InvalidInputError(
            f"device {device!r} is not a device; use cpu, cuda or cuda:N", option="device"
        )
    index = int(index_text) if index_text else None
    if parsed.type == "cpu":  # the CPU is one device, whatever its index says
        return parsed
    backend = getattr(torch, parsed.type, None)
    available = getattr(backend, "is_available", None)
    if not callable(available):  # meta, lazy, ...: nothing a lens can run on
        raise InvalidInputError(
            f"device {device!r} cannot run a model here; use cpu, cuda or cuda:N", option="device"
        )
    if not available():
        raise InvalidInputError(
            f"device {device!r} is not available on this machine (no {parsed.type} backend)",
            option="device",
        )
    if parsed.type == "cuda" and index is not None and index >= torch.cuda.device_count():
        raise InvalidInputError(
            f"device {device!r} does not exist: this machine has "
            f"{torch.cuda.device_count()} CUDA device(s)",
            option="device",
        )
    return torch.device(parsed.type, index) if index is not None else parsed


def init_distributed(*, device: str | None = None, timeout_s: int = 1200) -> DistContext:
    """Join the process group when launched by torchrun; pick the device.

    Args:
        device: ``"cpu"``/``"cuda"``/``"cuda:1"``; default CUDA when available, else the CPU.
        timeout_s: process-group timeout (``--nccl_timeout``).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    rank = int(os.environ.get("RANK", str(local_rank)))
    asked = None if device is None else parse_device(device)
    want_cuda = torch.cuda.is_available() if asked is None else asked.type == "cuda"
    if want_cuda:
        if asked is not None and asked.index is not None:
            dev = asked
        else:
            dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(dev)
    else:
        dev = asked or torch.device("cpu")
    ctx = DistContext(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)
    launched = "LOCAL_RANK" in os.environ or world_size > 1
    if launched and world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"timeout": datetime.timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(backend=backend, **kwargs)
        ctx.initialised_here = True
        logger.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, dev)
    return ctx


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's decoder blocks (``model_surgery.get_transformer_layers`` when present)."""
    try:
        from tuned_lens.model_surgery import get_transformer_layers
    except ImportError:
        from tuned_lens.architectures import resolve_architecture

        return resolve_architecture(model).layers
    return get_transformer_layers(model)[1]


def shard_model_fsdp(model: torch.nn.Module, *, cpu_offload: bool = False) -> torch.nn.Module:
    """Shard the frozen model over the process group with FSDP2 (one unit per decoder block).

    Call this after the lens has copied the unembedding, so that the lens holds ordinary tensors.
    """
    try:
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard
    except ImportError:  # torch < 2.6: FSDP2 has a private name there and needs CUDA
        first = next(model.parameters(), None)
        if first is None or first.device.type == "cpu":
            raise MissingDependencyError(
                f"--fsdp on CPU (gloo) needs torch >= 2.6; this is torch {torch.__version__}: "
                "shard on CUDA, upgrade torch, or leave out --fsdp"
            ) from None
        from torch.distributed._composable.fsdp import (
            CPUOffloadPolicy,
            OffloadPolicy,
            fully_shard,
        )

    if not dist.is_initialized():
        raise InvalidInputError(
            "fsdp needs a distributed launch (torchrun --nproc-per-node N ...)", option="fsdp"
        )
    policy: OffloadPolicy = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    layers = decoder_blocks(model)
    for block in layers:
        fully_shard(block, offload_policy=policy)
    fully_shard(model, offload_policy=policy)
    return model


# ----------------------------------------------------------------------------------------------
# What the CLI asks to load
# ----------------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """``--model.name``, ``--precision``, ``--model.revision``, tokenizer overrides."""

    name: str
    precision: str = "auto"
    revision: str | None = None
    tokenizer: str | None = None
    slow_tokenizer: bool = False

    def resolved_name(self) -> str:
        """Local folder for the bundled aliases (``glassllm``, ``smollm2``), else ``name``."""
        try:
            from tuned_lens.assets import resolve_model
        except ImportError:  # pragma: no cover - assets module absent
            return self.name
        return resolve_model(self.name)

    def load(
        self, device: torch.device, *, place_on_device: bool = True
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load the frozen model (eval mode) and its tokenizer, cache-only when offline."""
        name = self.resolved_name()
        tokenizer = load_tokenizer(
            name,
            revision=self.revision,
            tokenizer=self.tokenizer,
            slow_tokenizer=self.slow_tokenizer,
        )
        model = load_model(
            name,
            device=device,
            precision=self.precision,
            revision=self.revision,
            place_on_device=place_on_device,
        )
        return model, tokenizer


@dataclass
class DataSpec:
    """``--data.name`` and friends: which documents, and how they are packed."""

    name: list[str]
    split: str = "validation"
    text_column: str = "text"
    revision: str | None = None
    max_seq_len: int = 2048
    dataset_shuffle: bool = False
    dataset_shuffle_seed: int = 42

    def read(self) -> list[str]:
        """Read the documents, shuffled when asked (no tokenizer needed, so the commands read
        them before loading a model: a bad data file fails in seconds)."""
        from tuned_lens.data import load_documents, shuffle_documents

        docs = load_documents(
            self.name, split=self.split, text_column=self.text_column, revision=self.revision
        )
        if self.dataset_shuffle:
            docs = shuffle_documents(docs, seed=self.dataset_shuffle_seed)
        return docs

    def pack(self, docs: list[str], tokenizer: PreTrainedTokenizerBase) -> PackedChunks:
        """Tokenise and pack documents from :meth:`read`."""
        from tuned_lens.data import pack_documents

        return pack_documents(docs, tokenizer, max_seq_len=self.max_seq_len)

    def load(self, tokenizer: PreTrainedTokenizerBase) -> PackedChunks:
        """Read, optionally shuffle, tokenise and pack the documents."""
        return self.pack(self.read(), tokenizer)


def tune_cpu_allocator() -> bool:
    """Let glibc reuse freed heap memory for large tensors instead of unmapping it.

    Training and evaluation allocate several vocabulary-sized temporaries per layer. By default
    glibc serves each with a fresh ``mmap`` and gives it back on free, so every allocation pays
    first-touch page faults again (1.7–2.6 µs per 4 KiB page on the project's machines). Raising
    the mmap and trim thresholds keeps those pages in the heap: 25–40% faster lens steps on the
    CPU in a side-by-side test. Process-wide, so only the command-line entry points call it.

    Returns:
        Whether the thresholds were changed (False off glibc, or with
        ``TUNED_LENS_KEEP_MALLOC=1``).
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("TUNED_LENS_KEEP_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_mmap_threshold, 1 << 30) == 1
    ok = mallopt(m_trim_threshold, 1 << 31) == 1 and ok
    return ok
