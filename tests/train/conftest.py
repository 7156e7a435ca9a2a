"""Fixtures for the training/evaluation tests: a tiny random model saved as a local HF folder
(with a real, tiny BPE tokenizer trained on the fly) and small jsonl/txt data sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _corpus() -> str:
    from tuned_lens.assets import tinyshakespeare_text

    return tinyshakespeare_text()[:120_000]


def save_tiny_model(folder: Path, *, family: str = "llama", seed: int = 0, **overrides) -> Path:
    """A tiny random causal LM + a 256-token BPE tokenizer, saved with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from tuned_lens.testing import TINY_VOCAB_SIZE, tiny_model

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"]
    )
    tok.train_from_iterator(_corpus().splitlines(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=128,
    )
    assert tokenizer.eos_token_id == 2 and len(tokenizer) <= TINY_VOCAB_SIZE
    model = tiny_model(family, seed=seed, **overrides)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def text_jsonl(tmp_path_factory) -> Path:
    """About 40 KB of Shakespeare as 40 jsonl documents (field ``text``)."""
    text = _corpus()[:40_000]
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(40):
            handle.write(json.dumps({"text": text[i * 1000 : (i + 1) * 1000]}) + "\n")
    return path


@pytest.fixture(scope="session")
def text_txt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "plain.txt"
    path.write_text(_corpus()[40_000:80_000], encoding="utf-8")
    return path
