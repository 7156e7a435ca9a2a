"""Map residual-stream hidden states to logits the way the model does (and back, approximately)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from ..architectures import resolve_architecture
from ..errors import InvalidInputError
from ..utils import tensor_hash_of

__all__ = ["InversionOutput", "Unembed"]


@dataclass
class InversionOutput:
    """Result of :meth:`Unembed.invert`.

    Attributes:
        preimage: The found hidden state *after* the final norm, shape ``(..., d_model)``.
        grad_norm: Norm of the objective's gradient at the solution (scalar tensor).
        kl: ``KL(p || q)`` at the solution, averaged over leading dimensions (scalar tensor).
        loss: The optimised objective (``kl`` plus the weighted prior term), scalar tensor.
        nfev: Number of objective evaluations.
    """

    preimage: torch.Tensor
    grad_norm: torch.Tensor
    kl: torch.Tensor
    loss: torch.Tensor
    nfev: int


class Unembed(nn.Module):
    """The model's own path from the residual stream to logits, frozen.

    ``forward(h) = post(lm_head(pre(final_norm(h))))``, where every piece is a deep copy of the
    corresponding module of the model: the final norm (identity if the model has none, e.g.
    OPT-350m), an optional projection before the head (OPT-350m's ``project_out``), the output
    projection, and the model's logit post-processing (Gemma-2/3 soft-capping, Cohere/Granite
    scaling). Applied to the residual stream entering the final norm it reproduces the model's
    logits.

    Args:
        model: A Hugging Face causal LM (or TransformerLens ``HookedTransformer`` or
            ``TransformerBridge``, or an nnsight model) whose architecture
            :func:`tuned_lens.architectures.resolve_architecture` knows.

    Attributes:
        final_norm: The copied final norm (``nn.Identity`` when the model has none).
        pre_unembed: The copied projection before the head (``nn.Identity`` when absent).
        unembedding: The copied output projection, ``nn.Linear(d_unembed, vocab)``.
        logit_transform: The copied logit post-processing (``nn.Sequential``, maybe empty).
        model_name_or_path: ``model.config.name_or_path`` when known, else ``None``.
    """

    final_norm: nn.Module
    pre_unembed: nn.Module
    unembedding: nn.Linear
    logit_transform: nn.Sequential

    def __init__(self, model: nn.Module):
        super().__init__()
        from ..integrations import unwrap_model
        from ..integrations.transformer_lens import model_name_or_path

        model = unwrap_model(model)  # an nnsight model: the Hugging Face model inside it
        parts = resolve_architecture(model)
        self.final_norm = copy.deepcopy(parts.final_norm) if parts.final_norm else nn.Identity()
        self.pre_unembed = copy.deepcopy(parts.pre_unembed) if parts.pre_unembed else nn.Identity()
        self.unembedding = copy.deepcopy(parts.unembedding)
        self.logit_transform = nn.Sequential(*copy.deepcopy(parts.logit_transforms))
        self.requires_grad_(False)
        config = getattr(model, "config", None)
        self.model_name_or_path: str | None = getattr(config, "name_or_path", None) or None
        if parts.source == "transformer_lens":
            self.model_name_or_path = getattr(model.cfg, "model_name", None)
        elif parts.source == "transformer_bridge":
            self.model_name_or_path = model_name_or_path(model)
        self.d_model = self._infer_d_model(model)

    def _infer_d_model(self, model: nn.Module) -> int:
        config = getattr(model, "config", None)
        if config is not None:
            text = config.get_text_config() if hasattr(config, "get_text_config") else config
            size = getattr(text, "hidden_size", None)
            if isinstance(size, int):
                return size
        cfg = getattr(model, "cfg", None)
        if cfg is not None and isinstance(getattr(cfg, "d_model", None), int):
            return cfg.d_model
        if isinstance(self.pre_unembed, nn.Linear):
            return self.pre_unembed.in_features
        return self.unembedding.in_features

    @property
    def vocab_size(self) -> int:
        """Number of logits per position."""
        return self.unembedding.out_features

    def unembedding_hash(self) -> str:
        """Fingerprint of the output projection, compatible with the original's ``unembed_hash``.

        ``sha256(np.array_str(W_U.float().numpy(), precision=1))`` under numpy's default print
        options; see :func:`tuned_lens.utils.tensor_hash` for what it does and does not detect.
        """
        return tensor_hash_of(self.unembedding.weight)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Convert hidden states into logits.

        Args:
            h: Residual-stream states, shape ``(..., d_model)``.

        Returns:
            Logits of shape ``(..., vocab_size)``.
        """
        if h.shape[-1] != self.d_model:
            raise InvalidInputError(
                f"h must have last dimension d_model={self.d_model}, got shape {tuple(h.shape)}"
            )
        return self.logit_transform(self.unembedding(self.pre_unembed(self.final_norm(h))))

    def _linear_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W, b)`` with ``logits ≈ W x + b`` for the state ``x`` after the final norm."""
        weight = self.unembedding.weight.detach().float()
        head_bias = self.unembedding.bias
        bias = head_bias.detach().float() if head_bias is not None else torch.zeros(weight.shape[0])
        bias = bias.to(weight.device)
        if isinstance(self.pre_unembed, nn.Linear):
            proj = self.pre_unembed.weight.detach().float()
            if self.pre_unembed.bias is not None:
                bias = bias + weight @ self.pre_unembed.bias.detach().float()
            weight = weight @ proj
        return weight, bias

    def _least_squares_start(self, logits: torch.Tensor) -> torch.Tensor:
        # Logits are only defined up to an additive constant, so fit centred logits with the
        # centred map: minimise ||(W - mean W) x - (logits - b - mean)||² over x.
        weight, bias = self._linear_map()
        weight = weight - weight.mean(dim=0, keepdim=True)
        target = logits.float() - bias
        target = target - target.mean(dim=-1, keepdim=True)
        flat = target.reshape(-1, target.shape[-1]).T  # (vocab, N)
        solution = torch.linalg.lstsq(weight.cpu(), flat.cpu()).solution  # (d_unembed, N)
        x = solution.T.reshape(*logits.shape[:-1], weight.shape[1]).to(logits.device)
        if x.shape[-1] != self.d_model:
            # A projection we cannot invert linearly (not an nn.Linear): start from zeros.
            return torch.zeros(*logits.shape[:-1], self.d_model, device=logits.device)
        return x

    def invert(
        self,
        logits: torch.Tensor,
        *,
        h0: torch.Tensor | None = None,
        max_iter: int = 1000,
        optimizer: Literal["lbfgs", "sgd"] = "lbfgs",
        prior_weight: float = 0.0,
        prior: Any = None,
        step_size: float = 1.0,
        tol: float = 1e-3,
        weight: torch.Tensor | None = None,
    ) -> InversionOutput:
        """Find a hidden state whose unembedding matches the distribution of ``logits``.

        Solves ``h* = argmin_h KL(p || softmax(U(h)))`` with ``p = softmax(logits)`` by gradient
        descent. The unembedding's image is a ``d_model``-dimensional subspace (the softmax
        bottleneck), so in general the match is approximate.

        Args:
            logits: Target logits, shape ``(..., vocab_size)``.
            h0: Initial hidden state, shape ``(..., d_model)``. If ``None``, the least-squares
                solution of ``W_U x = logits`` (both centred over the vocabulary, the head's
                bias subtracted) is used as the starting point.
            max_iter: Maximum number of objective evaluations.
            optimizer: ``"lbfgs"`` (strong-Wolfe line search) or ``"sgd"``.
            prior_weight: Weight of the prior term in the loss.
            prior: A ``torch.distributions.Distribution`` over post-norm hidden states; the loss
                adds ``-prior_weight * mean(prior.log_prob(final_norm(h)))``.
            step_size: Learning rate of the optimizer.
            tol: Stop when the gradient norm or the loss falls below this value (also L-BFGS's
                ``tolerance_change``).
            weight: Optional per-token weights, shape ``(..., vocab_size)``, multiplied into
                ``p`` (not renormalised). The caller's tensor is not modified.

        Returns:
            An :class:`InversionOutput`; ``preimage`` is the state after the final norm.

        Raises:
            InvalidInputError: On shape mismatches or an unknown optimizer (a ``ValueError``).
            RuntimeError: If the objective becomes non-finite.
        """
        h0 = self._check_inversion_inputs(logits, h0, optimizer, max_iter, weight)
        dtype = self.unembedding.weight.dtype
        # Optimise in float32 whatever the model's dtype; cast for the forward pass only.
        device = self.unembedding.weight.device
        h = nn.Parameter(h0.detach().to(device=device, dtype=torch.float32).clone())
        opt = _inversion_optimizer(h, optimizer, step_size=step_size, max_iter=max_iter, tol=tol)
        objective = _InversionObjective(
            self, h, opt, _target_probs(logits, weight), dtype, prior, prior_weight
        )
        with torch.enable_grad():
            grad_norm = torch.tensor(math.inf)
            while objective.nfev < max_iter:
                opt.step(objective)  # type: ignore[arg-type]  # torch accepts a tensor loss
                grad_norm = h.grad.detach().norm() if h.grad is not None else grad_norm
                if grad_norm < tol or objective.loss < tol:
                    break
            # Report the objective at the final point (L-BFGS may have moved after its last call).
            objective()
            assert h.grad is not None  # the objective just back-propagated into h
            grad_norm = h.grad.detach().norm()

        with torch.no_grad():
            preimage = self.final_norm(h.detach().to(dtype))
        return InversionOutput(
            preimage=preimage,
            grad_norm=grad_norm,
            kl=objective.kl,
            loss=objective.loss,
            nfev=objective.nfev,
        )

    def _check_inversion_inputs(
        self,
        logits: torch.Tensor,
        h0: torch.Tensor | None,
        optimizer: str,
        max_iter: int,
        weight: torch.Tensor | None,
    ) -> torch.Tensor:
        """Validate :meth:`invert`'s arguments; returns the start ``h0`` ``(..., d_model)``."""
        if logits.shape[-1] != self.vocab_size:
            raise InvalidInputError(
                f"logits must have last dimension vocab_size={self.vocab_size}, "
                f"got shape {tuple(logits.shape)}",
                option="logits",
            )
        if optimizer not in ("lbfgs", "sgd"):
            raise InvalidInputError(
                f"optimizer must be 'lbfgs' or 'sgd', got {optimizer!r}", option="optimizer"
            )
        if max_iter < 1:
            raise InvalidInputError(f"max_iter must be >= 1, got {max_iter}", option="max_iter")
        leading = logits.shape[:-1]
        if h0 is None:
            h0 = self._least_squares_start(logits)
        elif h0.shape != (*leading, self.d_model):
            raise InvalidInputError(
                f"h0 must have shape {(*leading, self.d_model)}, got {tuple(h0.shape)}",
                option="h0",
            )
        if weight is not None and weight.shape != logits.shape:
            raise InvalidInputError(
                f"weight must have the shape of logits {tuple(logits.shape)}, "
                f"got {tuple(weight.shape)}",
                option="weight",
            )
        return h0


