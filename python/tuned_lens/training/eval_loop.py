"""Evaluation of the logit lens and tuned lenses: per-layer cross-entropy, entropy and KL.

Every metric is a mean over tokens in **nats**: per batch, per layer, per lens type, plus the
model's own cross-entropy and entropy as a baseline. ``aggregate_metrics.json`` repeats the
same tree converted to **bits per byte** under ``"bits_per_byte"`` (every metric multiplied by
the data's ``nats_to_bpb`` ratio, which is what the original reported for all metrics).

Statistics are computed by :mod:`tuned_lens.lens_stats` (the Rust core on the CPU, its torch
twin for CUDA tensors).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tuned_lens import lens_stats
from tuned_lens.data import ChunkSampler, PackedChunks
from tuned_lens.errors import InvalidInputError, NotEnoughDataError
from tuned_lens.stats import LogitStats
from tuned_lens.training.eval_outputs import scale_tree, write_outputs, write_plots
from tuned_lens.training.ingredients import DistContext
from tuned_lens.training.lens_loss import autocast_for, model_dtype
from tuned_lens.training.original_api import Eval

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.nn.lenses import Lens

logger = logging.getLogger(__name__)

__all__ = [
    "Eval",
    "METRICS",
    "EvalConfig",
    "EvalResult",
    "count_batches",
    "evaluate_lenses",
    "scale_tree",
    "write_outputs",
    "write_plots",
]

METRICS = ("ce", "entropy", "kl")


@dataclass
class EvalConfig:
    """Settings of one evaluation (the ``eval`` CLI flags that are not about loading).

    Attributes:
        tokens: tokens to evaluate over all processes (``None``: the whole data set).
        per_gpu_batch_size: chunks per batch on each process.
        token_shift: CE compares lens position ``t`` with the token at ``t + token_shift``.
        layer_transfer: also apply every translator to every layer's hidden state (tuned lens).
        record_logit_stats: record the mean predicted distribution of every layer.
        seed: seed of the chunk order.
        dataloader_shuffle: shuffle the chunks.
        progress: show a tqdm progress bar on the primary process.
    """

    tokens: int | None = None
    per_gpu_batch_size: int = 1
    token_shift: int = 1
    layer_transfer: bool = False
    record_logit_stats: bool = False
    seed: int = 42
    dataloader_shuffle: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens < 1:
            raise InvalidInputError(f"tokens must be >= 1, got {self.tokens}", option="tokens")
        if self.per_gpu_batch_size < 1:
            raise InvalidInputError(
                f"per_gpu_batch_size must be >= 1, got {self.per_gpu_batch_size}",
                option="per_gpu_batch_size",
            )
        if self.token_shift < 0:
            raise InvalidInputError(
                f"token_shift must be >= 0, got {self.token_shift}", option="token_shift"
            )


@dataclass
class EvalResult:
    """Evaluation output.

    Attributes:
        aggregate: nested metrics in nats (``{lens: {metric: {"layer_j": v}}, "baseline": …}``).
        batches: one nested dict per batch, in nats.
        nats_to_bpb: the data's conversion ratio.
        tokens: tokens evaluated over all processes.
        logit_stats: mean predicted probabilities per lens and layer (with
            ``record_logit_stats``), ``{lens: {"layer_j": (V,) array}, "baseline": {"final": …}}``.
    """

    aggregate: dict[str, Any]
    batches: list[dict[str, Any]]
    nats_to_bpb: float
    tokens: int
    logit_stats: dict[str, dict[str, np.ndarray]] | None = None
    num_layers: int = 0
    lens_names: list[str] = field(default_factory=list)


def count_batches(num_chunks: int, chunk_len: int, config: EvalConfig, world_size: int) -> int:
    """Batches each process runs; raises :class:`NotEnoughDataError` if ``tokens`` is too many."""
    per_batch = world_size * config.per_gpu_batch_size
    held = num_chunks * chunk_len
    if config.tokens is None:
        batches = num_chunks // per_batch
    else:
        if config.tokens > held:
            raise NotEnoughDataError(
                f"Requested to evaluate on {config.tokens} tokens, but the data set holds only "
                f"{held} tokens ({num_chunks} chunks of {chunk_len}); evaluate fewer tokens or "
                "use more data."
            )
        batches = config.tokens // (per_batch * chunk_len)
    if batches < 1:
        raise NotEnoughDataError(
            f"one evaluation batch needs {per_batch * chunk_len} tokens ({per_batch} chunks of "
            f"{chunk_len}); the request covers fewer (data: {held} tokens, asked for "
            f"{config.tokens})"
        )
    return batches


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values, dtype=np.float64))


def _lens_log_probs(
    lens: Lens, hidden: torch.Tensor, idx: int, autocast: contextlib.AbstractContextManager
) -> torch.Tensor:
    """``(B, T, V)`` float32 log-probabilities of lens ``idx`` on ``hidden`` ``(B, T, d)``."""
    with autocast:
        logits = lens(hidden, idx=idx)
    return torch.log_softmax(logits.float(), dim=-1)


def _as_stats_input(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().contiguous()


@dataclass
class _Batch:
    """One batch's inputs to the statistics: the model's log-probs and the CE labels."""

    final_lp: torch.Tensor  # (B, T, V) float32, the model's own log-probabilities
    labels: torch.Tensor  # (B, T - shift) token ids
    keep: int  # T - shift: positions that have a label


@dataclass
class _Plan:
    """What :func:`evaluate_lenses` runs: batches, their sampler, the precision context."""

    ctx: DistContext
    num_batches: int
    per_batch_global: int
    sampler: ChunkSampler
    autocast: contextlib.AbstractContextManager
    progress: Any = None


def _plan(
    model: torch.nn.Module,
    lenses: Mapping[str, Lens],
    chunks: PackedChunks,
    config: EvalConfig,
    ctx: DistContext,
) -> _Plan:
    """Check the settings against the data, move the lenses, set up the sampler.

    Raises:
        InvalidInputError: no lens, or ``token_shift`` not below the chunk length.
        NotEnoughDataError: the data holds fewer tokens than asked for.
    """
    if not lenses:
        raise InvalidInputError("nothing to evaluate: pass a tuned lens and/or the logit lens")
    chunk_len = chunks.chunk_len
    shift = config.token_shift
    if shift >= chunk_len:
        raise InvalidInputError(
            f"token_shift {shift} must be smaller than the chunk length {chunk_len}",
            option="token_shift",
        )
    num_batches = count_batches(len(chunks), chunk_len, config, ctx.world_size)
    sampler = ChunkSampler(
        len(chunks),
        micro_batch_size=config.per_gpu_batch_size,
        world_size=ctx.world_size,
        rank=ctx.rank,
        seed=config.seed,
        shuffle=config.dataloader_shuffle,
    )
    for lens in lenses.values():
        lens.to(ctx.device)
        lens.eval()
    progress = None
    if config.progress and ctx.primary:
        from tqdm.auto import tqdm

        progress = tqdm(total=num_batches, desc="Evaluating", unit="batch")
    return _Plan(
        ctx=ctx,
        num_batches=num_batches,
        per_batch_global=ctx.world_size * config.per_gpu_batch_size,
        sampler=sampler,
        autocast=autocast_for(ctx.device, model_dtype(model)),
        progress=progress,
    )


def _baseline_metrics(batch: _Batch) -> dict[str, dict[str, float]]:
    """The model's own cross-entropy and entropy (nats) on one batch."""
    final = _as_stats_input(batch.final_lp)
    ce = lens_stats.cross_entropy(_as_stats_input(batch.final_lp[:, : batch.keep]), batch.labels)
    return {"ce": {"final": _mean(ce)}, "entropy": {"final": _mean(lens_stats.entropy(final))}}


