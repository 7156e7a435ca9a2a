"""The lens loss fused with the unembedding, walking the vocabulary in chunks.

``KL(model ‖ lens)`` and next-token cross-entropy from the lens's state ``z`` *before* the output
projection (after translator, final norm and any pre-head projection), without ever holding the
``(N, V)`` lens logits, their log-softmax or their gradient: the vocabulary is walked in chunks of
``C`` rows of the unembedding ``W (V, d)``, and only ``(N, C)`` blocks are alive.

One pass per layer does everything, forward and gradient, at two matmuls per chunk (the matmul
floor of a layer: the logits forward and the input-gradient backward):

* the lens's per-row log-normaliser ``lse = m + log S`` online (running max ``m`` and rescaled sum
  ``S`` of ``exp(logit - m)``, the flash-attention recurrence);
* the softmax half of the gradient, ``E = Σ_chunks exp(logit_c - m) W_c``, rescaled with ``S``
  whenever ``m`` moves, so ``Σ_v q_v W_v = E / S`` once the row is done.

``backward`` then only scales the stored ``(N, d)`` gradient by the incoming per-row weights.
Recomputing the chunk logits in ``backward`` instead would cost a third matmul per chunk; the
price of computing the gradient early is that a forward run with grad enabled but never
back-propagated does the gradient work for nothing (under ``no_grad`` it is skipped). Alive at
any time: two to four ``(N, C)`` blocks (logits, turned into exponentials in place; a cast copy
for bfloat16 matmuls; with a soft-cap its slope and the target block) and ``(N, d)`` sums.

The target half needs no pass per layer: with ``p`` the target distribution, the cross term
``Σ_v p_v logit_v = z · (Σ_v p_v W_v) + Σ_v p_v b_v`` and the gradient's ``Σ_v p_v W_v`` are
the same for every layer, so :func:`kl_target` / :func:`ce_target` compute ``PW = p W`` once
per micro-batch (from the model's logits, which its forward has produced anyway: recomputing
them from the final hidden state through ``W`` would add a matmul per layer). For CE, ``PW`` is
the label's row of ``W``.

Logit soft-capping (Gemma-2/3) is fused exactly too, but its derivative depends on the lens
logits, so the target half is then done per chunk (a third matmul per chunk, and the target
probabilities rebuilt chunk by chunk). Scaling (Cohere, Granite) is a constant factor and keeps
the two-matmul path. Any other output transform, or an output projection that is not a plain
``nn.Linear``, is not fused: :meth:`FusedHead.from_unembed` returns ``None`` and the caller uses
the materialised loss.

Accumulation is float32 (float64 when ``z`` is float64, for ``gradcheck``): the running sums
combine ``V / C`` chunk partials of values in ``[0, C]``, so float32 loses ~1e-7 relative —
the precision of the float32 ``log_softmax`` the unfused loss uses — while float64 would double
the traffic of the ``(N, C)`` block and halve the exponential rate on the CPU. The matmuls run
in the dtype autocast would use for the lens's ``nn.Linear`` (bfloat16 on CUDA), so the fused
loss matches the unfused one under mixed precision too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from tuned_lens.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.nn.lenses import Lens
    from tuned_lens.nn.unembed import Unembed

__all__ = [
    "BLOCK_ELEMENTS",
    "BLOCK_ELEMENTS_ACCELERATOR",
    "FusedHead",
    "FusedTarget",
    "auto_chunk_size",
    "ce_target",
    "fused_lens_loss",
    "kl_target",
    "lens_state",
]

BLOCK_ELEMENTS = 2**22
"""Elements of one ``(N, C)`` block when the chunk size is automatic on the CPU (16 MiB in
float32)."""

BLOCK_ELEMENTS_ACCELERATOR = 2**25
"""The same on an accelerator (128 MiB in float32): a GPU needs bigger matmuls to be busy, and
every chunk costs a dozen kernel launches."""

_MIN_CHUNK, _MAX_CHUNK = 256, 16384


def auto_chunk_size(rows: int, device: torch.device | str = "cpu") -> int:
    """The automatic chunk size ``C`` for ``rows`` rows on ``device``: the power of two that
    keeps one ``(rows, C)`` block near :data:`BLOCK_ELEMENTS` (CPU) or
    :data:`BLOCK_ELEMENTS_ACCELERATOR`, within ``[256, 16384]``.

    Measured with torch's sgemm on 2 Zen 4 cores (d = 576, V = 49,152): 128 rows run fastest
    at C = 4096–16,384 and 3,840 rows at C = 1024, so the block, not C, is held fixed. The
    block bounds the loss's memory whatever the vocabulary size.
    """
    if rows < 1:
        return _MAX_CHUNK
    on_cpu = torch.device(device).type == "cpu"
    budget = BLOCK_ELEMENTS if on_cpu else BLOCK_ELEMENTS_ACCELERATOR
    chunk = 1 << max(0, (budget // rows).bit_length() - 1)
    return min(max(chunk, _MIN_CHUNK), _MAX_CHUNK)


def _check_chunk(chunk_size: int | None) -> None:
    if chunk_size is not None and chunk_size < 1:
        raise InvalidInputError(f"chunk_size must be >= 1, got {chunk_size}", option="chunk_size")


def _resolve_chunk(chunk_size: int | None, rows: int, device: torch.device) -> int:
    _check_chunk(chunk_size)
    return auto_chunk_size(rows, device) if chunk_size is None else chunk_size


@dataclass(frozen=True)
class FusedHead:
    """The frozen output path ``logits = T(z Wᵀ + b)`` in a form the fused loss can walk.

    Attributes:
        weight: ``W``, ``(V, d)``, detached.
        bias: ``b``, ``(V,)`` or ``None``.
        transforms: the elementwise logit post-processing in order: ``("scale", factor)`` or
            ``("softcap", cap)`` (``cap · tanh(x / cap)``).
        matmul_dtype: dtype of the chunk matmuls (``None``: ``z``'s dtype promoted with ``W``'s).
    """

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    transforms: tuple[tuple[str, float], ...] = ()
    matmul_dtype: torch.dtype | None = None

    @classmethod
    def from_unembed(
        cls, unembed: Unembed, matmul_dtype: torch.dtype | None = None
    ) -> FusedHead | None:
        """The head of ``unembed``, or ``None`` when its output path cannot be fused exactly.

        Fused: a plain ``nn.Linear`` output projection followed by any sequence of
        :class:`~tuned_lens.architecture_registry.LogitScale` and
        :class:`~tuned_lens.architecture_registry.LogitSoftcap`. The final norm and a pre-head
        projection are not part of the head: they belong to :func:`lens_state`.
        """
        from tuned_lens.architecture_registry import LogitScale, LogitSoftcap

        linear = unembed.unembedding
        if type(linear) is not nn.Linear or not linear.weight.is_floating_point():
            return None
        transforms: list[tuple[str, float]] = []
        for module in unembed.logit_transform:
            if type(module) is LogitScale:
                transforms.append(("scale", module.factor))
            elif type(module) is LogitSoftcap:
                transforms.append(("softcap", module.cap))
            else:
                return None
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls(linear.weight.detach(), bias, tuple(transforms), matmul_dtype)

    @property
    def vocab_size(self) -> int:
        """``V``."""
        return self.weight.shape[0]

    @property
    def linear_factor(self) -> float | None:
        """The product of the scale factors when every transform is a scale, else ``None``."""
        if any(kind != "scale" for kind, _ in self.transforms):
            return None
        return math.prod(value for _, value in self.transforms)

    def resolved_matmul_dtype(self, z: torch.Tensor) -> torch.dtype:
        """The dtype the chunk matmuls run in for lens states ``z``."""
        if self.matmul_dtype is not None:
            return self.matmul_dtype
        return torch.promote_types(z.dtype, self.weight.dtype)


def lens_state(lens: Lens, h: torch.Tensor, idx: int) -> torch.Tensor:
    """The lens's state right before the output projection: ``pre(norm(translate(h)))``.

    Args:
        lens: a lens whose ``forward`` is ``unembed(transform_hidden(h, idx))``.
        h: layer-``idx`` hidden states, ``(..., d_model)``.
        idx: the layer.

    Returns:
        ``(..., d_unembed)``; ``lens.unembed``'s head applied to it gives ``lens(h, idx)``.
    """
    unembed = lens.unembed
    return unembed.pre_unembed(unembed.final_norm(lens.transform_hidden(h, idx)))


@dataclass
class FusedTarget:
    """What the fused loss needs of the target distribution ``p`` over ``N`` rows.

    Attributes:
        mass: ``Σ_v p_v`` per row, ``(N,)`` (1, or 0 for an ignored CE row).
        pw: ``Σ_v p_v W_v``, ``(N, d)``.
        pb: ``Σ_v p_v b_v``, ``(N,)`` (zeros without a bias).
        neg_entropy: ``Σ_v p_v log p_v``, ``(N,)`` (zeros for CE).
        logits: KL only, the model's logits ``(*lead, V)`` with ``prod(lead) = N`` (a view).
        log_norm: KL only, their per-row log-normaliser ``(N / tiles,)``.
        labels: CE only, ``(N,)`` label ids, clamped to ``[0, V)``.
        chunk_size: ``C`` of the loss's pass (``None``: :func:`auto_chunk_size` of its rows).
        tiles: the rows are ``tiles`` copies of the ``N / tiles`` rows of ``logits`` /
            ``labels`` (:meth:`repeated`).
    """

    mass: torch.Tensor
    pw: torch.Tensor
    pb: torch.Tensor
    neg_entropy: torch.Tensor
    logits: torch.Tensor | None = None
    log_norm: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    chunk_size: int | None = None
    tiles: int = 1

    def repeated(self, tiles: int) -> FusedTarget:
        """The same target for ``tiles`` stacked copies of the rows (several layers' states
        decoded in one pass, ``(tiles · N, d)``); ``logits`` and ``labels`` are not copied."""
        if tiles < 1:
            raise InvalidInputError(f"tiles must be >= 1, got {tiles}", option="tiles")
        return FusedTarget(
            mass=self.mass.repeat(tiles),
            pw=self.pw.repeat(tiles, 1),
            pb=self.pb.repeat(tiles),
            neg_entropy=self.neg_entropy.repeat(tiles),
            logits=self.logits,
            log_norm=self.log_norm,
            labels=self.labels,
            chunk_size=self.chunk_size,
            tiles=self.tiles * tiles,
        )

    def probs(self, start: int, stop: int) -> torch.Tensor:
        """``p`` on vocabulary rows ``start:stop``, ``(N, stop - start)``, accumulation dtype."""
        n = self.mass.shape[0] // self.tiles
        if self.logits is not None and self.log_norm is not None:
            block = self.logits[..., start:stop].reshape(n, stop - start)
            # Out of place: the reshape may be a view of the caller's logits.
            out = (block.to(self.mass.dtype) - self.log_norm.unsqueeze(-1)).exp_()
        else:
            assert self.labels is not None
            mass, labels = self.mass[:n], self.labels[:n]
            out = torch.zeros(n, stop - start, dtype=self.mass.dtype, device=self.mass.device)
            inside = (labels >= start) & (labels < stop) & (mass > 0)
            rows = inside.nonzero().squeeze(-1)
            out[rows, labels[rows] - start] = 1.0
        return out if self.tiles == 1 else out.repeat(self.tiles, 1)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def kl_target(
    model_logits: torch.Tensor, head: FusedHead, chunk_size: int | None = None
) -> FusedTarget:
    """Target statistics of ``p = softmax(model_logits)``, in chunks of the vocabulary.

    Args:
        model_logits: ``(*lead, V)``, any strides (e.g. ``logits[:, shift:]``); not copied
            beyond one ``(N, C)`` block.
        head: the lens's head (its ``W`` and ``b``).
        chunk_size: ``C`` (``None``: :func:`auto_chunk_size`), here and in the loss's pass.

    Returns:
        A :class:`FusedTarget` over ``N = prod(lead)`` rows.
    """
    vocab = model_logits.shape[-1]
    if vocab != head.vocab_size:
        raise InvalidInputError(
            f"model logits have {vocab} entries per row, the head {head.vocab_size}",
            option="model_logits",
        )
    n = math.prod(model_logits.shape[:-1])
    own_chunk = _resolve_chunk(chunk_size, n, model_logits.device)
    acc = _acc_dtype(model_logits.dtype)
    device = model_logits.device
    run_max = torch.full((n,), -math.inf, dtype=acc, device=device)
    run_sum = torch.zeros(n, dtype=acc, device=device)
    for start in range(0, vocab, own_chunk):
        block = model_logits[..., start : start + own_chunk].reshape(n, -1).to(acc)
        new_max = torch.maximum(run_max, block.amax(-1))
        run_sum = run_sum * torch.exp(run_max - new_max) + (block - new_max[:, None]).exp().sum(-1)
        run_max = new_max
    log_norm = run_max + run_sum.log()
    target = FusedTarget(
        mass=torch.zeros(n, dtype=acc, device=device),
        pw=torch.zeros(n, head.weight.shape[1], dtype=acc, device=device),
        pb=torch.zeros(n, dtype=acc, device=device),
        neg_entropy=torch.zeros(n, dtype=acc, device=device),
        logits=model_logits,
        log_norm=log_norm,
        chunk_size=chunk_size,
    )
    mm = head.resolved_matmul_dtype(model_logits)
    for start in range(0, vocab, own_chunk):
        stop = min(start + own_chunk, vocab)
        p = target.probs(start, stop)
        target.mass += p.sum(-1)
        log_p = model_logits[..., start:stop].reshape(n, -1).to(acc) - log_norm[:, None]
        target.neg_entropy += torch.where(p > 0, p * log_p, 0.0).sum(-1)
        target.pw += (p.to(mm) @ head.weight[start:stop].to(mm)).to(acc)
        if head.bias is not None:
            target.pb += p @ head.bias[start:stop].to(acc)
    return target


def ce_target(
    labels: torch.Tensor,
    head: FusedHead,
    chunk_size: int | None = None,
    *,
    ignore_index: int = -100,
    dtype: torch.dtype = torch.float32,
) -> FusedTarget:
    """Target statistics of the one-hot distribution at ``labels`` (``ignore_index``: no mass).

    Args:
        labels: ``(*lead)`` token ids.
        head: the lens's head.
        chunk_size: ``C`` of the loss's pass (``None``: :func:`auto_chunk_size`).
        ignore_index: rows with this label count for nothing (as in ``F.nll_loss``).
        dtype: the accumulation dtype (float64 for ``gradcheck``).

    Returns:
        A :class:`FusedTarget` over ``N = labels.numel()`` rows.
    """
    _check_chunk(chunk_size)
    flat = labels.reshape(-1)
    valid = flat != ignore_index
    vocab = head.vocab_size
    if bool(((flat < 0) | (flat >= vocab))[valid].any()):
        raise InvalidInputError(f"labels must lie in [0, {vocab})", option="labels")
    ids = torch.where(valid, flat, 0)
    mass = valid.to(dtype)
    pw = head.weight[ids].to(dtype) * mass[:, None]
    pb = head.bias[ids].to(dtype) * mass if head.bias is not None else torch.zeros_like(mass)
    return FusedTarget(
        mass=mass,
        pw=pw,
        pb=pb,
        neg_entropy=torch.zeros_like(mass),
        labels=ids,
        chunk_size=chunk_size,
    )


def _transformed(raw: torch.Tensor, head: FusedHead) -> tuple[torch.Tensor, torch.Tensor]:
    """``(T(raw), T'(raw))`` elementwise, both ``raw``'s shape."""
    value, slope = raw, torch.ones_like(raw)
    for kind, amount in head.transforms:
        if kind == "scale":
            value, slope = value * amount, slope * amount
        else:
            squashed = torch.tanh(value / amount)
            value = squashed * amount
            slope = slope * (1.0 - squashed * squashed)
    return value, slope


def _fused_pass(
    z: torch.Tensor, head: FusedHead, target: FusedTarget, need_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-row ``lse · mass − Σ p·logit`` ``(N,)`` and its gradient w.r.t. ``z`` ``(N, d)``."""
    acc = target.mass.dtype
    mm = head.resolved_matmul_dtype(z)
    n, vocab = z.shape[0], head.vocab_size
    chunk = _resolve_chunk(target.chunk_size, n, z.device)
    factor = head.linear_factor
    z_mm = z.to(mm)
    run_max = torch.full((n,), -math.inf, dtype=acc, device=z.device)
    run_sum = torch.zeros(n, dtype=acc, device=z.device)
    soft = torch.zeros(n, z.shape[1], dtype=acc, device=z.device) if need_grad else None
    cross = torch.zeros(n, dtype=acc, device=z.device)
    pw = target.pw if factor is not None else torch.zeros_like(target.pw)
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        w_chunk = head.weight[start:stop].to(mm)
        block = (z_mm @ w_chunk.T).to(acc)
        if head.bias is not None:
            block += head.bias[start:stop].to(acc)
        slope: torch.Tensor | float
        if factor is not None:
            if factor != 1.0:
                block *= factor
            slope = factor
        else:
            block, slope = _transformed(block, head)
            p = target.probs(start, stop)
            cross += (p * block).sum(-1)
            if need_grad:
                pw = pw + ((p * slope).to(mm) @ w_chunk).to(acc)
        new_max = torch.maximum(run_max, block.amax(-1))
        rescale = torch.exp(run_max - new_max)
        block = block.sub_(new_max[:, None]).exp_()
        run_sum.mul_(rescale).add_(block.sum(-1))
        if soft is not None:
            weighted = block * slope if factor is None else block
            soft.mul_(rescale[:, None])
            if mm == acc:  # in place: no (N, d) temporaries per chunk
                soft.addmm_(weighted, w_chunk)
            else:
                soft += (weighted.to(mm) @ w_chunk).to(acc)
        run_max = new_max
    log_norm = run_max + run_sum.log()
    if factor is not None:
        cross = factor * ((z.to(acc) * target.pw).sum(-1) + target.pb)
    loss = log_norm * target.mass - cross
    if soft is None:
        return loss, None
    # d loss / d z = mass · Σ q_v T'_v W_v − Σ p_v T'_v W_v, with Σ q_v T'_v W_v = soft / S.
    grad = soft * (target.mass / run_sum)[:, None] - pw
    return loss, grad * factor if factor is not None else grad


class _FusedLensLoss(torch.autograd.Function):
    """Autograd wrapper of :func:`_fused_pass`: the gradient is computed in the forward pass."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, head: FusedHead, target: FusedTarget) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):
            loss, grad = _fused_pass(z.detach(), head, target, bool(ctx.needs_input_grad[0]))
        ctx.z_dtype = z.dtype
        ctx.save_for_backward(grad)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (grad,) = ctx.saved_tensors
        if grad is None:
            return None, None, None
        return (grad * grad_loss.to(grad.dtype)[:, None]).to(ctx.z_dtype), None, None


def fused_lens_loss(z: torch.Tensor, head: FusedHead, target: FusedTarget) -> torch.Tensor:
    """Per-row ``KL(p ‖ softmax(T(z Wᵀ + b)))`` (or cross-entropy), differentiable in ``z``.

    Args:
        z: lens states before the output projection, ``(N, d)`` (see :func:`lens_state`).
        head: the frozen output path (no gradient flows to ``W`` or ``b``).
        target: from :func:`kl_target` (KL) or :func:`ce_target` (CE) over the same ``N`` rows.

    Returns:
        ``(N,)`` in the accumulation dtype: KL per row, or CE per row (0 for ignored rows).
    """
    if z.dim() != 2 or z.shape[0] != target.mass.shape[0] or z.shape[1] != head.weight.shape[1]:
        raise InvalidInputError(
            f"z must have shape ({target.mass.shape[0]}, {head.weight.shape[1]}), "
            f"got {tuple(z.shape)}",
            option="z",
        )
    per_row = _FusedLensLoss.apply(z, head, target)
    return per_row + target.neg_entropy
