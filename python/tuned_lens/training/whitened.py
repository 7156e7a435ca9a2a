"""Input-whitened Nesterov SGD for affine translators (``--optimizer whitened``; not the original's).

A translator ``y = h + W h + b`` is linear in ``[W | b]`` with input ``x̃ = [h; 1]``. Residual
streams are very anisotropic (a few directions carry most of the variance), so plain SGD on
``[W | b]`` moves fast along them and barely at all along the rest: the original's recipe needs
hundreds of steps. Preconditioning each gradient on the right by the inverse second moment of
the layer's input, ``G ← G · (E[x̃ x̃ᵀ] + δ I)⁻¹``, is the Gauss–Newton step of a least-squares
problem in input space (the input factor of K-FAC), which makes the step equally effective in
every direction. The output factor is left out on purpose: its sampled Fisher is nearly
singular along each token's own residual (the final norm is scale-invariant) and made K-FAC
diverge in the measurements of docs/training.md.

The second moments come free from the least-squares initialisation's float64 sums (the same
tokens), so this optimiser needs ``init="least_squares"``; they are part of the optimiser state,
so a resumed run continues with the same preconditioner.

The learning rate is divided by ``d + 1``: ``E[x̃ᵀ M⁻¹ x̃] = tr(M⁻¹ M) = d + 1``, so this keeps the
average change of the translator's output per unit of gradient independent of the width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from tuned_lens.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.nn.shortcut_lens import AffineLeastSquares

__all__ = [
    "WHITENED_BASE_LR",
    "SAMPLE_DAMPING",
    "WHITENING_DAMPING",
    "WhitenedSGD",
    "install_preconditioners",
    "second_moment",
]

WHITENED_BASE_LR = 2560.0
"""The learning rate at ``lr_scale = 1`` before the division by ``d + 1`` (glassllm: 19.8)."""
WHITENING_DAMPING = 1e-3
"""The least ``δ``, relative to the mean eigenvalue of the second moment."""
SAMPLE_DAMPING = 0.2
"""``δ`` grows as ``SAMPLE_DAMPING · (d + 1) / n`` for a sample of ``n`` tokens: a moment
estimated from few tokens is noisy in its small directions, which the inverse amplifies most
(256-token steps on glassllm diverged at ``δ = 1e-3`` and trained well at 0.1)."""


def second_moment(
    n: int, sum_x: torch.Tensor, sum_xx: torch.Tensor, *, damping: float | None = None
) -> torch.Tensor:
    """The inverse of ``E[x̃ x̃ᵀ] + δ I`` for ``x̃ = [x; 1]``, from streaming sums, float64.

    Args:
        n: number of samples.
        sum_x: ``Σ x``, shape ``(d,)``.
        sum_xx: ``Σ x xᵀ``, shape ``(d, d)``.
        damping: ``δ`` relative to ``tr(E[x̃ x̃ᵀ]) / (d + 1)``; default
            ``max(WHITENING_DAMPING, SAMPLE_DAMPING · (d + 1) / n)``.

    Returns:
        ``(d + 1, d + 1)`` float64, symmetric positive definite.

    Raises:
        InvalidInputError: no samples.
    """
    if n < 1:
        raise InvalidInputError("no samples for the whitening preconditioner", option="init")
    d = sum_x.shape[0]
    if damping is None:
        damping = max(WHITENING_DAMPING, SAMPLE_DAMPING * (d + 1) / n)
    moment = torch.empty(d + 1, d + 1, dtype=torch.float64)
    moment[:d, :d] = sum_xx.double() / n
    moment[:d, d] = moment[d, :d] = sum_x.double() / n
    moment[d, d] = 1.0
    moment += damping * float(torch.trace(moment)) / (d + 1) * torch.eye(d + 1, dtype=torch.float64)
    return torch.cholesky_inverse(torch.linalg.cholesky(moment))


class WhitenedSGD(torch.optim.Optimizer):
    """Nesterov SGD on ``[W | b]`` of each translator, right-preconditioned by its input.

    One parameter group per translator (its ``weight`` ``(d, d)`` and ``bias`` ``(d,)``).
    Weight decay is coupled L2 (added to the gradient before the preconditioner), as in SGD.

    Args:
        params: the translators' parameters in layer order, ``weight₀, bias₀, weight₁, …``
            (``nn.ModuleList.parameters()`` of ``nn.Linear(d, d)`` translators).
        lr: the learning rate before the division by ``d + 1``.
        momentum: Nesterov momentum.
        weight_decay: coupled L2.

    Raises:
        InvalidInputError: parameters that are not (square weight, bias) pairs (low-rank
            translators, ``bias_only``).
    """

    def __init__(
        self,
        params: Sequence[torch.nn.Parameter],
        *,
        lr: float,
        momentum: float,
        weight_decay: float,
    ):
        pairs = list(zip(params[0::2], params[1::2]))
        square = all(
            w.dim() == 2 and w.shape[0] == w.shape[1] and b.shape == (w.shape[0],) for w, b in pairs
        )
        if not pairs or len(params) % 2 or not square:
            raise InvalidInputError(
                "optimizer WHITENED needs full (d, d) translators with biases "
                "(not low-rank ones, not bias_only)",
                option="optimizer",
            )
        super().__init__(
            [{"params": [w, b]} for w, b in pairs],
            {"lr": lr, "momentum": momentum, "weight_decay": weight_decay},
        )

    def set_preconditioners(self, inverses: Sequence[torch.Tensor]) -> None:
        """Install one ``(d + 1, d + 1)`` inverse second moment per translator (float64 ok).

        Raises:
            InvalidInputError: the wrong number or shape of matrices.
        """
        if len(inverses) != len(self.param_groups):
            raise InvalidInputError(
                f"{len(inverses)} preconditioners for {len(self.param_groups)} translators"
            )
        for group, inverse in zip(self.param_groups, inverses):
            weight = group["params"][0]
            d = weight.shape[1]
            if tuple(inverse.shape) != (d + 1, d + 1):
                raise InvalidInputError(
                    f"preconditioner of shape {tuple(inverse.shape)} for a {d}-wide translator"
                )
            self.state[weight]["precond"] = inverse.to(weight.device, weight.dtype)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One step (no closure).

        Raises:
            InvalidInputError: no preconditioner was installed (a run without the fit).
        """
        for group in self.param_groups:
            weight, bias = group["params"]
            if weight.grad is None or bias.grad is None:
                continue
            state = self.state[weight]
            if "precond" not in state:
                raise InvalidInputError(
                    "optimizer WHITENED has no preconditioner: it needs init least_squares",
                    option="optimizer",
                )
            grad = torch.cat([weight.grad, bias.grad[:, None]], dim=1)  # (d, d + 1)
            if group["weight_decay"]:
                grad = grad + group["weight_decay"] * torch.cat([weight, bias[:, None]], dim=1)
            grad = grad @ state["precond"]
            momentum = group["momentum"]
            if momentum:
                # The buffer is kept per parameter (weight and bias each have a state, as the
                # checkpoint's completeness check expects).
                bias_state = self.state[bias]
                if "momentum_buffer" in state:
                    old = torch.cat(
                        [state["momentum_buffer"], bias_state["momentum_buffer"][:, None]], 1
                    )
                    buf = old.mul_(momentum).add_(grad)
                else:
                    buf = grad.clone()
                state["momentum_buffer"] = buf[:, :-1].contiguous()
                bias_state["momentum_buffer"] = buf[:, -1].contiguous()
                grad = grad.add(buf, alpha=momentum)
            lr = group["lr"] / (weight.shape[1] + 1)
            weight.add_(grad[:, :-1], alpha=-lr)
            bias.add_(grad[:, -1], alpha=-lr)


def install_preconditioners(
    optimizer: torch.optim.Optimizer, sums: Sequence[AffineLeastSquares]
) -> None:
    """Give a :class:`WhitenedSGD` its preconditioners from the least-squares fit's sums.

    Any other optimiser is left alone, so the training loop calls this after every fit.
    """
    if isinstance(optimizer, WhitenedSGD):
        optimizer.set_preconditioners([second_moment(a.n, a.sum_x, a.sum_xx) for a in sums])