def _lens_metrics(
    name: str,
    lens: Lens,
    hidden_states: tuple[torch.Tensor, ...],
    batch: _Batch,
    config: EvalConfig,
    plan: _Plan,
    marginals: dict[str, dict[str, LogitStats]],
) -> dict[str, Any]:
    """Per-layer CE, entropy and KL(model ‖ lens) of one lens on one batch (nats).

    With ``record_logit_stats`` the layers' log-probabilities are added to ``marginals``.
    """
    final = _as_stats_input(batch.final_lp)
    transfer = config.layer_transfer and name != "logit"
    metrics: dict[str, Any] = {m: {} for m in METRICS}
    layer_lps: list[torch.Tensor] = []
    for j in range(len(hidden_states) - 1):
        lp = _lens_log_probs(lens, hidden_states[j], j, plan.autocast)
        key = f"layer_{j}"
        ce = lens_stats.cross_entropy(_as_stats_input(lp[:, : batch.keep]), batch.labels)
        metrics["ce"][key] = _mean(ce)
        lp_stats = _as_stats_input(lp)
        metrics["entropy"][key] = _mean(lens_stats.entropy(lp_stats))
        metrics["kl"][key] = _mean(lens_stats.kl_divergence(final, lp_stats))
        if config.record_logit_stats:
            _record_marginal(marginals, name, key, lp)
        if transfer:
            layer_lps.append(lp)
    if transfer:
        metrics["layer_transfer"] = _layer_transfer(
            lens, hidden_states, layer_lps, batch.labels, batch.keep, plan.autocast
        )
    return metrics


def _record_marginal(
    marginals: dict[str, dict[str, LogitStats]], name: str, key: str, log_probs: torch.Tensor
) -> None:
    """Add ``(B, T, V)`` log-probabilities to the running marginal of ``name``/``key``."""
    stats = marginals.setdefault(name, {}).setdefault(key, LogitStats())
    stats.update(_as_stats_input(log_probs), assume_normalized=True)


def _evaluate_batch(
    model: torch.nn.Module,
    lenses: Mapping[str, Lens],
    input_ids: torch.Tensor,
    config: EvalConfig,
    plan: _Plan,
    marginals: dict[str, dict[str, LogitStats]],
) -> tuple[dict[str, Any], int]:
    """Every metric of one batch ``(B, T)``; also the number of lens layers."""
    output = model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    shift = config.token_shift
    batch = _Batch(
        final_lp=torch.log_softmax(output.logits.float(), dim=-1),
        labels=_as_stats_input(input_ids[:, shift:]),
        keep=input_ids.shape[1] - shift,
    )
    record: dict[str, Any] = {"baseline": _baseline_metrics(batch)}
    if config.record_logit_stats:
        _record_marginal(marginals, "baseline", "final", batch.final_lp)
    for name, lens in lenses.items():
        record[name] = _lens_metrics(
            name, lens, output.hidden_states, batch, config, plan, marginals
        )
    return record, len(output.hidden_states) - 1


@torch.no_grad()
def evaluate_lenses(
    model: torch.nn.Module,
    lenses: Mapping[str, Lens],
    chunks: PackedChunks,
    config: EvalConfig,
    *,
    ctx: DistContext | None = None,
) -> EvalResult:
    """Evaluate lenses on ``chunks``.

    Args:
        model: the frozen causal LM on ``ctx.device``.
        lenses: ``{"logit": LogitLens, "tuned": TunedLens}`` (either may be missing).
        chunks: packed evaluation data (identical on every process), ``(N, chunk_len)`` ids.
        config: evaluation settings.
        ctx: distributed context (default: one process on the model's device).

    Returns:
        Aggregated and per-batch metrics in nats.

    Raises:
        InvalidInputError: no lens, or a bad ``token_shift``.
        NotEnoughDataError: the data holds fewer tokens than ``config.tokens``.
    """
    if ctx is None:
        ctx = DistContext(device=next(model.parameters()).device)
    plan = _plan(model, lenses, chunks, config, ctx)
    marginals: dict[str, dict[str, LogitStats]] = {}
    batches: list[dict[str, Any]] = []
    num_layers = 0
    for batch_idx in range(plan.num_batches):
        (indices,) = plan.sampler.step_indices(batch_idx, plan.per_batch_global)
        input_ids = chunks.input_ids[indices].to(ctx.device)
        record, num_layers = _evaluate_batch(model, lenses, input_ids, config, plan, marginals)
        batches.append(record)
        if plan.progress is not None:
            plan.progress.update(1)
    if plan.progress is not None:
        plan.progress.close()
    logit_stats = _finish_marginals(marginals) if config.record_logit_stats else None
    return EvalResult(
        aggregate=_average_tree_over_ranks(_mean_of_trees(batches), ctx),
        batches=_gather_batches(batches, ctx),
        nats_to_bpb=chunks.nats_to_bpb,
        tokens=plan.num_batches * plan.per_batch_global * chunks.chunk_len,
        logit_stats=logit_stats,
        num_layers=num_layers,
        lens_names=list(lenses),
    )


