"""Optimiser and learning-rate schedule for lens training (the original's recipe, one fix).

``MUON`` (not the original's) runs ``torch.optim.Muon`` (torch >= 2.9) on the translators'
``(d, d)`` matrices and Nesterov SGD on their biases, as one :class:`MuonWithBiases` optimiser
(one state dict, so checkpoints and resume work unchanged). ``WHITENED`` (not the original's)
is :class:`~tuned_lens.training.whitened.WhitenedSGD`: Nesterov SGD preconditioned by each
layer's input second moment, which the least-squares initialisation provides.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from tuned_lens.errors import InvalidInputError, MissingDependencyError
from tuned_lens.training.whitened import WHITENED_BASE_LR, WhitenedSGD

OPTIMIZERS = ("SGD", "ADAM", "MUON", "WHITENED")
MUON_BASE_LR = 0.02
"""Muon's learning rate at ``lr_scale = 1`` (the matrices; the biases get SGD's)."""


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimiser settings (the CLI's ``--optimizer``, ``--lr_scale``, ``--momentum`` …).

    Attributes:
        optimizer: ``"SGD"`` (Nesterov), ``"ADAM"`` (amsgrad), ``"MUON"`` (Muon on the
            matrices, Nesterov SGD on the biases; needs torch >= 2.9) or ``"WHITENED"``
            (input-whitened Nesterov SGD; needs ``init="least_squares"``).
        lr_scale: multiplies the base learning rate: ``1 − momentum`` for SGD (so the effective
            step is about ``lr_scale``), ``1e-3`` for Adam, :data:`MUON_BASE_LR` for Muon's
            matrices (its biases get SGD's ``lr_scale · (1 − momentum)``),
            :data:`~tuned_lens.training.whitened.WHITENED_BASE_LR` for WHITENED (divided by
            ``d + 1`` inside the step).
        momentum: SGD (and Muon) momentum, or Adam's β1.
        weight_decay: classic coupled L2 (pulls the residual translator towards identity).
        warmup_steps: linear warm-up length; ``None`` means ``min(1000, num_steps // 5)`` for
            Adam and 0 for SGD.
    """

    optimizer: str = "SGD"
    lr_scale: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        name = self.optimizer.upper()
        if name not in OPTIMIZERS:
            raise InvalidInputError(
                f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}", option="optimizer"
            )
        object.__setattr__(self, "optimizer", name)
        if not 0.0 <= self.momentum < 1.0:  # also refuses NaN
            raise InvalidInputError(
                f"momentum must be in [0, 1), got {self.momentum}", option="momentum"
            )
        if not (math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise InvalidInputError(
                f"lr_scale must be a finite number > 0, got {self.lr_scale}", option="lr_scale"
            )
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidInputError(
                f"weight_decay must be a finite number >= 0, got {self.weight_decay}",
                option="weight_decay",
            )
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise InvalidInputError(
                f"warmup_steps must be >= 0, got {self.warmup_steps}", option="warmup_steps"
            )

    @property
    def base_lr(self) -> float:
        if self.optimizer == "SGD":
            return self.lr_scale * (1.0 - self.momentum)
        if self.optimizer == "MUON":
            return self.lr_scale * MUON_BASE_LR
        if self.optimizer == "WHITENED":
            return self.lr_scale * WHITENED_BASE_LR
        return self.lr_scale * 1e-3

    def resolved_warmup(self, num_steps: int) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, max(0, num_steps - 1))
        if self.optimizer == "ADAM":
            return min(1000, num_steps // 5)
        return 0

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        params = list(params)
        if not params:
            raise InvalidInputError("no trainable lens parameters")
        if self.optimizer == "MUON":
            return MuonWithBiases(
                params,
                lr=self.base_lr,
                bias_lr=self.lr_scale * (1.0 - self.momentum),
                momentum=self.momentum,
                weight_decay=self.weight_decay,
            )
        if self.optimizer == "WHITENED":
            return WhitenedSGD(
                params, lr=self.base_lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        if self.optimizer == "SGD":
            return torch.optim.SGD(
                params,
                lr=self.base_lr,
                momentum=self.momentum,
                nesterov=self.momentum > 0,
                weight_decay=self.weight_decay,
            )
        return torch.optim.Adam(
            params,
            lr=self.base_lr,
            betas=(self.momentum, 0.999),
            amsgrad=True,
            weight_decay=self.weight_decay,
        )


def require_muon() -> Any:
    """``torch.optim.Muon``.

    Raises:
        MissingDependencyError: this torch predates it (added in 2.9).
    """
    muon = getattr(torch.optim, "Muon", None)
    if muon is None:
        raise MissingDependencyError(
            f"optimizer MUON needs torch >= 2.9 (torch.optim.Muon); this is torch "
            f"{torch.__version__}: upgrade torch or use SGD/ADAM"
        )
    return muon


class MuonWithBiases(torch.optim.Optimizer):
    """Muon for the 2-D parameters, Nesterov SGD (coupled L2) for the others, as one optimiser.

    Both inner optimisers share this one's ``param_groups`` (group dicts) and ``state``, so
    ``state_dict`` / ``load_state_dict`` / ``zero_grad`` and the schedule (which reads each
    group's ``base_lr``) see a single ordinary optimiser.

    Args:
        params: the trainable parameters (matrices ``(d, d)`` and biases ``(d,)``).
        lr: Muon's learning rate (its default ``adjust_lr_fn``: square matrices unscaled).
        bias_lr: SGD's learning rate for the non-matrix parameters.
        momentum: both optimisers' (Nesterov) momentum.
        weight_decay: Muon's decoupled and SGD's coupled weight decay.

    Raises:
        MissingDependencyError: torch < 2.9.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        *,
        lr: float,
        bias_lr: float,
        momentum: float,
        weight_decay: float,
    ):
        muon_cls = require_muon()
        params = list(params)
        matrices = [p for p in params if p.dim() == 2]
        others = [p for p in params if p.dim() != 2]
        self._inner: list[tuple[torch.optim.Optimizer, int]] = []
        groups: list[dict] = []
        if matrices:
            muon = muon_cls(
                matrices, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
            )
            self._inner.append((muon, len(muon.param_groups)))
        if others:
            sgd = torch.optim.SGD(
                others,
                lr=bias_lr,
                momentum=momentum,
                nesterov=momentum > 0,
                weight_decay=weight_decay,
            )
            self._inner.append((sgd, len(sgd.param_groups)))
        for inner, _ in self._inner:
            for group in inner.param_groups:
                group["base_lr"] = group["lr"]
                groups.append(group)
        super().__init__([{"params": g["params"]} for g in groups], {})
        self.param_groups = groups
        self._link()

    def _link(self) -> None:
        """Point the inner optimisers at this one's group dicts and state."""
        offset = 0
        for inner, count in self._inner:
            inner.param_groups = self.param_groups[offset : offset + count]
            inner.state = self.state
            offset += count

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._link()

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One step of each inner optimiser (no closure)."""
        for inner, _ in self._inner:
            inner.step()


@dataclass(frozen=True)
class LinearWarmupDecay:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then linear decay to 0.

    Step ``t`` (0-based, the step about to be taken) gets ``(t + 1) / (warmup + 1)`` during the
    warm-up and ``(num_steps − t) / (num_steps − warmup)`` afterwards, so the factor reaches 1
    right after the warm-up, never wastes a step at 0, and decays over the *whole* remaining
    run. (The original handed ``num_steps − warmup`` to the scheduler as its horizon, so with a
    warm-up its LR hit 0 early and the last ``warmup`` steps did nothing.) With ``warmup = 0``
    the factor is ``(num_steps − t) / num_steps``, the original's.

    ``offset`` shifts the whole schedule: step ``offset + t`` gets the factor of ``t`` (a run
    whose first ``offset`` steps of data went to the least-squares initialisation).
    """

    num_steps: int
    warmup: int = 0
    offset: int = 0

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise InvalidInputError(
                f"num_steps must be >= 1, got {self.num_steps}", option="num_steps"
            )
        if not 0 <= self.warmup < self.num_steps:
            raise InvalidInputError(
                f"warm-up {self.warmup} must be in [0, num_steps={self.num_steps})",
                option="warmup_steps",
            )

    def factor(self, step: int) -> float:
        step -= self.offset
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.num_steps - step) / (self.num_steps - self.warmup))

    def apply(self, optimizer: torch.optim.Optimizer, *, step: int, base_lr: float) -> float:
        """Set the learning rate of every parameter group for ``step``; returns ``base_lr``'s.

        A group with its own ``base_lr`` entry (:class:`MuonWithBiases`) is scaled from it.
        """
        factor = self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = group.get("base_lr", base_lr) * factor
        return base_lr * factor
