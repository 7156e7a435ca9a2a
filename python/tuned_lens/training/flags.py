"""The one mapping from parsed ``train`` / ``eval`` flags to the engine's inputs.

:mod:`tuned_lens.__main__` hands it the parsed command line, and the original's
configuration dataclasses (:mod:`tuned_lens.training.original_api`) a namespace with the same
names, so both build the same :class:`ModelSpec`, :class:`DataSpec`, :class:`DistSpec`,
:class:`TrainConfig` and :class:`EvalConfig`.
"""

from __future__ import annotations

import argparse
import logging

from tuned_lens.errors import InvalidInputError
from tuned_lens.training.commands import DistSpec
from tuned_lens.training.eval_loop import EvalConfig
from tuned_lens.training.ingredients import DataSpec, ModelSpec
from tuned_lens.training.optim import OptimizerConfig
from tuned_lens.training.train_config import TrainConfig

__all__ = ["checked_eval_batch", "eval_config", "specs", "train_config"]


def specs(args: argparse.Namespace) -> tuple[ModelSpec, DataSpec, DistSpec]:
    """What to load: the model, the documents and the devices.

    Args:
        args: the parsed flags (``model_name``, ``data_name``, ``precision``, ``fsdp``, …).

    Returns:
        The model, data and distribution specifications.
    """
    model_spec = ModelSpec(
        name=args.model_name,
        precision=args.precision,
        revision=args.model_revision,
        tokenizer=args.tokenizer,
        slow_tokenizer=args.slow_tokenizer,
    )
    data_spec = DataSpec(
        name=list(args.data_name),
        split=args.split,
        text_column=args.text_column,
        revision=args.data_revision,
        max_seq_len=args.max_seq_len,
        dataset_shuffle=args.dataset_shuffle,
        dataset_shuffle_seed=args.dataset_shuffle_seed,
    )
    dist_spec = DistSpec(
        fsdp=args.fsdp,
        cpu_offload=args.cpu_offload,
        nccl_timeout=args.nccl_timeout,
        device=args.device,
    )
    return model_spec, data_spec, dist_spec


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The training settings of ``tuned-lens train``'s flags (warns that ``zero`` does nothing).

    Args:
        args: the parsed ``train`` flags.

    Returns:
        The validated :class:`TrainConfig`.
    """
    if args.zero:
        logging.getLogger(__name__).warning(
            "--zero has no effect: lens optimiser state is small and replicated"
        )
    return TrainConfig(
        num_steps=args.num_steps,
        tokens_per_step=args.tokens_per_step,
        per_gpu_batch_size=1 if args.per_gpu_batch_size is None else args.per_gpu_batch_size,
        loss=args.loss,
        token_shift=args.token_shift,
        optimizer=OptimizerConfig(
            optimizer=args.optimizer,
            lr_scale=args.lr_scale,
            momentum=args.momentum,
            weight_decay=args.weight_decay,
            warmup_steps=args.warmup_steps,
        ),
        bias_only=args.bias_only,
        checkpoint_freq=args.checkpoint_freq,
        checkpoint_dir=args.checkpoint_dir,
        seed=args.seed,
        dataloader_shuffle=args.dataloader_shuffle,
        wandb=args.wandb,
        progress=args.progress,
        rank=args.rank,
        init=args.init,
        init_tokens=args.init_tokens,
        recipe=args.recipe,
        fused_loss=args.fused_loss,
        loss_chunk_size=args.loss_chunk_size,
    )


def checked_eval_batch(args: argparse.Namespace) -> int | None:
    """``eval``'s micro-batch: ``--dist.per_gpu_batch_size`` or its alias ``--per_gpu_batch_size``.

    Args:
        args: the parsed ``eval`` flags (``per_gpu_batch_size``, ``eval_batch_alias``).

    Returns:
        The one that was given, or ``None`` when neither was.

    Raises:
        InvalidInputError: both were given and disagree, or one is below 1.
    """
    a, b = args.per_gpu_batch_size, args.eval_batch_alias
    if a is not None and b is not None and a != b:
        raise InvalidInputError(
            f"--per_gpu_batch_size {b} and --dist.per_gpu_batch_size {a} disagree; they are the "
            "same setting, pass one"
        )
    # Each flag is checked on its own, so the message spells the one that was typed.
    for flag, value in (("--dist.per_gpu_batch_size", a), ("--per_gpu_batch_size", b)):
        if value is not None and value < 1:
            raise InvalidInputError(f"{flag} must be >= 1, got {value}")
    return a if a is not None else b


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The evaluation settings of ``tuned-lens eval``'s flags (micro-batch 1 unless given).

    Args:
        args: the parsed ``eval`` flags.

    Returns:
        The :class:`EvalConfig`.

    Raises:
        InvalidInputError: see :func:`checked_eval_batch`.
    """
    batch = checked_eval_batch(args)
    return EvalConfig(
        tokens=args.tokens,
        per_gpu_batch_size=1 if batch is None else batch,
        token_shift=args.token_shift,
        layer_transfer=args.layer_transfer,
        record_logit_stats=args.record_logit_stats,
        seed=args.seed,
        dataloader_shuffle=args.dataloader_shuffle,
        progress=args.progress,
    )
