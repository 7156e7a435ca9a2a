"""The settings and the result of one training run (``tuned-lens train``'s loop flags)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tuned_lens.errors import InvalidInputError
from tuned_lens.training.init import INITS
from tuned_lens.training.optim import OptimizerConfig

__all__ = ["FAST_RECIPE", "LOSSES", "RECIPES", "TrainConfig", "TrainResult"]

LOSSES = ("KL", "CE")
RECIPES = ("original", "fast")

FAST_RECIPE = {
    "init": "least_squares",
    "optimizer": "WHITENED",
    "lr_scale": 1.0,
    "warmup_steps": 0,
    "weight_decay": 0.0,
}
"""What ``recipe="fast"`` sets (chosen by measurement; see docs/training.md)."""


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
        rank: train low-rank translators ``h + U Vᵀ h + b`` of this rank (``None``: full).
        init: ``"identity"`` (the original's: every translator starts at zero, the logit lens)
            or ``"least_squares"`` (the linear shortcut fitted on the start of the stream).
        init_tokens: tokens of the training stream the least-squares fit reads, a multiple of
            ``tokens_per_step`` (``None``: one step's). They count toward the budget: gradient
            training takes the remaining ``num_steps − init_tokens / tokens_per_step`` steps.
        recipe: ``"original"`` (the settings as given) or ``"fast"``: sets ``init`` and the
            optimiser's name, ``lr_scale``, warm-up and weight decay to :data:`FAST_RECIPE`
            (the preset wins over those fields; momentum stays as given).
        fused_loss: compute the loss fused with the unembedding, a chunk of the vocabulary at
            a time (:mod:`~tuned_lens.training.fused_loss`), where the lens's output path allows
            it; ``False``: materialise each layer's ``(B, T, V)`` logits (same lens to float
            tolerance, more memory, slower).
        loss_chunk_size: vocabulary rows per chunk of the fused loss (``None``: automatic,
            :func:`~tuned_lens.training.fused_loss.auto_chunk_size`).
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
    rank: int | None = None
    init: str = "identity"
    init_tokens: int | None = None
    recipe: str = "original"
    fused_loss: bool = True
    loss_chunk_size: int | None = None

    def __post_init__(self) -> None:
        self._apply_recipe()
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
            "rank": self.rank,
            "init_tokens": self.init_tokens,
            "loss_chunk_size": self.loss_chunk_size,
        }
        for option, value in at_least_one.items():
            if value is not None and value < 1:
                raise InvalidInputError(f"{option} must be >= 1, got {value}", option=option)
        if self.token_shift is not None and self.token_shift < 0:
            raise InvalidInputError(
                f"token_shift must be >= 0, got {self.token_shift}", option="token_shift"
            )
        if self.init_tokens is not None and self.init_tokens % self.tokens_per_step:
            raise InvalidInputError(
                f"init_tokens {self.init_tokens} must be a multiple of tokens_per_step "
                f"{self.tokens_per_step}",
                option="init_tokens",
            )
        if self.optimizer.optimizer == "WHITENED" and self.init != "least_squares":
            raise InvalidInputError(
                "optimizer WHITENED needs init least_squares (its preconditioner is the "
                "fit's input second moment)",
                option="optimizer",
            )
        if self.init == "least_squares" and self.init_steps > self.num_steps:
            raise InvalidInputError(
                f"init_tokens {self.init_tokens} exceed the budget of {self.num_steps} steps of "
                f"{self.tokens_per_step} tokens",
                option="init_tokens",
            )

    def _apply_recipe(self) -> None:
        self.recipe = self.recipe.lower()
        if self.recipe not in RECIPES:
            raise InvalidInputError(
                f"recipe must be one of {RECIPES}, got {self.recipe!r}", option="recipe"
            )
        if self.recipe == "fast":
            fast = dict(FAST_RECIPE)
            self.init = str(fast.pop("init"))
            self.optimizer = replace(self.optimizer, **fast)  # type: ignore[arg-type]
        self.init = self.init.lower()
        if self.init not in INITS:
            raise InvalidInputError(
                f"init must be one of {INITS}, got {self.init!r}", option="init"
            )

    @property
    def init_steps(self) -> int:
        """Steps of the stream that go to the least-squares fit (0 for the identity init)."""
        if self.init != "least_squares":
            return 0
        return 1 if self.init_tokens is None else self.init_tokens // self.tokens_per_step

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
        start_step: the step the run started from (> 0 after a resume, or after the
            least-squares fit's steps).
        resumed: whether the run continued from a snapshot.
        steps_per_second: optimiser steps per second of wall time in this process.
        tokens_per_second: training tokens per second over all processes.
    """

    losses: list[list[float]]
    learning_rates: list[float]
    start_step: int
    resumed: bool = False
    steps_per_second: float = 0.0
    tokens_per_second: float = 0.0
