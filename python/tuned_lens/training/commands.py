"""The ``train`` and ``eval`` commands: load everything, run the loop, write the results."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuned_lens._atomic import write_json_atomically
from tuned_lens.errors import InvalidInputError, TunedLensError
from tuned_lens.training.eval_loop import EvalConfig, EvalResult, evaluate_lenses, write_outputs
from tuned_lens.training.ingredients import (
    DataSpec,
    DistContext,
    ModelSpec,
    init_distributed,
    shard_model_fsdp,
)
from tuned_lens.training.train_loop import TrainConfig, TrainResult, require_wandb, train_lens

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuned_lens.data import PackedChunks
    from tuned_lens.nn.lenses import Lens

logger = logging.getLogger(__name__)


@dataclass
class DistSpec:
    """``--fsdp``, ``--cpu_offload``, ``--nccl_timeout``, ``--device``."""

    fsdp: bool = False
    cpu_offload: bool = False
    nccl_timeout: int = 1200
    device: str | None = None

    def __post_init__(self) -> None:
        if self.cpu_offload and not self.fsdp:
            raise InvalidInputError("cpu_offload needs FSDP sharding", option="cpu_offload")
        if self.nccl_timeout < 1:
            raise InvalidInputError(
                f"nccl_timeout must be >= 1 second, got {self.nccl_timeout}", option="nccl_timeout"
            )


def check_writable_folder(path: Path, option: str) -> None:
    """Refuse an output folder that cannot be created or written to, before any work is done.

    The nearest existing folder on the way to ``path`` (``path`` itself when it exists) must be
    a folder in which a file can be created: a probe file is created and removed again, which
    also catches read-only mounts and folders that permissions alone do not describe.

    Args:
        path: The folder a command will write (created later if missing).
        option: The Python name of the option that named it, for the message.

    Raises:
        InvalidInputError: ``path`` or a parent is a file, or the folder cannot be written.
    """
    existing = path
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file, not a folder" if existing == path else f"is below a file ({existing})"
        raise InvalidInputError(f"{option} {path} {what}", option=option)
    try:
        handle, probe = tempfile.mkstemp(prefix=".tuned-lens-write-probe-", dir=existing)
    except OSError as err:
        raise InvalidInputError(
            f"{option} {path} cannot be written: {err.strerror} ({existing})", option=option
        ) from err
    os.close(handle)
    os.unlink(probe)


def _load(
    model_spec: ModelSpec, dist_spec: DistSpec, ctx: DistContext
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model and tokenizer (the primary process first, so it fills the cache).

    Raises:
        InvalidInputError: int8 with FSDP, or a model name that cannot be loaded.
    """
    if dist_spec.fsdp and model_spec.precision.lower() == "int8":
        raise InvalidInputError(
            "precision int8 cannot be combined with FSDP sharding", option="precision"
        )
    # The primary process may convert/download first; the others then read the cache.
    if not ctx.primary:
        ctx.barrier()
    try:
        model, tokenizer = model_spec.load(ctx.device, place_on_device=not dist_spec.fsdp)
    except TunedLensError:
        raise
    except (OSError, ValueError) as err:  # transformers: not found, not cached, unknown type
        raise InvalidInputError(
            f"cannot load model_name {model_spec.name!r}: {err}", option="model_name"
        ) from err
    if ctx.primary:
        ctx.barrier()
    return model, tokenizer


def run_train(
    *,
    model_spec: ModelSpec,
    data_spec: DataSpec,
    config: TrainConfig,
    output: Path,
    lens_name_or_path: str | None = None,
    dist_spec: DistSpec | None = None,
) -> TrainResult:
    """Train a tuned lens and save it to ``output`` (``config.json`` + ``params.safetensors``).

    Raises:
        InvalidInputError: ``output`` or ``checkpoint_dir`` cannot be written (checked before
            the model loads), or the data cannot be read.
        NotEnoughDataError: the data cannot feed ``num_steps`` steps (before any training).
    """
    from tuned_lens.nn import TunedLens

    dist_spec = dist_spec or DistSpec()
    if config.wandb is not None:
        require_wandb()
    ctx = init_distributed(device=dist_spec.device, timeout_s=dist_spec.nccl_timeout)
    try:
        check_writable_folder(output, "output")
        if config.checkpoint_dir is None and config.checkpoint_freq is not None:
            config.checkpoint_dir = output / "checkpoints"
        elif config.checkpoint_dir is not None:
            check_writable_folder(config.checkpoint_dir, "checkpoint_dir")
        docs = data_spec.read()
        model, tokenizer = _load(model_spec, dist_spec, ctx)
        chunks = data_spec.pack(docs, tokenizer)
        if ctx.primary:
            logger.info(
                "data: %d documents, %d chunks of %d tokens; %.4f bits per byte per nat",
                chunks.num_documents,
                len(chunks),
                chunks.chunk_len,
                chunks.nats_to_bpb,
            )
        if lens_name_or_path is not None:
            lens = TunedLens.from_model_and_pretrained(model, lens_name_or_path)
        else:
            lens = TunedLens.from_model(model, model_revision=model_spec.revision, rank=config.rank)
        if config.rank is not None and lens.config.rank != config.rank:
            raise InvalidInputError(
                f"rank {config.rank} differs from the rank {lens.config.rank} of the lens "
                f"{lens_name_or_path!r} to warm-start from",
                option="rank",
            )
        frozen: torch.nn.Module = model
        if dist_spec.fsdp:
            # After the lens copied the unembedding, so it holds plain tensors.
            frozen = shard_model_fsdp(model, cpu_offload=dist_spec.cpu_offload)
        result = train_lens(frozen, lens, chunks, config, ctx=ctx)
        if ctx.primary:
            record = _training_provenance(model, model_spec, data_spec, config, result, chunks)
            lens.save_pretrained(output, provenance=record)
            summary = {
                "final_step_loss_nats": result.losses[-1] if result.losses else None,
                "start_step": result.start_step,
                "num_steps": config.num_steps,
                "nats_to_bpb": chunks.nats_to_bpb,
            }
            write_json_atomically(output / "training_summary.json", summary)
            logger.info("saved the lens to %s", output)
        ctx.barrier()
        return result
    finally:
        ctx.close()