def _target_probs(logits: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """``softmax(logits)`` in float32, times ``weight`` when given (not renormalised)."""
    p = logits.detach().float().log_softmax(dim=-1).exp()
    return p * weight.float() if weight is not None else p


def _inversion_optimizer(
    h: nn.Parameter, optimizer: str, *, step_size: float, max_iter: int, tol: float
) -> torch.optim.Optimizer:
    """L-BFGS with a strong-Wolfe line search, or plain SGD, over the one parameter ``h``."""
    if optimizer == "lbfgs":
        return torch.optim.LBFGS(
            [h],
            lr=step_size,
            max_iter=max_iter,
            tolerance_change=tol,
            line_search_fn="strong_wolfe",
        )
    return torch.optim.SGD([h], lr=step_size)


class _InversionObjective:
    """The closure :meth:`Unembed.invert` optimises: ``KL(p || softmax(U(h)))`` plus the
    weighted negative prior log-likelihood of ``final_norm(h)``; counts its evaluations and
    keeps the last ``kl`` and ``loss`` (scalar tensors)."""

    def __init__(
        self,
        unembed: Unembed,
        h: nn.Parameter,
        opt: torch.optim.Optimizer,
        p: torch.Tensor,
        dtype: torch.dtype,
        prior: Any,
        prior_weight: float,
    ) -> None:
        self.unembed, self.h, self.opt, self.p, self.dtype = unembed, h, opt, p, dtype
        self.p_log_p = torch.xlogy(p, p)  # 0 · log 0 = 0
        self.prior, self.prior_weight = prior, prior_weight
        self.nfev = 0
        self.kl = torch.tensor(math.nan)
        self.loss = torch.tensor(math.nan)

    def __call__(self) -> torch.Tensor:
        self.nfev += 1
        self.opt.zero_grad(set_to_none=False)
        h = self.h.to(self.dtype)
        log_q = self.unembed(h).float().log_softmax(dim=-1)
        kl = (self.p_log_p - self.p * log_q).sum(dim=-1).nanmean()
        loss = kl
        if self.prior is not None and self.prior_weight > 0:
            post_norm = self.unembed.final_norm(h).float()
            loss = loss - self.prior_weight * self.prior.log_prob(post_norm).mean()
        if not torch.isfinite(loss):
            raise RuntimeError(f"inversion objective became non-finite ({loss.item()})")
        loss.backward()
        self.kl, self.loss = kl.detach(), loss.detach()
        return loss
