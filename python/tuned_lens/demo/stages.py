"""The demo's working steps: the device, the model, the text, training and evaluation.

Each function does one step for :mod:`tuned_lens.demo.pipeline` and returns what the next
step needs; none of them prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens._atomic import atomic_folder
from tuned_lens.demo.resume import JsonObject
from tuned_lens.demo.settings import DemoSettings
from tuned_lens.errors import InvalidInputError, NotEnoughDataError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuned_lens.data import PackedChunks
    from tuned_lens.nn import TunedLens

__all__ = [
    "CHARS_PER_TOKEN_BOUND",
    "cap_characters",
    "check_device",
    "evaluate",
    "load_data",
    "load_lens",
    "load_model",
    "train",
]

# No tokenizer needs more characters than this per token: the text tokenised for a budget.
CHARS_PER_TOKEN_BOUND = 16


def check_device(device: str | None) -> None:
    """Reject a device torch cannot use here, before anything is loaded.

    Raises:
        InvalidInputError: not a torch device, or one this machine lacks.
    """
    if device is None:
        return
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise InvalidInputError(
            f"device {device!r} is not a torch device: {err}", option="device"
        ) from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        problem = "this torch build or machine has no CUDA device"
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        problem = "MPS is not available here"
    elif parsed.type not in ("cpu", "cuda", "mps"):
        problem = "the demo runs on cpu, cuda or mps"
    else:
        return
    raise InvalidInputError(f"device {device!r}: {problem}", option="device")


def _device(settings: DemoSettings) -> torch.device:
    import torch

    if settings.device is not None:
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(settings: DemoSettings) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The model (float32, frozen, on the run's device), its tokenizer and its folder."""
    import torch

    from tuned_lens.assets import load_model as load_model_folder
    from tuned_lens.assets import resolve_model

    model_path = resolve_model(settings.model)
    model, tokenizer = load_model_folder(model_path, dtype=torch.float32, device=_device(settings))
    model.requires_grad_(False)
    return model, tokenizer, model_path


def cap_characters(docs: Sequence[str], limit: int) -> list[str]:
    """The first ``limit`` characters of the documents (whole documents, the last one cut)."""
    kept: list[str] = []
    left = limit
    for doc in docs:
        if left <= 0:
            break
        kept.append(doc[:left])
        left -= len(kept[-1])
    return kept


def _chunk_capped(
    docs: Sequence[str], tokenizer: PreTrainedTokenizerBase, seq_len: int, tokens_needed: int
) -> PackedChunks:
    """Chunks of about what a budget can use (everything, when a capped text falls short)."""
    from tuned_lens.data import pack_documents

    limit = (tokens_needed + 2 * seq_len) * CHARS_PER_TOKEN_BOUND
    if sum(len(d) for d in docs) > limit:
        chunks = pack_documents(cap_characters(docs, limit), tokenizer, max_seq_len=seq_len)
        if len(chunks) * chunks.chunk_len >= tokens_needed:
            return chunks
    return pack_documents(docs, tokenizer, max_seq_len=seq_len)


def load_data(
    settings: DemoSettings, tokenizer: PreTrainedTokenizerBase
) -> tuple[PackedChunks, PackedChunks, JsonObject]:
    """The training and held-out chunks of ``--data``, and a summary for ``metrics.json``.

    Raises:
        NotEnoughDataError: too little text for one held-out chunk.
    """
    from tuned_lens.data import HELD_OUT_FRACTION, load_documents, split_documents

    docs = load_documents(settings.data, text_column=settings.text_column)
    train_docs, eval_docs = split_documents(docs)
    train_need = settings.steps * settings.tokens_per_step
    train_chunks = _chunk_capped(train_docs, tokenizer, settings.seq_len, train_need)
    try:
        held_out = _chunk_capped(eval_docs, tokenizer, settings.seq_len, settings.eval_tokens)
    except NotEnoughDataError as err:
        raise NotEnoughDataError(
            f"the held-out part of {settings.data!r} (the last {HELD_OUT_FRACTION:.0%}) is "
            f"shorter than one chunk of {settings.seq_len} tokens; use more text or a smaller "
            "--seq-len"
        ) from err
    info = {
        "name": settings.data,
        "documents": len(docs),
        "train_documents": len(train_docs),
        "eval_documents": len(eval_docs),
        "train_tokens": len(train_chunks) * train_chunks.chunk_len,
        "eval_tokens": len(held_out) * held_out.chunk_len,
        "chunk_len": train_chunks.chunk_len,
        "nats_to_bpb": train_chunks.nats_to_bpb,
    }
    return train_chunks, held_out, info


