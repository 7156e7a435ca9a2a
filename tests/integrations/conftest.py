"""Real models for the integration tests: glassllm (Llama architecture, with its tokenizer)."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("glassllm")


@pytest.fixture(scope="session")
def glassllm():
    """``(model, tokenizer, folder)``; copy the model before a wrapper modifies it."""
    from tuned_lens.assets import load_glassllm
    from tuned_lens.assets.glassllm import glassllm_model_dir

    model, tokenizer = load_glassllm()
    return model, tokenizer, glassllm_model_dir()


@pytest.fixture
def glassllm_copy(glassllm):
    """A fresh copy of the glassllm model (wrappers such as the bridge modify theirs)."""
    return copy.deepcopy(glassllm[0])


@pytest.fixture(scope="session")
def ring_ids(glassllm):
    tokenizer = glassllm[1]
    return tokenizer.encode("One Ring to rule them all,\nOne Ring to find them,\n")
