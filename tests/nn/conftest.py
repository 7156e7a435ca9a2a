"""Fixtures for the lens tests: tiny random models of every supported family."""

from __future__ import annotations

import pytest
import torch
from tuned_lens.testing import TINY_FAMILIES, tiny_input_ids, tiny_model

_CACHE: dict[str, torch.nn.Module] = {}


def cached_tiny_model(family: str) -> torch.nn.Module:
    """One float32 model per family for the whole session (tests must not modify it)."""
    if family not in _CACHE:
        _CACHE[family] = tiny_model(family)
    return _CACHE[family]


@pytest.fixture(params=TINY_FAMILIES)
def family(request, require_tiny_family) -> str:
    """Each tiny family; those newer than the installed transformers skip, saying so."""
    return require_tiny_family(request.param)


@pytest.fixture
def model(family):
    return cached_tiny_model(family)


@pytest.fixture
def input_ids():
    return tiny_input_ids(batch=2, seq_len=8)