def _layer_transfer(
    lens: Lens,
    hidden_states: tuple[torch.Tensor, ...],
    own_lps: list[torch.Tensor],
    labels: torch.Tensor,
    keep: int,
    autocast: contextlib.AbstractContextManager,
) -> dict[str, dict[str, dict[str, float]]]:
    """CE and KL when translator ``i`` reads layer ``j``'s hidden state.

    ``kl[layer_i][layer_j]`` is KL(lens_j(h_j) ‖ lens_i(h_j)): how far translator ``i`` lands from
    the translator trained for that layer.
    """
    n = len(own_lps)
    ce: dict[str, dict[str, float]] = {}
    kl: dict[str, dict[str, float]] = {}
    for i in range(n):
        ce[f"layer_{i}"] = {}
        kl[f"layer_{i}"] = {}
        for j in range(n):
            lp = own_lps[j] if i == j else _lens_log_probs(lens, hidden_states[j], i, autocast)
            ce[f"layer_{i}"][f"layer_{j}"] = _mean(
                lens_stats.cross_entropy(_as_stats_input(lp[:, :keep]), labels)
            )
            kl[f"layer_{i}"][f"layer_{j}"] = _mean(
                lens_stats.kl_divergence(_as_stats_input(own_lps[j]), _as_stats_input(lp))
            )
    return {"ce": ce, "kl": kl}


def _mean_of_trees(trees: list[dict[str, Any]]) -> dict[str, Any]:
    first = trees[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = _mean_of_trees([t[key] for t in trees])
        else:
            out[key] = math.fsum(t[key] for t in trees) / len(trees)
    return out


def _flatten(tree: dict[str, Any], prefix: tuple = ()) -> list[tuple[tuple, float]]:
    items = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items.extend(_flatten(value, prefix + (key,)))
        else:
            items.append((prefix + (key,), value))
    return items


def _unflatten(items: list[tuple[tuple, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in items:
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _average_tree_over_ranks(tree: dict[str, Any], ctx: DistContext) -> dict[str, Any]:
    if not ctx.distributed:
        return tree
    items = _flatten(tree)
    values = torch.tensor([v for _, v in items], dtype=torch.float64, device=ctx.device)
    ctx.all_reduce_mean_(values)
    return _unflatten([(path, float(v)) for (path, _), v in zip(items, values.tolist())])


def _gather_batches(batches: list[dict[str, Any]], ctx: DistContext) -> list[dict[str, Any]]:
    if not ctx.distributed:
        return batches
    import torch.distributed as dist

    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, batches)
    return [record for rank_batches in gathered for record in rank_batches]


def _finish_marginals(
    marginals: dict[str, dict[str, LogitStats]],
) -> dict[str, dict[str, np.ndarray]]:
    """Mean predicted distribution ``(V,)`` float64 per lens and layer, over all processes."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, per_key in marginals.items():
        out[name] = {}
        for key, stats in per_key.items():
            stats.all_reduce_()
            out[name][key] = stats.marginal_probs.cpu().numpy()
    return out
