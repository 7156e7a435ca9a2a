"""Input ids a trajectory cannot run: clear errors before the model runs, and a warning for
sequences longer than the model was trained on.

Everything runs the bundled tiny real model (glassllm: vocabulary 1024, 128 positions).
A forward pre-hook counts the model's calls, so "before the model runs" is checked directly.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from tuned_lens.decoding import run_model
from tuned_lens.errors import InvalidInputError, TargetIndexError
from tuned_lens.nn import LogitLens
from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory


class _Glass:
    def __init__(self) -> None:
        from tuned_lens.assets import load_glassllm

        self.model, self.tokenizer = load_glassllm()
        self.lens = LogitLens.from_model(self.model)
        self.calls = 0
        self.model.register_forward_pre_hook(self._count)
        self.vocab = int(self.model.config.vocab_size)
        self.positions = int(self.model.config.max_position_embeddings)

    def _count(self, *_: Any) -> None:
        self.calls += 1


@pytest.fixture(scope="module")
def glass() -> Iterator[_Glass]:
    yield _Glass()


def _build(kind: str, glass: _Glass, ids: Any, **kwargs: Any) -> object:
    if kind == "full":
        return PredictionTrajectory.from_lens_and_model(glass.lens, glass.model, ids, **kwargs)
    return CompactTrajectory.from_lens_and_model(
        glass.lens, glass.model, ids, progress=False, **kwargs
    )


KINDS = ["full", "compact"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad", [1024, 5000, -1, -3])
def test_out_of_vocabulary_ids_are_refused_before_the_model_runs(
    glass: _Glass, kind: str, bad: int
) -> None:
    assert glass.vocab == 1024
    ids = [[5, 6, 7, 8], [9, 10, bad, 11]]
    before = glass.calls
    with pytest.raises(TargetIndexError) as caught:
        _build(kind, glass, ids, batch_size=1) if kind == "compact" else _build(kind, glass, ids)
    message = str(caught.value)
    assert str(bad) in message and "1024" in message, message
    assert "input_ids" in message and caught.value.option == "input_ids"
    assert glass.calls == before, "the model ran before the ids were checked"


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_padding_id_is_named(glass: _Glass, kind: str) -> None:
    # Ragged prompts are padded with the tokenizer's pad id, which the model embeds too.
    class PadOutside:
        pad_token_id = 4096
        eos_token_id = 3

    before = glass.calls
    with pytest.raises(TargetIndexError, match="4096"):
        _build(kind, glass, [[5, 6, 7], [8, 9]], tokenizer=PadOutside())
    assert glass.calls == before


def test_run_model_checks_ids_itself(glass: _Glass) -> None:
    before = glass.calls
    with pytest.raises(TargetIndexError, match=r"2000.*1024"):
        run_model(glass.model, np.array([[1, 2000]]), None, "cpu")
    assert glass.calls == before


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "ids",
    [np.zeros((0, 4), dtype=np.int64), torch.zeros((0, 7), dtype=torch.long), []],
    ids=["numpy", "torch", "empty-list"],
)
def test_an_empty_batch_is_a_clear_error(glass: _Glass, kind: str, ids: Any) -> None:
    before = glass.calls
    with pytest.raises(InvalidInputError, match="input_ids") as caught:
        _build(kind, glass, ids)
    assert "reshape" not in str(caught.value)
    assert glass.calls == before


def _position_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "max_position_embeddings" in str(w.message)]


@pytest.mark.parametrize("kind", KINDS)
def test_longer_than_the_model_warns_once_naming_both_lengths(glass: _Glass, kind: str) -> None:
    assert glass.positions == 128
    ids = np.arange(1, 141, dtype=np.int64)[None].repeat(3, axis=0)  # 3 prompts of 140 tokens
    kwargs = {"batch_size": 1} if kind == "compact" else {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _build(kind, glass, ids, **kwargs)
    messages = _position_warnings(caught)
    assert len(messages) == 1, messages
    assert "140" in messages[0] and "128" in messages[0], messages[0]


@pytest.mark.parametrize("kind", KINDS)
def test_sequences_within_the_limit_do_not_warn(glass: _Glass, kind: str) -> None:
    # 140 columns, but with the padding mask no prompt is longer than 128 real tokens.
    ids = np.arange(1, 141, dtype=np.int64)[None].repeat(2, axis=0)
    mask = np.ones_like(ids, dtype=bool)
    mask[:, 128:] = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _build(kind, glass, ids, attention_mask=mask)
        _build(kind, glass, ids[:, :128])
    assert _position_warnings(caught) == []
