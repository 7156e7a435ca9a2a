"""Fixtures for the plotting tests: a tiny offline tokenizer and random trajectories."""

from __future__ import annotations

import numpy as np
import pytest
from _plotting_oracle import TINY_VOCAB


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A word-level fast tokenizer over TINY_VOCAB, built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(
        models.WordLevel({tok: i for i, tok in enumerate(TINY_VOCAB)}, unk_token="<unk>")
    )
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
