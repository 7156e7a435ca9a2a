"""The lens training loop: distil the model's final distribution into every layer's lens.

One optimiser step consumes ``tokens_per_step`` tokens, split into micro-batches of
``per_gpu_batch_size`` chunks on each of ``world_size`` processes (gradient accumulation). For
each micro-batch the frozen model runs once under ``no_grad`` with ``output_hidden_states``; then
each layer's lens loss is computed and back-propagated on its own, so only one layer's
vocabulary-sized activations are alive at a time. Gradients are averaged over processes once per
step (one all-reduce of the flattened lens gradient, which is what DDP would do; DDP's
per-backward hooks do not fit a per-layer backward), clipped to a global norm of 1.0, and the
optimiser steps.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from tuned_lens.data import ChunkSampler, PackedChunks
from tuned_lens.errors import InvalidInputError, NotEnoughDataError
from tuned_lens.training.checkpoint import (
    Snapshot,
    latest_checkpoint,
    model_and_data_fingerprint,
    remove_stale_temporaries,
    save_checkpoint,
    snapshot_problem,
)
from tuned_lens.training.fused_loss import lens_state
from tuned_lens.training.ingredients import DistContext
from tuned_lens.training.init import (
    fit_least_squares_translators,
    prepare_lens_for_training,
    trainable_translators,
)
from tuned_lens.training.lens_loss import autocast_for, fused_head_for, layer_losses, model_dtype
from tuned_lens.training.optim import LinearWarmupDecay
from tuned_lens.training.original_api import LossChoice, Train
from tuned_lens.training.reporting import (
    WANDB_MISSING,
    WandbLogger,
    progress_bar,
    report_step,
    require_wandb,
)
from tuned_lens.training.train_config import LOSSES, TrainConfig, TrainResult
from tuned_lens.training.whitened import install_preconditioners

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.nn.lenses import Lens

logger = logging.getLogger(__name__)

GRAD_CLIP_NORM = 1.0

__all__ = [
    "LossChoice",
    "Train",
    "GRAD_CLIP_NORM",
    "LOSSES",
    "WANDB_MISSING",
    "TrainConfig",
    "TrainResult",
    "layer_losses",
    "plan_steps",
    "prepare_lens_for_training",
    "require_wandb",
    "train_lens",
    "trainable_translators",
]

# Earlier private names, still used by code written against them.
_autocast = autocast_for
_model_dtype = model_dtype
_WandbLogger = WandbLogger


def _average_gradients(params: list[torch.nn.Parameter], ctx: DistContext) -> None:
    if not ctx.distributed:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    ctx.all_reduce_mean_(flat)
    offset = 0
    for param, grad in zip(params, grads):
        n = grad.numel()
        grad.copy_(flat[offset : offset + n].view_as(grad))
        if param.grad is None:
            param.grad = grad
        offset += n


def plan_steps(
    chunks: PackedChunks, config: TrainConfig, ctx: DistContext
) -> tuple[ChunkSampler, int]:
    """Check that the data suffices for the run, before any work starts.

    Returns:
        The sampler and the chunks (samples) per optimiser step over all processes.

    Raises:
        InvalidInputError: ``tokens_per_step`` is not a multiple of the chunk length.
        NotEnoughDataError: the data holds fewer chunks than ``num_steps`` steps need.
    """
    chunk_len = chunks.chunk_len
    if config.tokens_per_step % chunk_len:
        raise InvalidInputError(
            f"tokens_per_step {config.tokens_per_step} must be a multiple of the chunk length "
            f"{chunk_len} (the smaller of the maximum sequence length and the tokenizer's "
            "model_max_length)",
            option="tokens_per_step",
        )
    samples_per_step = config.tokens_per_step // chunk_len
    sampler = ChunkSampler(
        len(chunks),
        micro_batch_size=config.per_gpu_batch_size,
        world_size=ctx.world_size,
        rank=ctx.rank,
        seed=config.seed,
        shuffle=config.dataloader_shuffle,
    )
    consumed = sampler.samples_consumed_per_step(samples_per_step)
    if consumed != samples_per_step:
        logger.warning(
            "%d chunks per step do not split into micro-batches of %d on %d process(es); "
            "using %d chunks (%d tokens) per step",
            samples_per_step,
            config.per_gpu_batch_size,
            ctx.world_size,
            consumed,
            consumed * chunk_len,
        )
    available = sampler.steps_available(samples_per_step)
    if available < config.num_steps:
        raise NotEnoughDataError(
            f"Can only take {available} steps on this data set: it holds {len(chunks)} chunks of "
            f"{chunk_len} tokens ({len(chunks) * chunk_len} tokens) and each step uses "
            f"{consumed} chunks, but num_steps is {config.num_steps}. Take fewer steps or fewer "
            "tokens per step, or use more data.",
            option="num_steps",
        )
    return sampler, samples_per_step


def _run_fingerprint(
    chunks: PackedChunks, config: TrainConfig, sampler: ChunkSampler, samples_per_step: int
) -> dict[str, Any]:
    """Settings a resumed run must share with the run that wrote the checkpoint."""
    return {
        "num_chunks": len(chunks),
        "chunk_len": chunks.chunk_len,
        "samples_per_step": sampler.samples_consumed_per_step(samples_per_step),
        "seed": config.seed,
        "shuffle": config.dataloader_shuffle,
        "num_steps": config.num_steps,
        "loss": config.loss,
        "token_shift": config.resolved_token_shift,
        "optimizer": config.optimizer.optimizer,
        "lr_scale": config.optimizer.lr_scale,
        "momentum": config.optimizer.momentum,
        "weight_decay": config.optimizer.weight_decay,
        # The schedule is a pure function of the step, so these two are its whole state.
        "warmup_steps": config.optimizer.resolved_warmup(config.num_steps),
        "bias_only": config.bias_only,
        # Only when not the original's, so that older snapshots still resume.
        **({"init": config.init, "init_steps": config.init_steps} if config.init_steps else {}),
    }


@dataclass
class _Run:
    """Everything one training run works with, set up by :func:`_set_up_run`."""

    model: torch.nn.Module
    lens: Lens
    chunks: PackedChunks
    config: TrainConfig
    ctx: DistContext
    sampler: ChunkSampler
    samples_per_step: int
    fingerprint: dict[str, Any]
    params: list[torch.nn.Parameter]
    translators: torch.nn.ModuleList
    optimizer: torch.optim.Optimizer
    schedule: LinearWarmupDecay
    model_dtype: torch.dtype
    resumed: bool = False

    @property
    def micro_batches(self) -> int:
        return self.sampler.micro_batches_per_step(self.samples_per_step)

    @property
    def chunks_per_step(self) -> int:
        return self.sampler.samples_consumed_per_step(self.samples_per_step)


def _set_up_run(
    model: torch.nn.Module, lens: Lens, chunks: PackedChunks, config: TrainConfig, ctx: DistContext
) -> _Run:
    """Check the data, prepare the lens, build the optimiser and the schedule."""
    sampler, samples_per_step = plan_steps(chunks, config, ctx)
    params = prepare_lens_for_training(lens, device=ctx.device, bias_only=config.bias_only)
    return _Run(
        model=model,
        lens=lens,
        chunks=chunks,
        config=config,
        ctx=ctx,
        sampler=sampler,
        samples_per_step=samples_per_step,
        fingerprint={
            **_run_fingerprint(chunks, config, sampler, samples_per_step),
            **model_and_data_fingerprint(model, lens.unembed.unembedding.weight, chunks.input_ids),
        },
        params=params,
        translators=trainable_translators(lens),
        optimizer=config.optimizer.build(params),
        schedule=_schedule(config),
        model_dtype=model_dtype(model),
    )


def _schedule(config: TrainConfig) -> LinearWarmupDecay:
    """The learning-rate schedule over the gradient steps (after any least-squares fit)."""
    steps = max(1, config.num_steps - config.init_steps)
    warmup = config.optimizer.resolved_warmup(steps)
    return LinearWarmupDecay(steps, warmup, offset=config.init_steps)


def _resume_or_initialise(run: _Run) -> tuple[int, str | None]:
    """:func:`_resume`; without a snapshot, the least-squares fit when ``config.init`` asks.

    Returns:
        The step gradient training starts from and the W&B run id to continue.
    """
    start_step, wandb_id = _resume(run)
    run.resumed = start_step > 0
    if start_step == 0 and run.config.init_steps:
        sums = fit_least_squares_translators(
            run.model,
            run.lens,
            run.chunks,
            run.sampler,
            run.samples_per_step,
            steps=run.config.init_steps,
            ctx=run.ctx,
        )
        install_preconditioners(run.optimizer, sums)
        start_step = run.config.init_steps
    return start_step, wandb_id


def _check_snapshot(run: _Run, snapshot: Snapshot) -> str | None:
    """Why ``snapshot`` cannot resume ``run`` (``None``: it can).

    Raises:
        InvalidInputError: the snapshot comes from a run with other settings, model or data.
    """
    saved = snapshot.extra.get("fingerprint", {})
    if not isinstance(saved, dict):
        return "its run fingerprint is not a JSON object"
    # Format-1 snapshots predate the model and data fingerprint: compare what they have.
    wanted = {k: v for k, v in run.fingerprint.items() if snapshot.format_version > 1 or k in saved}
    diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
    if diff:
        raise InvalidInputError(
            f"the checkpoints in {run.config.checkpoint_dir} come from a run with other "
            f"settings, model or data (checkpoint vs now: {diff}); use another checkpoint_dir",
            option="checkpoint_dir",
        )
    optimizer = run.config.optimizer
    return snapshot_problem(
        snapshot,
        translators=run.translators,
        optimizer=run.optimizer,
        stateful_optimizer=optimizer.optimizer in ("ADAM", "WHITENED") or optimizer.momentum > 0,
        num_steps=run.config.num_steps,
    )


def _resume(run: _Run) -> tuple[int, str | None]:
    """Load the newest usable snapshot of ``config.checkpoint_dir`` into the lens and optimiser.

    Temporary files of killed checkpoint writers are removed first (primary process). A
    snapshot that is corrupt, incomplete or out of range is skipped with a warning in favour of
    the one before it.

    Returns:
        The step to start from and the W&B run id to continue (0 and ``None`` without one).

    Raises:
        InvalidInputError: the snapshot comes from a run with other settings, model or data.
    """
    folder = run.config.checkpoint_dir
    if folder is None:
        return 0, None
    if run.ctx.primary:
        remove_stale_temporaries(folder)
    snapshot = latest_checkpoint(folder, accept=lambda snap: _check_snapshot(run, snap))
    if snapshot is None:
        if run.ctx.primary:
            logger.info("no checkpoint in %s; starting from step 0", folder)
        return 0, None
    run.translators.load_state_dict(snapshot.lens_state)
    run.optimizer.load_state_dict(snapshot.optimizer_state)
    if run.ctx.primary:
        logger.info("resumed from step %d in %s", snapshot.step, folder)
    return snapshot.step, snapshot.extra.get("wandb_id")


def _accumulate_step(run: _Run, step: int) -> torch.Tensor:
    """Run every micro-batch of ``step``, back-propagating each layer's loss as it goes.

    Returns:
        The mean loss of each layer over the step's micro-batches, ``(num_layers,)`` float64
        (this process's share; not yet averaged over processes).
    """
    device = run.ctx.device
    num_layers = len(run.translators)
    micro_batches = run.micro_batches
    step_loss = torch.zeros(num_layers, dtype=torch.float64, device=device)
    for indices in run.sampler.step_indices(step, run.samples_per_step):
        input_ids = run.chunks.input_ids[indices].to(device)
        with torch.no_grad():
            output = run.model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
        hidden = output.hidden_states

        def lens_logits(layer: int, hidden: tuple[torch.Tensor, ...] = hidden) -> torch.Tensor:
            with autocast_for(device, run.model_dtype):
                return run.lens(hidden[layer], idx=layer)

        def lens_states(layer: int, hidden: tuple[torch.Tensor, ...] = hidden) -> torch.Tensor:
            with autocast_for(device, run.model_dtype):
                return lens_state(run.lens, hidden[layer], layer)

        values = layer_losses(
            output.logits,
            input_ids,
            lens_logits,
            num_layers,
            loss=run.config.loss,
            token_shift=run.config.resolved_token_shift,
            scale=1.0 / micro_batches,
            head=fused_head_for(run.lens, device, run.model_dtype),
            lens_state_fn=lens_states,
            fused=run.config.fused_loss,
            chunk_size=run.config.loss_chunk_size,
        )
        for layer, value in enumerate(values):
            step_loss[layer] += value.double() / micro_batches
        del output, hidden
    return step_loss


def _optimizer_step(run: _Run, step: int) -> list[float]:
    """One optimiser step: accumulate, average over processes, clip, step.

    Returns:
        Each layer's loss in nats at this step (averaged over processes).

    Raises:
        FloatingPointError: a layer's loss is not finite.
    """
    step_loss = _accumulate_step(run, step)
    _average_gradients(run.params, run.ctx)
    run.ctx.all_reduce_mean_(step_loss)
    torch.nn.utils.clip_grad_norm_(run.params, GRAD_CLIP_NORM)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=False)
    layer_values = step_loss.tolist()
    if not all(math.isfinite(v) for v in layer_values):
        raise FloatingPointError(f"non-finite lens loss at step {step}: {layer_values}")
    return layer_values


def _maybe_checkpoint(
    run: _Run, done: int, layer_values: list[float], wandb_id: str | None
) -> None:
    """Write a snapshot after step ``done`` when ``checkpoint_freq`` says so (primary only)."""
    config = run.config
    if config.checkpoint_dir is None or config.checkpoint_freq is None:
        return
    if done % config.checkpoint_freq:
        return
    if run.ctx.primary:
        save_checkpoint(
            config.checkpoint_dir,
            step=done,
            lens_state=run.translators.state_dict(),
            optimizer_state=run.optimizer.state_dict(),
            extra={
                "fingerprint": run.fingerprint,
                "wandb_id": wandb_id,
                "data_position": done * run.chunks_per_step,
                "layer_losses": layer_values,
            },
        )
    run.ctx.barrier()


def train_lens(
    model: torch.nn.Module,
    lens: Lens,
    chunks: PackedChunks,
    config: TrainConfig,
    *,
    ctx: DistContext | None = None,
    nats_to_bpb: float | None = None,
) -> TrainResult:
    """Train ``lens`` in place on ``chunks`` against the frozen ``model``.

    Resumes from the newest snapshot in ``config.checkpoint_dir`` when there is one.

    Args:
        model: the frozen causal LM, already on ``ctx.device`` (or FSDP-sharded).
        lens: a :class:`tuned_lens.nn.TunedLens` built from ``model``.
        chunks: packed training data (identical on every process), ``(N, chunk_len)`` ids.
        config: run settings.
        ctx: distributed context (default: one process on the model's device).
        nats_to_bpb: ratio for logging losses in bits per byte (default ``chunks.nats_to_bpb``).

    Returns:
        Losses and learning rates of the steps run.

    Raises:
        NotEnoughDataError: the data cannot feed ``num_steps`` steps (before any work).
        InvalidInputError: bad settings, or checkpoints of a run with other settings.
    """
    if ctx is None:
        ctx = DistContext(device=next(model.parameters()).device)
    ratio = chunks.nats_to_bpb if nats_to_bpb is None else nats_to_bpb
    run = _set_up_run(model, lens, chunks, config, ctx)
    start_step, wandb_id = _resume_or_initialise(run)
    wandb_logger = WandbLogger(
        config.wandb if ctx.primary else None,
        resume_id=wandb_id,
        config={**run.fingerprint, "tokens_per_step": config.tokens_per_step},
    )
    losses: list[list[float]] = []
    lrs: list[float] = []
    progress = progress_bar(config, ctx.primary, start_step)
    began = time.perf_counter()
    for step in range(start_step, config.num_steps):
        lr = run.schedule.apply(run.optimizer, step=step, base_lr=config.optimizer.base_lr)
        layer_values = _optimizer_step(run, step)
        losses.append(layer_values)
        lrs.append(float(run.optimizer.param_groups[0]["lr"]))  # the rate the step really used
        report_step(
            progress,
            wandb_logger,
            step=step,
            lr=lr,
            loss=config.loss,
            layer_values=layer_values,
            nats_to_bpb=ratio,
        )
        _maybe_checkpoint(run, step + 1, layer_values, wandb_logger.run_id)
    elapsed = max(time.perf_counter() - began, 1e-9)
    if progress is not None:
        progress.close()
    wandb_logger.finish()
    steps_run = config.num_steps - start_step
    tokens = steps_run * run.chunks_per_step * chunks.chunk_len
    return TrainResult(
        losses=losses,
        learning_rates=lrs,
        start_step=start_step,
        resumed=run.resumed,
        steps_per_second=steps_run / elapsed,
        tokens_per_second=tokens / elapsed,
    )
