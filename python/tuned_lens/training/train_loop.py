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

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from tuned_lens.data import ChunkSampler, PackedChunks
from tuned_lens.errors import InvalidInputError, MissingDependencyError, NotEnoughDataError
from tuned_lens.training.checkpoint import latest_checkpoint, save_checkpoint
from tuned_lens.training.ingredients import DistContext
from tuned_lens.training.optim import LinearWarmupDecay, OptimizerConfig

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.nn.lenses import Lens

logger = logging.getLogger(__name__)

LOSSES = ("KL", "CE")
GRAD_CLIP_NORM = 1.0


@dataclass
class TrainConfig:
    """Settings of one training run (the ``train`` CLI flags that are not about loading).

    Attributes:
        num_steps: optimiser steps.
        tokens_per_step: tokens per optimiser step; must be a multiple of the chunk length.
        per_gpu_batch_size: chunks per micro-batch on each process.
        loss: ``"KL"`` (KL(model ‖ lens), the default) or ``"CE"`` (next-token cross-entropy).
        token_shift: label shift; ``None`` means 0 for KL and 1 for CE.
        optimizer: optimiser and schedule settings.
        bias_only: train only the translators' biases.
        checkpoint_freq: steps between snapshots (``None``: no snapshots).
        checkpoint_dir: snapshot folder (resumed from automatically when it holds snapshots).
        seed: seed of the chunk order.
        dataloader_shuffle: shuffle the chunks (else use them in file order).
        wandb: W&B run name; ``None`` disables W&B.
        progress: show a tqdm progress bar on the primary process.
    """

    num_steps: int = 250
    tokens_per_step: int = 2**18
    per_gpu_batch_size: int = 1
    loss: str = "KL"
    token_shift: int | None = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    bias_only: bool = False
    checkpoint_freq: int | None = None
    checkpoint_dir: Path | None = None
    seed: int = 42
    dataloader_shuffle: bool = True
    wandb: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.loss = self.loss.upper()
        if self.loss not in LOSSES:
            raise InvalidInputError(
                f"loss must be one of {LOSSES}, got {self.loss!r}", option="loss"
            )
        at_least_one = {
            "num_steps": self.num_steps,
            "tokens_per_step": self.tokens_per_step,
            "per_gpu_batch_size": self.per_gpu_batch_size,
            "checkpoint_freq": self.checkpoint_freq,
        }
        for option, value in at_least_one.items():
            if value is not None and value < 1:
                raise InvalidInputError(f"{option} must be >= 1, got {value}", option=option)
        if self.token_shift is not None and self.token_shift < 0:
            raise InvalidInputError(
                f"token_shift must be >= 0, got {self.token_shift}", option="token_shift"
            )

    @property
    def resolved_token_shift(self) -> int:
        if self.token_shift is not None:
            return self.token_shift
        return 1 if self.loss == "CE" else 0


@dataclass
class TrainResult:
    """What a run produced.

    Attributes:
        losses: per step (those run in this process, after any resume), the mean loss of every
            layer in nats, shape ``(steps_run, num_layers)``.
        learning_rates: the learning rate used at each of those steps.
        start_step: the step the run started from (> 0 after a resume).
        steps_per_second: optimiser steps per second of wall time in this process.
        tokens_per_second: training tokens per second over all processes.
    """

    losses: list[list[float]]
    learning_rates: list[float]
    start_step: int
    steps_per_second: float = 0.0
    tokens_per_second: float = 0.0


def trainable_translators(lens: Lens) -> torch.nn.ModuleList:
    """The lens's per-layer translators (the only trained parameters)."""
    translators = getattr(lens, "layer_translators", None)
    if not isinstance(translators, torch.nn.ModuleList):
        raise TypeError(f"{type(lens).__name__} has no layer_translators ModuleList to train")
    return translators


def prepare_lens_for_training(
    lens: Lens, *, device: torch.device, bias_only: bool
) -> list[torch.nn.Parameter]:
    """Move the lens to ``device``, keep float32 master weights, freeze what is not trained.

    Returns:
        The trainable parameters, in a fixed order.
    """
    lens.to(device)
    lens.requires_grad_(False)
    translators = trainable_translators(lens)
    translators.float()
    params = []
    for name, param in translators.named_parameters():
        if bias_only and not name.endswith("bias"):
            continue
        param.requires_grad_(True)
        params.append(param)
    if not params:
        raise InvalidInputError(
            "the lens has no trainable parameters (no biases with bias_only?)", option="bias_only"
        )
    return params


