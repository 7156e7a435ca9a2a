"""How much the demo trains and evaluates: the default, ``--quick`` and large-model budgets."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Budget", "FULL_BUDGET", "LARGE_MODEL_CPU_BUDGET", "QUICK_BUDGET", "default_budget"]


@dataclass(frozen=True)
class Budget:
    """How much training and evaluation a run does.

    Attributes:
        steps: optimiser steps.
        tokens_per_step: training tokens per step.
        seq_len: tokens per chunk.
        eval_tokens: held-out tokens to evaluate on.
        checkpoint_freq: steps between training snapshots.
    """

    steps: int
    tokens_per_step: int
    seq_len: int
    eval_tokens: int
    checkpoint_freq: int


# About two minutes for glassllm on two CPU cores: ~0.4-0.7 s per step of 2,048 tokens on one
# thread (see threads.choose_threads), plus loading, evaluation and pictures.
FULL_BUDGET = Budget(
    steps=150, tokens_per_step=2048, seq_len=128, eval_tokens=16_384, checkpoint_freq=10
)
# Models bigger than glassllm on a CPU: every token is decoded by every layer's lens through a
# large unembedding (SmolLM2: 30 layers x 576 x 49152, ~0.2 s per token on this project's
# 2-core machine), so the CPU budget is a token demonstration of a few minutes. Use a GPU
# (or --steps/--tokens-per-step) for a useful lens.
LARGE_MODEL_CPU_BUDGET = Budget(
    steps=4, tokens_per_step=256, seq_len=64, eval_tokens=256, checkpoint_freq=1
)
# Seconds: for tests and a first look.
QUICK_BUDGET = Budget(
    steps=6, tokens_per_step=512, seq_len=64, eval_tokens=1_024, checkpoint_freq=2
)


def default_budget(model: str, *, quick: bool, device: str | None) -> Budget:
    """The budget used for options not given on the command line.

    Args:
        model: The ``--model`` value.
        quick: ``--quick`` was given.
        device: The ``--device`` value (``None``: CUDA when available).

    Returns:
        :data:`QUICK_BUDGET` for ``--quick``; :data:`LARGE_MODEL_CPU_BUDGET` for models other
        than glassllm when training runs on the CPU; else :data:`FULL_BUDGET`.
    """
    from tuned_lens.assets import GLASSLLM_ALIASES

    if quick:
        return QUICK_BUDGET
    if model.lower() in GLASSLLM_ALIASES:
        return FULL_BUDGET
    if device is None:
        import torch

        on_cpu = not torch.cuda.is_available()
    else:
        on_cpu = device.lower().startswith("cpu")
    return LARGE_MODEL_CPU_BUDGET if on_cpu else FULL_BUDGET
