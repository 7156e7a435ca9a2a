"""Optimiser and learning-rate schedule for lens training (the original's recipe, one fix)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from tuned_lens.errors import InvalidInputError

OPTIMIZERS = ("SGD", "ADAM")


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimiser settings (the CLI's ``--optimizer``, ``--lr_scale``, ``--momentum`` …).

    Attributes:
        optimizer: ``"SGD"`` (Nesterov) or ``"ADAM"`` (amsgrad).
        lr_scale: multiplies the base learning rate: ``1 − momentum`` for SGD (so the effective
            step is about ``lr_scale``), ``1e-3`` for Adam.
        momentum: SGD momentum, or Adam's β1.
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


@dataclass(frozen=True)
class LinearWarmupDecay:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then linear decay to 0.

    Step ``t`` (0-based, the step about to be taken) gets ``(t + 1) / (warmup + 1)`` during the
    warm-up and ``(num_steps − t) / (num_steps − warmup)`` afterwards, so the factor reaches 1
    right after the warm-up, never wastes a step at 0, and decays over the *whole* remaining
    run. (The original handed ``num_steps − warmup`` to the scheduler as its horizon, so with a
    warm-up its LR hit 0 early and the last ``warmup`` steps did nothing.) With ``warmup = 0``
    the factor is ``(num_steps − t) / num_steps``, the original's.
    """

    num_steps: int
    warmup: int = 0

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
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        return max(0.0, (self.num_steps - step) / (self.num_steps - self.warmup))

    def apply(self, optimizer: torch.optim.Optimizer, *, step: int, base_lr: float) -> float:
        """Set the learning rate of every parameter group for ``step``; returns it."""
        lr = base_lr * self.factor(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr
