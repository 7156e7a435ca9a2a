"""Decoding every layer of a model with lenses: the one model → lens → log-softmax loop.

:class:`LayerDecoder` holds one batch of hidden states (from a model run, or from any cache)
and yields, chunk of positions by chunk of positions, the log-probabilities of every trajectory
row: the model's own output row first, then the lens layers every lens covers (all of
``0 .. L-1`` unless a lens covers only some; see :mod:`tuned_lens._coverage`). Every trajectory builder
(:class:`~tuned_lens.plotting.PredictionTrajectory`,
:class:`~tuned_lens.plotting.CompactTrajectory`) reads its rows from here, so the masking of
input tokens, the row selection and the device / dtype policy exist once.

Device and dtype policy (:func:`log_softmax`):

* with a float32 host **destination** (the full trajectory's array): CPU logits of any dtype
  are normalised by the Rust kernel straight into it; CUDA logits are normalised on the device
  in float32 and copied there;
* otherwise float32 CPU logits are normalised by the Rust kernel into a reused buffer (no
  fresh pages per layer), and half-precision or CUDA logits stay torch tensors in their own
  dtype on their device; :mod:`tuned_lens.lens_stats` reads them without widening.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import lens_stats
from ._coverage import check_lens_matches, covered_layers, decoded_layers, shared_layers
from .errors import InvalidInputError, TargetIndexError
from .types import BoolArray, CausalLM, F32Array, IdArray, LogProbs

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .nn.lenses import Lens

__all__ = [
    "DecodedLayer",
    "Destination",
    "LayerDecoder",
    "LogSoftmaxBuffers",
    "check_input_ids",
    "check_lens_matches",
    "check_model_inputs",
    "covered_layers",
    "input_vocab_mask",
    "log_softmax",
    "model_device",
    "model_vocab_size",
    "run_model",
    "shared_layers",
    "warn_if_longer_than_model",
]

Destination = Callable[[int, IdArray], "F32Array | None"]
"""``(row, positions) -> (n, V)`` C-contiguous float32 array to write trajectory row ``row``
(:attr:`DecodedLayer.row`) into, or None."""


@dataclass(frozen=True)
class DecodedLayer:
    """The log-probabilities of one trajectory row at some positions of the batch.

    Attributes:
        layer: The hidden-state index: ``0 .. L-1`` a lens layer, ``L`` the model's output.
        row: The trajectory row: the position of ``layer`` in :attr:`LayerDecoder.layers`,
            ``len(layers)`` for the output row (equal to ``layer`` when every layer is covered).
        positions: ``(n,)`` flat indices into the ``b * T`` positions of the batch
            (``prompt * T + position``), ascending.
        log_probs: One ``(n, V)`` :data:`~tuned_lens.types.LogProbs` per lens, in the order
            the lenses were given. On the output row every entry is the model's (one object).
            Buffers are reused: an entry is valid until the next row of the same kind (lens
            row or output row) is yielded.
        is_output: Whether this is the model's output row.
    """

    layer: int
    positions: IdArray
    log_probs: tuple[LogProbs, ...]
    is_output: bool
    row: int = -1

    def __post_init__(self) -> None:
        if self.row < 0:
            object.__setattr__(self, "row", self.layer)


class LogSoftmaxBuffers:
    """Reused float32 host buffers for normalised rows, one per slot.

    Args:
        min_rows: The smallest buffer allocated (rows), so that chunks of varying size share
            one allocation.
    """

    def __init__(self, min_rows: int = 1) -> None:
        self.min_rows = min_rows
        self._buffers: dict[str, F32Array] = {}

    def get(self, slot: str, rows: int, vocab: int) -> F32Array:
        """A C-contiguous ``(rows, vocab)`` float32 view of the slot's buffer."""
        buf = self._buffers.get(slot)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != vocab:
            buf = np.empty((max(rows, self.min_rows), vocab), dtype=np.float32)
            self._buffers[slot] = buf
        return buf[:rows]


def log_softmax(
    logits: torch.Tensor,
    *,
    out: F32Array | None = None,
    buffers: LogSoftmaxBuffers | None = None,
    slot: str = "",
) -> LogProbs:
    """Normalise ``(n, V)`` logits under the library's one device / dtype policy.

    Args:
        logits: ``(n, V)`` logits, any float dtype, any device.
        out: A C-contiguous float32 ``(n, V)`` host array to write into (see the module
            docstring: any dtype is written as float32).
        buffers: Where float32 CPU rows go without ``out`` (a fresh array when None).
        slot: The buffer slot (rows in different slots are alive at the same time).

    Returns:
        ``(n, V)`` log-probabilities: ``out``, a float32 numpy array, or a torch tensor in the
        logits' dtype on their device.
    """
    import torch

    logits = logits.detach()
    on_cpu = logits.device.type == "cpu"
    if out is not None:
        if on_cpu:
            lens_stats.log_softmax(logits.contiguous(), out=out)
        else:
            out[...] = torch.log_softmax(logits.float(), dim=-1).cpu().numpy()
        return out
    if on_cpu and logits.dtype == torch.float32:
        rows, vocab = logits.shape
        target = None if buffers is None else buffers.get(slot, rows, vocab)
        return lens_stats.log_softmax(logits.contiguous(), out=target)
    return torch.log_softmax(logits, dim=-1)


