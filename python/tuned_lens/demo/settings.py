"""What decides a demo run (:class:`DemoSettings`) and what it wrote (:class:`DemoOutputs`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuned_lens.demo.budget import FULL_BUDGET
from tuned_lens.errors import InvalidInputError

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_MODEL",
    "DEFAULT_OUTPUT",
    "DEFAULT_SENTENCES",
    "DemoOutputs",
    "DemoSettings",
    "Fingerprint",
    "Log",
]

DEFAULT_OUTPUT = Path("tuned-lens-demo")
DEFAULT_MODEL = "glassllm"
DEFAULT_DATA = "tinyshakespeare"
# Sentences for the trajectory pictures: one in the style glassllm was trained on (Carroll), one
# from the demo's own data (Shakespeare), and one plain modern sentence.
DEFAULT_SENTENCES = (
    "Alice was beginning to get very tired of sitting by her sister.",
    "To be, or not to be, that is the question.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
)

#: Where the demo's progress lines go (``print`` by default).
Log = Callable[[str], None]
#: The settings a trained lens depends on, as recorded in the state file.
Fingerprint = dict[str, str | int]

#: The training recipes (``tuned_lens.training.train_config.RECIPES``, without importing torch).
DEMO_RECIPES = ("fast", "original")
_POSITIVE = ("steps", "tokens_per_step", "seq_len", "eval_tokens", "checkpoint_freq")


@dataclass(frozen=True)
class DemoSettings:
    """Everything that decides what the demo computes.

    Attributes:
        output: folder that receives every result.
        model: ``"glassllm"``, ``"smollm2"``, a local Hugging Face model folder, or a Hub id
            that is already in the local cache.
        data: ``"tinyshakespeare"``, or a local ``.txt``/``.jsonl`` file or folder.
        steps: optimiser steps.
        tokens_per_step: training tokens per step (a multiple of ``seq_len``).
        seq_len: tokens per training/evaluation chunk (capped by the tokenizer's maximum).
        eval_tokens: held-out tokens to evaluate on (fewer if the held-out text is shorter).
        seed: seed of the chunk order.
        checkpoint_freq: steps between training snapshots.
        sentences: texts for the trajectory pictures.
        text_column: field of ``.jsonl`` records that holds the text.
        force: redo every stage even when its results exist.
        png: also write PNG pictures when a Chromium is available.
        recipe: the training recipe, ``"fast"`` (least squares + whitened SGD, the default)
            or ``"original"`` (the original tuned-lens recipe); see docs/training.md.
        device: ``"cpu"``, ``"cuda"``, … (default: CUDA when available).
        threads: CPU threads for torch (default: 1 for models under 50 M parameters on the
            CPU, whose small matrix products lose more to thread start-up than they gain,
            else torch's default).

    Raises:
        InvalidInputError: a value out of range (naming the option by its Python name).
    """

    output: Path = DEFAULT_OUTPUT
    model: str = DEFAULT_MODEL
    data: str = DEFAULT_DATA
    steps: int = FULL_BUDGET.steps
    tokens_per_step: int = FULL_BUDGET.tokens_per_step
    seq_len: int = FULL_BUDGET.seq_len
    eval_tokens: int = FULL_BUDGET.eval_tokens
    seed: int = 42
    checkpoint_freq: int = FULL_BUDGET.checkpoint_freq
    sentences: tuple[str, ...] = DEFAULT_SENTENCES
    text_column: str = "text"
    force: bool = False
    png: bool = True
    recipe: str = "fast"
    device: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise InvalidInputError(
                f"threads must be a positive integer, got {self.threads!r}", option="threads"
            )
        for name in _POSITIVE:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidInputError(
                    f"{name} must be a positive integer, got {value!r}", option=name
                )
        if self.seq_len < 2:
            raise InvalidInputError(
                f"seq_len must be at least 2, got {self.seq_len}", option="seq_len"
            )
        if not self.sentences or not all(isinstance(s, str) and s.strip() for s in self.sentences):
            raise InvalidInputError(
                "sentences must be a non-empty tuple of non-empty strings", option="sentences"
            )
        if self.recipe not in DEMO_RECIPES:
            raise InvalidInputError(
                f"recipe must be one of {DEMO_RECIPES}, got {self.recipe!r}", option="recipe"
            )
        if not self.model or not self.data:
            raise InvalidInputError("model and data must be non-empty")

    def fingerprint(self) -> Fingerprint:
        """The settings a trained lens depends on (a change means training again)."""
        return {
            "model": self.model,
            "data": self.data,
            "text_column": self.text_column,
            "steps": self.steps,
            "tokens_per_step": self.tokens_per_step,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "recipe": self.recipe,
        }


@dataclass
class DemoOutputs:
    """Paths of what a run wrote (all inside ``settings.output``)."""

    output: Path
    lens: Path
    metrics: Path
    kl_plot_html: Path
    kl_plot_png: Path | None = None
    trajectory_html: list[Path] = field(default_factory=list)
    trajectory_png: list[Path] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    model_path: str = ""
    index_html: Path | None = None