def _autocast(device: torch.device, model_dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for the lens forward where it helps; master weights stay float32."""
    if device.type == "cuda":
        dtype = (
            model_dtype
            if model_dtype in (torch.float16, torch.bfloat16)
            else (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        )
        return torch.autocast("cuda", dtype=dtype)
    if model_dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device.type, dtype=model_dtype)
    return contextlib.nullcontext()


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def layer_losses(
    model_logits: torch.Tensor,
    input_ids: torch.Tensor,
    lens_logits_fn: Callable[[int], torch.Tensor],
    num_layers: int,
    *,
    loss: str,
    token_shift: int,
    scale: float,
) -> Iterator[torch.Tensor]:
    """Yield each layer's loss (already back-propagated with weight ``scale``), detached.

    Args:
        model_logits: the model's final logits, ``(B, T, V)``.
        input_ids: ``(B, T)`` token ids (CE labels).
        lens_logits_fn: ``layer -> (B, T, V)`` lens logits with autograd.
        num_layers: layers to run.
        loss: ``"KL"`` or ``"CE"``.
        token_shift: compare lens position ``t`` with target position ``t + token_shift``.
        scale: multiplies each loss before ``backward`` (1 / micro-batches per step).
    """
    seq_len = model_logits.shape[1]
    if token_shift >= seq_len:
        raise InvalidInputError(
            f"token_shift {token_shift} must be smaller than the chunk length {seq_len}",
            option="token_shift",
        )
    keep = seq_len - token_shift
    if loss == "KL":
        target_lp = torch.log_softmax(model_logits[:, token_shift:].float(), dim=-1)
        target_p = target_lp.exp()
        neg_entropy = (target_p * target_lp).sum(-1)  # Σ p log p, (B, T')
    else:
        labels = input_ids[:, token_shift:]
    for layer in range(num_layers):
        logits = lens_logits_fn(layer)[:, :keep]
        lens_lp = torch.log_softmax(logits.float(), dim=-1)
        if loss == "KL":
            # KL(p ‖ q) = Σ p log p − Σ p log q, averaged over every position.
            value = (neg_entropy - (target_p * lens_lp).sum(-1)).mean()
        else:
            value = F.nll_loss(lens_lp.flatten(0, 1), labels.flatten())
        (value * scale).backward()
        yield value.detach()


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
    }


WANDB_MISSING = "W&B logging needs the wandb package: pip install 'tuned-lens-rs[wandb]'"


def require_wandb() -> None:
    """Fail early, before any loading, when W&B logging is asked for but not installed.

    Raises:
        MissingDependencyError: ``wandb`` is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise MissingDependencyError(WANDB_MISSING)


class _WandbLogger:
    """Optional Weights & Biases logging on the primary process (lazy import)."""

    def __init__(self, name: str | None, *, resume_id: str | None, config: dict[str, Any]):
        self.run = None
        if name is None:
            return
        try:
            import wandb
        except ImportError as err:
            raise MissingDependencyError(WANDB_MISSING) from err
        self.run = wandb.init(name=name, id=resume_id, resume="allow", config=config)

    @property
    def run_id(self) -> str | None:
        return None if self.run is None else self.run.id

    def log(self, values: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


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
        fingerprint=_run_fingerprint(chunks, config, sampler, samples_per_step),
        params=params,
        translators=trainable_translators(lens),
        optimizer=config.optimizer.build(params),
        schedule=LinearWarmupDecay(
            config.num_steps, config.optimizer.resolved_warmup(config.num_steps)
        ),
        model_dtype=_model_dtype(model),
    )


def _resume(run: _Run) -> tuple[int, str | None]:
    """Load the newest snapshot of ``config.checkpoint_dir`` into the lens and optimiser.

    Returns:
        The step to start from and the W&B run id to continue (0 and ``None`` without one).

    Raises:
        InvalidInputError: the snapshot comes from a run with other settings.
    """
    folder = run.config.checkpoint_dir
    if folder is None:
        return 0, None
    snapshot = latest_checkpoint(folder)
    if snapshot is None:
        if run.ctx.primary:
            logger.info("no checkpoint in %s; starting from step 0", folder)
        return 0, None
    saved = snapshot.extra.get("fingerprint", {})
    diff = {k: (saved.get(k), v) for k, v in run.fingerprint.items() if saved.get(k) != v}
    if diff:
        raise InvalidInputError(
            f"the checkpoints in {folder} come from a run with other settings (checkpoint vs "
            f"now: {diff}); use another checkpoint_dir",
            option="checkpoint_dir",
        )
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
            with _autocast(device, run.model_dtype):
                return run.lens(hidden[layer], idx=layer)

        values = layer_losses(
            output.logits,
            input_ids,
            lens_logits,
            num_layers,
            loss=run.config.loss,
            token_shift=run.config.resolved_token_shift,
            scale=1.0 / micro_batches,
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


def _progress_bar(run: _Run, start_step: int) -> Any:
    """A tqdm bar on the primary process when asked for and steps remain, else ``None``."""
    config = run.config
    if not (config.progress and run.ctx.primary and start_step < config.num_steps):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.num_steps, initial=start_step, desc="Training lens", unit="step")


def _report(
    progress: Any,
    wandb_logger: _WandbLogger,
    *,
    step: int,
    lr: float,
    loss: str,
    layer_values: list[float],
    nats_to_bpb: float,
) -> None:
    """Show a finished step on the progress bar and log it to W&B (nats and bits per byte)."""
    if progress is not None:
        progress.update(1)
        progress.set_postfix_str(
            f"lr={lr:.3g} {loss.lower()}[nats]=" + " ".join(f"{v:.3f}" for v in layer_values)
        )
    wandb_logger.log(
        {
            "lr": lr,
            **{f"loss/layer_{i}": v for i, v in enumerate(layer_values)},
            **{f"loss_bpb/layer_{i}": v * nats_to_bpb for i, v in enumerate(layer_values)},
        },
        step=step,
    )


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
    start_step, wandb_id = _resume(run)
    wandb_logger = _WandbLogger(
        config.wandb if ctx.primary else None,
        resume_id=wandb_id,
        config={**run.fingerprint, "tokens_per_step": config.tokens_per_step},
    )
    losses: list[list[float]] = []
    lrs: list[float] = []
    progress = _progress_bar(run, start_step)
    began = time.perf_counter()
    for step in range(start_step, config.num_steps):
        lr = run.schedule.apply(run.optimizer, step=step, base_lr=config.optimizer.base_lr)
        layer_values = _optimizer_step(run, step)
        losses.append(layer_values)
        lrs.append(float(run.optimizer.param_groups[0]["lr"]))  # the rate the step really used
        _report(
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
        steps_per_second=steps_run / elapsed,
        tokens_per_second=tokens / elapsed,
    )
