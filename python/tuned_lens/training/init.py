"""Translator initialisation for lens training: the identity (the original's) or least squares.

``least_squares`` starts every translator from the linear shortcut of Din et al. (2023),
``h_L ≈ h_ℓ + A_ℓ h_ℓ + b_ℓ`` with ``h_L`` the last block's output *before* the final norm,
fitted in closed form on the first ``init_steps`` steps of the training stream (those steps'
tokens are the fit's sample, so they count toward the run's budget and gradient training starts
after them). The fit is :class:`tuned_lens.nn.shortcut_lens.AffineLeastSquares`: float64 sums of
the centred normal equations with a small relative ridge, solved by Cholesky. That keeps memory
at ``O(d²)`` per layer whatever the sample size (a QR of the data matrix would hold every token),
float64 makes the squared condition number of the normal equations harmless, and the ridge keeps
the system positive definite with dead directions or fewer tokens than dimensions.

Distributed runs: every process accumulates the sums of its own micro-batches (so a sharded
model runs its forwards on every rank, as FSDP requires), the sums are all-reduced, process 0
solves once and broadcasts the translators, so every process starts from the same bits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from tuned_lens.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.data import ChunkSampler, PackedChunks
    from tuned_lens.nn.lenses import Lens
    from tuned_lens.nn.shortcut_lens import AffineLeastSquares
    from tuned_lens.training.ingredients import DistContext

__all__ = [
    "INITS",
    "INIT_RIDGE",
    "fit_least_squares_translators",
    "prepare_lens_for_training",
    "trainable_translators",
]

INITS = ("identity", "least_squares")
INIT_RIDGE = 1e-6

logger = logging.getLogger(__name__)


def _accumulate(
    model: torch.nn.Module,
    chunks: PackedChunks,
    sampler: ChunkSampler,
    samples_per_step: int,
    steps: int,
    device: torch.device,
) -> list[AffineLeastSquares]:
    """This process's least-squares sums of ``h_L − h_ℓ`` on ``h_ℓ`` over ``steps`` steps."""
    from tuned_lens.architectures import resolve_architecture
    from tuned_lens.nn.shortcut_lens import AffineLeastSquares, _last_block_output

    blocks = resolve_architecture(model).layers
    d = 0
    sums: list[AffineLeastSquares] = []
    for step in range(steps):
        for indices in sampler.step_indices(step, samples_per_step):
            hidden, final = _last_block_output(model, blocks, chunks.input_ids[indices].to(device))
            target = final.reshape(-1, final.shape[-1])
            if not sums:
                d = target.shape[-1]
                sums = [AffineLeastSquares(d, d) for _ in hidden]
            for acc, h in zip(sums, hidden):
                x = h.reshape(-1, d)
                acc.update(x, target - x)
    return sums


def _all_reduce_sums(sums: list[AffineLeastSquares], ctx: DistContext) -> None:
    """Sum every accumulator over processes, in place (one all-reduce per layer)."""
    if not ctx.distributed:
        return
    for acc in sums:
        parts = [acc.sum_x, acc.sum_y, acc.sum_xx.reshape(-1), acc.sum_xy.reshape(-1)]
        count = torch.tensor([float(acc.n)], dtype=torch.float64)
        flat = torch.cat([count, *parts]).to(ctx.device)
        ctx.all_reduce_sum_(flat)
        flat = flat.cpu()
        acc.n = int(round(float(flat[0])))
        offset = 1
        for tensor in (acc.sum_x, acc.sum_y, acc.sum_xx, acc.sum_xy):
            n = tensor.numel()
            tensor.copy_(flat[offset : offset + n].view_as(tensor))
            offset += n


def fit_least_squares_translators(
    model: torch.nn.Module,
    lens: Lens,
    chunks: PackedChunks,
    sampler: ChunkSampler,
    samples_per_step: int,
    *,
    steps: int,
    ctx: DistContext,
    ridge: float = INIT_RIDGE,
) -> list[AffineLeastSquares]:
    """Set every translator of ``lens`` to the least-squares shortcut, in place.

    Args:
        model: the frozen causal LM (on ``ctx.device``, possibly FSDP-sharded).
        lens: a tuned lens whose ``layer_translators`` are ``nn.Linear(d, d)`` residuals.
        chunks: the packed training data, ``(N, chunk_len)`` ids.
        sampler: the run's chunk sampler (the fit reads exactly the chunks of its first steps).
        samples_per_step: chunks per optimiser step over all processes.
        steps: how many steps of the stream the fit reads (>= 1).
        ctx: distributed context.
        ridge: relative ridge of :meth:`AffineLeastSquares.solve`.

    Returns:
        The fit's float64 sums, one accumulator per layer, summed over all processes (the same
        on every process): ``n`` is the number of tokens used; the whitened optimiser reads its
        preconditioners from them.

    Raises:
        InvalidInputError: ``steps`` < 1, or the lens does not have one translator per layer.
    """
    from tuned_lens.nn.shortcut_lens import LinearShortcutLens

    if steps < 1:
        raise InvalidInputError(f"the fit needs >= 1 step of data, got {steps}", option="init")
    translators = lens.layer_translators
    if not isinstance(translators, torch.nn.ModuleList):
        raise InvalidInputError("init least_squares needs a tuned lens", option="init")
    with torch.no_grad():
        sums = _accumulate(model, chunks, sampler, samples_per_step, steps, ctx.device)
    if len(sums) != len(translators):
        raise InvalidInputError(
            f"the model has {len(sums)} lens layers but the lens {len(translators)} translators",
            option="init",
        )
    _all_reduce_sums(sums, ctx)
    d = sums[0].sum_x.shape[0]
    weight = torch.zeros(len(sums), d, d, dtype=torch.float32, device=ctx.device)
    bias = torch.zeros(len(sums), d, dtype=torch.float32, device=ctx.device)
    if ctx.primary:
        for i, acc in enumerate(sums):
            a, b = acc.solve(ridge)
            weight[i], bias[i] = a.to(weight), b.to(bias)
    if ctx.distributed:
        dist.broadcast(weight, src=0)
        dist.broadcast(bias, src=0)
    shortcut = LinearShortcutLens(lens.unembed, weight, bias, n_tokens=sums[0].n, ridge=ridge)
    state = {k: v.to(ctx.device) for k, v in shortcut.translator_state().items()}
    wanted = {k: tuple(v.shape) for k, v in translators.state_dict().items()}
    if wanted != {k: tuple(v.shape) for k, v in state.items()}:
        raise InvalidInputError(
            "init least_squares needs full (d, d) translators with biases (not low-rank ones)",
            option="init",
        )
    translators.load_state_dict(state)
    if ctx.primary:
        logger.info("least-squares init of %d translators on %d tokens", len(sums), sums[0].n)
    return sums


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
