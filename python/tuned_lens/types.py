"""Type aliases and protocols for the library's public signatures.

Nothing here imports torch at run time: tensor types appear only in string annotations, so
``import tuned_lens.types`` stays as cheap as the package's other lazy imports.

Array aliases (numpy):

* :data:`IdArray`: int64 token ids, e.g. ``(B, T)``.
* :data:`F32Array`: float32 values, e.g. per-cell statistics ``(N, L+1, T)``.
* :data:`BoolArray`: masks, e.g. an attention mask ``(B, T)``.

Inputs and outputs that may be numpy or torch:

* :data:`TokenIds`: token ids as the user passes them: a list of ints (one sequence), a list
  of such lists (a batch, possibly ragged), a numpy integer array or a torch tensor.
* :data:`LogProbs`: ``(rows, V)`` log-probabilities in the form the statistics of
  :mod:`tuned_lens.lens_stats` read: a float32 numpy array or a torch tensor (any float dtype,
  any device).

Protocols: :class:`Tokenizer` (what labels and padding read from a Hugging Face tokenizer),
:class:`CausalLMOutput` and :class:`CausalLM` (what the trajectory builders need from a model).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, Union, runtime_checkable

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BoolArray",
    "CausalLM",
    "CausalLMOutput",
    "F32Array",
    "IdArray",
    "LogProbs",
    "TokenIds",
    "Tokenizer",
]

IdArray = NDArray[np.int64]
F32Array = NDArray[np.float32]
BoolArray = NDArray[np.bool_]

TokenIds: TypeAlias = Union[
    Sequence[int], Sequence[Sequence[int]], NDArray[np.integer], "torch.Tensor"
]
LogProbs: TypeAlias = Union[F32Array, "torch.Tensor"]


@runtime_checkable
class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer that labels read.

    ``pad_token_id`` and ``eos_token_id`` are read with ``getattr`` (a tokenizer may lack
    them); ``vocab_size`` is the upper bound of rank figures.
    """

    @property
    def vocab_size(self) -> int:
        """The number of token ids."""
        ...

    def convert_ids_to_tokens(self, ids: list[int]) -> str | list[str]:
        """The vocabulary strings of ``ids`` (Hugging Face also accepts one int, giving a str)."""
        ...


class CausalLMOutput(Protocol):
    """What a causal LM's forward call returns (a ``transformers`` ``ModelOutput``)."""

    @property
    def hidden_states(self) -> tuple[torch.Tensor, ...] | None:
        """``L + 1`` tensors ``(b, T, d)`` with ``output_hidden_states=True``."""
        ...

    @property
    def logits(self) -> torch.Tensor:
        """``(b, T, V)`` next-token logits."""
        ...


class CausalLM(Protocol):
    """A Hugging Face causal language model, as the trajectory builders use it.

    Called as ``model(input_ids, output_hidden_states=True, use_cache=False, **kwargs)``
    (``attention_mask``, ``position_ids`` where the forward takes them).
    """

    def __call__(self, input_ids: torch.Tensor, **kwargs: Any) -> CausalLMOutput:
        """Run the model on ``(b, T)`` ids."""
        ...

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        """The model's parameters (their device is where inputs go, without ``device``)."""
        ...

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        ...