def run_eval(
    *,
    model_spec: ModelSpec,
    data_spec: DataSpec,
    config: EvalConfig,
    output: Path,
    lens_name: str | None = None,
    logit: bool = True,
    dist_spec: DistSpec | None = None,
) -> EvalResult:
    """Evaluate the logit lens and/or a tuned lens and write the result files to ``output``.

    Raises:
        InvalidInputError: ``output`` cannot be written (checked before the model loads), or
            the data cannot be read.
    """
    from tuned_lens.nn import LogitLens, TunedLens

    if lens_name is None and not logit:
        raise InvalidInputError(
            "nothing to evaluate: pass a tuned lens (lens_name) or ask for the logit lens",
            option="lens_name",
        )
    dist_spec = dist_spec or DistSpec()
    ctx = init_distributed(device=dist_spec.device, timeout_s=dist_spec.nccl_timeout)
    try:
        check_writable_folder(output, "output")
        annotate = _lens_folder_to_annotate(lens_name)  # a corrupt provenance fails here
        docs = data_spec.read()
        model, tokenizer = _load(model_spec, dist_spec, ctx)
        chunks = data_spec.pack(docs, tokenizer)
        lenses: dict[str, Lens] = {}
        if logit:
            lenses["logit"] = LogitLens.from_model(model)
        if lens_name is not None:
            lenses["tuned"] = TunedLens.from_model_and_pretrained(model, lens_name)
        frozen: torch.nn.Module = model
        if dist_spec.fsdp:
            frozen = shard_model_fsdp(model, cpu_offload=dist_spec.cpu_offload)
        result = evaluate_lenses(frozen, lenses, chunks, config, ctx=ctx)
        if ctx.primary:
            written = write_outputs(result, output)
            logger.info("wrote %s", ", ".join(str(p) for p in written.values()))
            if annotate is not None:
                _record_evaluation(annotate, result, data_spec, len(chunks))
        ctx.barrier()
        return result
    finally:
        ctx.close()


def _corpus(data_spec: DataSpec, **sizes: int) -> dict[str, Any]:
    from tuned_lens.model_card import corpus_record

    return corpus_record(
        data_spec.name,
        split=data_spec.split,
        revision=data_spec.revision,
        text_column=data_spec.text_column,
        max_seq_len=data_spec.max_seq_len,
        **sizes,
    )


def _training_provenance(
    model: torch.nn.Module,
    model_spec: ModelSpec,
    data_spec: DataSpec,
    config: TrainConfig,
    result: TrainResult,
    chunks: PackedChunks,
) -> dict[str, Any]:
    """What ``provenance.json`` records about a training run (see :mod:`tuned_lens.model_card`)."""
    from tuned_lens.model_card import new_provenance, package_versions

    model_config = getattr(model, "config", None)
    recipe = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return new_provenance(
        {
            "command": list(sys.argv),
            "base_model": {
                "name": model_spec.name,
                "name_or_path": getattr(model_config, "name_or_path", None),
                "revision": model_spec.revision,
                "commit": getattr(model_config, "_commit_hash", None),
                "precision": model_spec.precision,
            },
            "corpus": _corpus(
                data_spec,
                documents=chunks.num_documents,
                chunks=len(chunks),
                chunk_len=chunks.chunk_len,
            ),
            "tokens_seen": config.num_steps * config.tokens_per_step,
            "steps_run": len(result.losses),
            "start_step": result.start_step,
            "recipe": recipe,
            "final_train_loss_per_layer": result.losses[-1] if result.losses else None,
            "held_out_kl_per_layer": None,  # ``tuned-lens eval -l`` adds held-out metrics
            "nats_to_bpb": chunks.nats_to_bpb,
            "packages": package_versions(),
        }
    )


def _lens_folder_to_annotate(lens_name: str | None) -> Path | None:
    """The local lens folder whose card and provenance ``eval`` updates, checked now.

    ``None`` for a Hub id, a folder in the Hugging Face cache (its files are links into the
    cache) and a folder this process cannot write.

    Raises:
        LensFileError: The folder's ``provenance.json`` is corrupt (before any work is done).
    """
    from tuned_lens.model_card import read_provenance

    if lens_name is None or not Path(lens_name).expanduser().is_dir():
        return None
    folder = Path(lens_name).expanduser()
    if any(p.is_symlink() for p in folder.iterdir()) or not os.access(folder, os.W_OK):
        logger.info("not adding the metrics to %s (read-only or a Hub cache snapshot)", folder)
        return None
    read_provenance(folder)
    return folder


def _record_evaluation(folder: Path, result: EvalResult, data_spec: DataSpec, chunks: int) -> None:
    from tuned_lens.model_card import evaluation_record, record_evaluation

    evaluation = evaluation_record(
        result.aggregate, corpus=_corpus(data_spec, chunks=chunks), tokens=result.tokens
    )
    record_evaluation(folder, evaluation)
    logger.info("added the held-out metrics to %s", folder)