def input_vocab_mask(ids: IdArray, mask: BoolArray | None, vocab_size: int) -> BoolArray:
    """``(b, V)``: True for every vocabulary id occurring among a sequence's real tokens.

    Args:
        ids: ``(b, T)`` token ids.
        mask: ``(b, T)`` True at real tokens, or None.
        vocab_size: ``V``.
    """
    out = np.zeros((ids.shape[0], vocab_size), dtype=bool)
    for row in range(ids.shape[0]):
        seen = ids[row] if mask is None else ids[row][mask[row]]
        seen = seen[(seen >= 0) & (seen < vocab_size)]
        out[row, seen] = True
    return out


class LayerDecoder:
    """One batch of hidden states, decoded layer by layer with one or more lenses.

    Args:
        lenses: The lenses; ``lens(h, i)`` gives logits for ``hidden_states[i]``.
        hidden_states: ``L`` tensors ``(b, T, d)``, one per lens layer.
        model_logits: ``(b, T, V)`` the model's output logits (the output row).
        mask_input_ids: ``(b, T)`` ids whose every vocabulary entry gets log-prob ``−inf``
            in the lens rows (not the output row), or None for no masking.
        attention_mask: ``(b, T)`` True at real tokens: padding ids are not masked.
        buffers: Reused host buffers (pass one across batches to keep its pages).
        layers: The hidden-state indices to decode, ascending; default: those every lens
            covers (:func:`shared_layers`).

    Attributes:
        layers: The decoded hidden-state indices: trajectory row ``r`` is ``layers[r]``.
    """

    def __init__(
        self,
        lenses: Sequence[Lens],
        hidden_states: Sequence[torch.Tensor],
        model_logits: torch.Tensor,
        *,
        mask_input_ids: IdArray | None = None,
        attention_mask: BoolArray | None = None,
        buffers: LogSoftmaxBuffers | None = None,
        layers: Sequence[int] | None = None,
    ) -> None:
        if not lenses:
            raise InvalidInputError("at least one lens is needed", option="lens")
        self.lenses = tuple(lenses)
        self.hidden_states = tuple(hidden_states)
        self.layers = decoded_layers(self.lenses, len(self.hidden_states), layers)
        self.model_logits = model_logits.detach()
        self.buffers = buffers if buffers is not None else LogSoftmaxBuffers()
        self.vocab_mask: BoolArray | None = None
        self._vocab_mask_t: torch.Tensor | None = None
        if mask_input_ids is not None:
            self.vocab_mask = input_vocab_mask(mask_input_ids, attention_mask, self.vocab_size)

    @classmethod
    def from_model(
        cls,
        lenses: Sequence[Lens],
        model: CausalLM,
        ids: IdArray,
        mask: BoolArray | None,
        device: torch.device,
        *,
        mask_input: bool = False,
        buffers: LogSoftmaxBuffers | None = None,
        layers: Sequence[int] | None = None,
    ) -> LayerDecoder:
        """Run ``model`` once on ``(b, T)`` ids and get ready to decode its hidden states.

        Args:
            lenses: Lenses for the model (each must have one layer per block, if it says).
            model: A Hugging Face causal LM.
            ids: ``(b, T)`` token ids.
            mask: ``(b, T)`` padding mask, or None.
            device: Where the inputs go.
            mask_input: Mask every input id in the lens rows.
            buffers: Reused host buffers.
            layers: The hidden-state indices to decode (default: those every lens covers).
        """
        hidden_states, logits = run_model(model, ids, mask, device)
        n_layers = len(hidden_states) - 1
        for lens in lenses:
            check_lens_matches(lens, len(hidden_states))
        return cls(
            lenses,
            hidden_states[:n_layers],
            logits,
            mask_input_ids=ids if mask_input else None,
            attention_mask=mask,
            buffers=buffers,
            layers=layers,
        )

    @property
    def num_layers(self) -> int:
        """``L``: the lens layers (the output row is row ``L``)."""
        return len(self.hidden_states)

    @property
    def vocab_size(self) -> int:
        """``V``."""
        return int(self.model_logits.shape[-1])

    @property
    def batch_shape(self) -> tuple[int, int]:
        """``(b, T)``."""
        return int(self.model_logits.shape[0]), int(self.model_logits.shape[1])

    def rows(
        self,
        positions: IdArray | None = None,
        *,
        chunk_rows: int | None = None,
        destination: Destination | None = None,
    ) -> Iterator[DecodedLayer]:
        """Yield every row's log-probabilities, chunk by chunk of positions.

        Per chunk the output row comes first (a statistic against the model's row can be
        computed as each lens row arrives), then the lens layers of :attr:`layers`.

        Args:
            positions: ``(n,)`` ascending flat positions (``prompt * T + position``) to
                decode; None: all ``b * T``.
            chunk_rows: Positions decoded at once; None: all of them.
            destination: Where rows are written as float32 (one lens only); rows it gives
                None for use the policy without a destination.

        Yields:
            :class:`DecodedLayer` items.
        """
        import torch

        if destination is not None and len(self.lenses) != 1:
            raise InvalidInputError("a destination takes the rows of one lens", option="lens")
        b, t = self.batch_shape
        selected = np.arange(b * t) if positions is None else np.asarray(positions, np.int64)
        size = max(len(selected), 1) if chunk_rows is None else chunk_rows
        if size < 1:
            raise InvalidInputError(f"chunk_rows must be positive, got {size}", option="chunk_rows")
        logits_flat = self.model_logits.reshape(-1, self.vocab_size)
        hidden_flat = [h.reshape(-1, h.shape[-1]) for h in self.hidden_states]
        n_lenses = len(self.lenses)
        # Gradients are off around each computation, never across a yield (the caller's code
        # between items runs in its own grad mode).
        for lo in range(0, len(selected), size):
            chunk = selected[lo : lo + size]
            n_rows = len(self.layers)
            out = None if destination is None else destination(n_rows, chunk)
            model_lp = log_softmax(
                _take(logits_flat, chunk), out=out, buffers=self.buffers, slot="model"
            )
            yield DecodedLayer(self.num_layers, chunk, (model_lp,) * n_lenses, True, n_rows)
            row_mask = self._row_mask(chunk // t, logits_flat.device)
            for row, layer in enumerate(self.layers):
                out = None if destination is None else destination(row, chunk)
                with torch.no_grad():
                    hidden = _take(hidden_flat[layer], chunk)
                    decoded = tuple(
                        self._decode(lens, hidden, layer, row_mask, out, f"lens{i}")
                        for i, lens in enumerate(self.lenses)
                    )
                yield DecodedLayer(layer, chunk, decoded, False, row)

    def _row_mask(self, prompts: IdArray, device: torch.device) -> torch.Tensor | None:
        """``(n, V)`` the vocabulary mask of each decoded position's prompt, or None."""
        if self.vocab_mask is None:
            return None
        import torch

        if self._vocab_mask_t is None or self._vocab_mask_t.device != device:
            # Moved to the device once per batch; each chunk gathers its prompts' rows there.
            self._vocab_mask_t = torch.as_tensor(self.vocab_mask, device=device)
        index = torch.as_tensor(prompts, device=device)
        return self._vocab_mask_t.index_select(0, index)

    def _decode(
        self,
        lens: Lens,
        hidden: torch.Tensor,
        layer: int,
        row_mask: torch.Tensor | None,
        out: F32Array | None,
        slot: str,
    ) -> LogProbs:
        logits = lens(hidden[None], layer)[0]
        if row_mask is not None:
            logits = logits.masked_fill(row_mask.to(logits.device), float("-inf"))
        return log_softmax(logits, out=out, buffers=self.buffers, slot=slot)


def _take(flat: torch.Tensor, positions: IdArray) -> torch.Tensor:
    """``flat[positions]``: a view for a run of consecutive positions, else a gather."""
    import torch

    if len(positions) and int(positions[-1]) - int(positions[0]) == len(positions) - 1:
        return flat[int(positions[0]) : int(positions[-1]) + 1]
    return flat.index_select(0, torch.as_tensor(positions, device=flat.device))


def model_device(model: CausalLM, device: torch.device | str | None = None) -> torch.device:
    """The device inputs go to: ``device`` if given, else the model's."""
    import torch

    from tuned_lens.integrations import unwrap_model

    model = unwrap_model(model)
    if device is not None:
        return torch.device(device)
    found = getattr(model, "device", None)
    if found is not None:
        return torch.device(found)
    return next(model.parameters()).device


def run_model(
    model: CausalLM, ids: IdArray, mask: BoolArray | None, device: torch.device | str
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Run a Hugging Face causal LM once, returning all hidden states and the logits.

    With padding, the attention mask is passed and (where the model takes them) position
    ids count only real tokens, so left- and right-padded sequences see the positions they
    would see alone.

    Args:
        model: A causal LM returning ``hidden_states`` and ``logits``.
        ids: ``(b, T)`` token ids.
        mask: ``(b, T)`` padding mask or ``None``.
        device: Where the inputs go.

    Returns:
        ``(hidden_states, logits)``: ``L + 1`` tensors ``(b, T, d)`` and ``(b, T, V)``.

    Raises:
        TargetIndexError: An id the model cannot embed (:func:`check_input_ids`).
    """
    import torch

    from tuned_lens.integrations import unwrap_model
    from tuned_lens.integrations.transformer_lens import is_bridge, run_bridge

    model = unwrap_model(model)  # an nnsight model: the Hugging Face model inside it
    check_input_ids(model, ids, mask)
    if is_bridge(model):  # its own hooks: blocks.{i}.hook_in, and its logits
        return run_bridge(model, ids, mask, device)
    # No KV cache: nothing is generated, and it would only hold memory.
    kwargs: dict[str, Any] = {"output_hidden_states": True, "use_cache": False}
    input_ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    if mask is not None:
        mask_t = torch.as_tensor(mask, dtype=torch.long, device=device)
        kwargs["attention_mask"] = mask_t
        forward = getattr(model, "forward", model)
        if "position_ids" in inspect.signature(forward).parameters:
            kwargs["position_ids"] = (mask_t.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        outputs = model(input_ids, **kwargs)
    hidden_states = outputs.hidden_states
    if hidden_states is None:
        raise InvalidInputError(
            "the model returned no hidden_states; is it a causal LM?", option="model"
        )
    return tuple(hidden_states), outputs.logits


def model_vocab_size(model: CausalLM) -> int | None:
    """The number of token ids the model embeds (its input embedding's rows), if it says."""
    embeddings = getattr(model, "get_input_embeddings", None)
    if callable(embeddings):
        try:
            rows = getattr(embeddings(), "num_embeddings", None)
        except (AttributeError, NotImplementedError):
            rows = None
        if isinstance(rows, int):
            return rows
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return size if isinstance(size, int) else None


def check_input_ids(
    model: CausalLM, ids: IdArray, mask: BoolArray | None = None, *, name: str = "input_ids"
) -> None:
    """Refuse token ids the model cannot embed, before it runs (torch's own error names neither
    the id nor the vocabulary).

    Args:
        model: The causal LM.
        ids: ``(b, T)`` token ids, padding included (the model embeds it too).
        mask: ``(b, T)`` True at real tokens, or None; a bad id at padding is named as such.
        name: The argument's name, for the message.

    Raises:
        TargetIndexError: An id outside ``[0, V)``, naming it, where it is, and ``V``.
    """
    vocab = model_vocab_size(model)
    if vocab is None or ids.size == 0:
        return
    bad = np.argwhere((ids < 0) | (ids >= vocab))
    if not len(bad):
        return
    row, column = (int(i) for i in bad[0])
    what = "token id" if mask is None or mask[row, column] else "padding id (pad_token_id)"
    raise TargetIndexError(
        f"{name} holds {what} {int(ids[row, column])} at prompt {row}, position {column}, "
        f"outside the model's vocabulary [0, {vocab}) ({len(bad)} such id(s) in all)",
        option=name,
    )


def warn_if_longer_than_model(model: CausalLM, ids: IdArray, mask: BoolArray | None) -> None:
    """Warn (once per call) when a sequence is longer than the model's position embeddings.

    Args:
        model: The causal LM (``config.max_position_embeddings`` is the limit; no limit, no
            warning).
        ids: ``(b, T)`` token ids.
        mask: ``(b, T)`` True at real tokens, or None (then every sequence has ``T`` tokens).
    """
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if not isinstance(limit, int) or ids.size == 0:
        return
    length = int(ids.shape[1]) if mask is None else int(mask.sum(axis=1).max())
    if length > limit:
        warnings.warn(
            f"a sequence of {length} tokens is longer than the model's "
            f"max_position_embeddings ({limit}); its predictions after position {limit} come "
            "from positions it was not trained on",
            UserWarning,
            stacklevel=4,  # the caller of the builder that called check_model_inputs
        )


def check_model_inputs(
    model: CausalLM, ids: IdArray, mask: BoolArray | None, *, name: str = "input_ids"
) -> None:
    """What every trajectory builder checks once before running the model on a batch.

    :func:`check_input_ids` (an error) and :func:`warn_if_longer_than_model` (a warning).
    """
    from tuned_lens.integrations import unwrap_model

    model = unwrap_model(model)  # an nnsight model: the Hugging Face model inside it
    check_input_ids(model, ids, mask, name=name)
    warn_if_longer_than_model(model, ids, mask)