def load_lens(model: PreTrainedModel, folder: Path) -> TunedLens:
    """The tuned lens saved in ``folder``, for ``model``."""
    from tuned_lens.nn import TunedLens

    return TunedLens.from_model_and_pretrained(model, str(folder))


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def train(
    model: PreTrainedModel, chunks: PackedChunks, settings: DemoSettings, paths: dict[str, Path]
) -> tuple[TunedLens, JsonObject]:
    """Train a tuned lens (resuming from ``checkpoints/``) and save it atomically to ``lens/``.

    Returns:
        The lens and a summary of the training for ``metrics.json``.
    """
    from tuned_lens.nn import TunedLens
    from tuned_lens.training.train_loop import TrainConfig, train_lens

    chunk_len = chunks.chunk_len
    tokens_per_step = settings.tokens_per_step
    if tokens_per_step % chunk_len:
        # The tokenizer may cap the chunk below --seq-len; keep the step size a multiple of it.
        tokens_per_step = max(1, round(tokens_per_step / chunk_len)) * chunk_len
    config = TrainConfig(
        num_steps=settings.steps,
        tokens_per_step=tokens_per_step,
        # One micro-batch per step (capped): the CPU is fastest with a few rows at once.
        per_gpu_batch_size=_largest_divisor_at_most(tokens_per_step // chunk_len, 16),
        checkpoint_freq=settings.checkpoint_freq,
        checkpoint_dir=paths["checkpoints"],
        seed=settings.seed,
        recipe=settings.recipe,
    )
    lens = TunedLens.from_model(model)
    result = train_lens(model, lens, chunks, config)
    with atomic_folder(paths["lens"]) as folder:
        lens.save(folder)
    losses = result.losses
    info = {
        "recipe": settings.recipe,
        "steps": settings.steps,
        "tokens_per_step": tokens_per_step,
        "resumed_from_step": result.start_step if result.resumed else 0,
        "tokens_per_second": result.tokens_per_second,
        "first_step_kl_nats": losses[0] if losses and not result.resumed else None,
        "last_step_kl_nats": losses[-1] if losses else None,
    }
    return lens, info


def evaluate(
    model: PreTrainedModel,
    lens: TunedLens,
    chunks: PackedChunks,
    settings: DemoSettings,
    paths: dict[str, Path],
) -> JsonObject:
    """Per-layer KL, cross-entropy and entropy of both lenses on held-out chunks (nats).

    The evaluator's own files go to ``eval/``.

    Returns:
        ``{"layers": [{"layer", "kl_logit", "kl_tuned", "ce_…", "entropy_…"}, …],
        "baseline": {"ce", "entropy"}, "units", "nats_to_bpb", "tokens"}``.
    """
    from tuned_lens.nn import LogitLens
    from tuned_lens.training.eval_loop import EvalConfig, evaluate_lenses, write_outputs

    chunk_len = chunks.chunk_len
    tokens = min(settings.eval_tokens, len(chunks) * chunk_len)
    rows = max(1, tokens // chunk_len)
    config = EvalConfig(
        tokens=rows * chunk_len,
        per_gpu_batch_size=_largest_divisor_at_most(rows, 8),
        seed=settings.seed,
    )
    lenses = {"logit": LogitLens.from_model(model), "tuned": lens}
    result = evaluate_lenses(model, lenses, chunks, config)
    write_outputs(result, paths["eval"])
    agg = result.aggregate
    layers = [
        {
            "layer": j,
            **{
                f"{metric}_{name}": float(agg[name][metric][f"layer_{j}"])
                for name in ("logit", "tuned")
                for metric in ("kl", "ce", "entropy")
            },
        }
        for j in range(result.num_layers)
    ]
    return {
        "layers": layers,
        "baseline": {
            "ce": float(agg["baseline"]["ce"]["final"]),
            "entropy": float(agg["baseline"]["entropy"]["final"]),
        },
        "units": "nats per token (multiply by nats_to_bpb for bits per byte)",
        "nats_to_bpb": float(result.nats_to_bpb),
        "tokens": int(result.tokens),
    }
