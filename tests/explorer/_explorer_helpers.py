"""Helpers of the explorer tests: a tiny offline tokenizer, trajectories built from random
distributions (full ones, and compact ones reduced from the same arrays), the browser to use."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tuned_lens import lens_stats
from tuned_lens.headless_chromium import find_browser
from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory

# Byte-level BPE markers (Ġ, Ċ), a long token and a few plain words.
VOCAB = ["<unk>", "Ġthe", "Ġcat", "Ċ", "Ġsat", "ThisIsALongToken", "Ġon", "Ġmat", "ĠĠ", "a"] + [
    f"w{i}" for i in range(30)
]


def build_tokenizer():
    """A word-level fast tokenizer over VOCAB, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        models.WordLevel({tok: i for i, tok in enumerate(VOCAB)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


def random_log_probs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Peaked random log-softmax rows of ``shape`` (last axis the vocabulary)."""
    logits = rng.normal(size=shape).astype(np.float32) * 3.0
    return (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)


def make_pair(tokenizer, seed: int = 0, n: int = 2, rows: int = 5, t: int = 7):
    """Two full trajectories (two "lenses") of the same prompts, with targets."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(VOCAB), size=(n, t))
    targets = np.roll(ids, -1, axis=1)
    trajs = [
        PredictionTrajectory(
            log_probs=random_log_probs(rng, (n, rows, t, len(VOCAB))),
            input_ids=ids,
            targets=targets,
            tokenizer=tokenizer,
        )
        for _ in range(2)
    ]
    return trajs[0], trajs[1]


def compact_from_full(full: PredictionTrajectory, k: int, track: list[int]) -> CompactTrajectory:
    """The compact trajectory of the same arrays, reduced with lens_stats."""
    lp = np.asarray(full.log_probs)
    ids, probs = lens_stats.top_k(lp, k)
    targets = full.targets[:, None, :].repeat(lp.shape[1], 1)
    return CompactTrajectory(
        input_ids=full.input_ids,
        entropy_cells=lens_stats.entropy(lp),
        forward_kl_cells=lens_stats.forward_kl(lp, lp[:, -1]),
        top_k_ids=ids,
        top_k_probs=probs,
        targets=full.targets,
        tokenizer=full.tokenizer,
        target_log_prob_cells=lens_stats.target_log_prob(lp, targets),
        target_rank_cells=lens_stats.target_rank(lp, targets),
        tracked_ids=np.asarray(track),
        tracked_log_probs=lp[..., track],
        vocab_size=lp.shape[-1],
    )


BROWSER = find_browser()
DRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").is_file() else None
)

# A small logitlenskit V2 document (its published layout), consistent: tracked ⊇ top-k.
V2 = {
    "meta": {"version": 2, "timestamp": "2026-01-02T03:00:07+00:00", "model": "gpt2"},
    "layers": [0, 1, 2],
    "input": ["The", " quick", "\n"],
    "topk": [
        [[" the", " a"], [" brown", " fox"], ["A", " the"]],
        [[" the", " a"], [" fox", " brown"], [" the", "A"]],
        [[" a", " the"], [" fox", " brown"], [" the", "A"]],
    ],
    "tracked": [
        {" the": [0.5, 0.4, 0.25], " a": [0.25, 0.3, 0.5]},
        {" brown": [0.3, 0.2, 0.1], " fox": [0.2, 0.6, 0.75]},
        {"A": [0.4, 0.1, 0.05], " the": [0.3, 0.5, 0.6]},
    ],
}
