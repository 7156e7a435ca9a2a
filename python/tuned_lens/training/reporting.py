"""What a training run shows and logs: the progress bar and optional Weights & Biases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuned_lens.errors import MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.training.train_config import TrainConfig

__all__ = ["WANDB_MISSING", "WandbLogger", "progress_bar", "report_step", "require_wandb"]

WANDB_MISSING = "W&B logging needs the wandb package: pip install 'tuned-lens-rs[wandb]'"


def require_wandb() -> None:
    """Fail early, before any loading, when W&B logging is asked for but not installed.

    Raises:
        MissingDependencyError: ``wandb`` is not installed.
    """
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise MissingDependencyError(WANDB_MISSING)


class WandbLogger:
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


def progress_bar(config: TrainConfig, primary: bool, start_step: int) -> Any:
    """A tqdm bar on the primary process when asked for and steps remain, else ``None``."""
    if not (config.progress and primary and start_step < config.num_steps):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.num_steps, initial=start_step, desc="Training lens", unit="step")


def report_step(
    progress: Any,
    wandb_logger: WandbLogger,
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
