"""Prediction trajectories: the next-token distributions of every layer, and their statistics.

A :class:`PredictionTrajectory` holds the full ``(*B, L+1, T, V)`` array of log-probabilities
(rows ``0..L−1`` from the lens, row ``L`` the model's own output). Every statistic is computed
by the Rust core :mod:`tuned_lens.lens_stats` in one streaming pass, without temporaries of
the array's size; the top-k tokens used for labels are computed once and cached. For many
prompts, :class:`~tuned_lens.plotting.CompactTrajectory` keeps only the per-cell results.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, Union

import numpy as np
from numpy.typing import NDArray

from .. import lens_stats
from ..decoding import LayerDecoder, check_model_inputs, model_device
from ..errors import DTypeError, InvalidInputError, TargetIndexError, TrajectoryShapeError
from ..types import BoolArray, CausalLM, F32Array, IdArray, TokenIds, Tokenizer
from . import _model_inputs
from ._explorable import ExplorableMixin
from ._rows import check_row_layers, row_positions, shared_rows
from ._statistics import PairwiseKind, TrajectoryStatisticsMixin

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..nn.lenses import Lens

__all__ = ["PredictionTrajectory", "ResidualComponent"]

ResidualComponent = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]

TrajectoryArray: TypeAlias = Union[NDArray[np.floating[Any]], "torch.Tensor"]
"""``(*B, L+1, T, V)`` log-probabilities: a float numpy array or a torch tensor."""

_PAIRWISE_KERNELS = {
    "kl": "kl_divergence",
    "js": "js_divergence",
    "symmetric_kl": "symmetric_kl",
    "tv": "total_variation",
    "max_abs_diff": "max_abs_diff",
}


def _is_torch(value: object) -> bool:
    return type(value).__module__.startswith("torch")


def _as_int_array(value: TokenIds | None, name: str) -> IdArray | None:
    if value is None:
        return None
    if _is_torch(value):
        value = value.detach().cpu().numpy()  # type: ignore[union-attr]
    array = np.asarray(value)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise DTypeError(f"{name} must hold integer token ids, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


@dataclass
class PredictionTrajectory(TrajectoryStatisticsMixin, ExplorableMixin):
    """The next-token predictions of every layer of a model for some token sequences.

    A prediction trajectory is the set of next-token distributions produced by a lens at each
    layer of a model (plus the model's own output) on a specific sequence of tokens. Any
    number of leading batch axes is allowed; statistics are averaged over them (leaving out
    padded positions when ``attention_mask`` is set) and labels show ``"*"`` where batch
    elements disagree.

    Attributes:
        log_probs: ``(*B, L+1, T, V)`` natural-log probabilities: rows ``0..L−1`` from the
            lens for hidden states ``0..L−1``, row ``L`` the model's output. A float32,
            float16 or float64 numpy array, or a torch tensor (bfloat16 / CUDA tensors are
            handled without widening the whole array).
        input_ids: ``(*B, T)`` token ids fed to the model.
        targets: ``(*B, T)`` the ids each position should predict (for cross entropy, rank
            and log-prob differences).
        anti_targets: ``(*B, T)`` ids it should not predict (for :meth:`log_prob_diff`).
        tokenizer: A Hugging Face tokenizer; without one there are no labels.
        attention_mask: ``(*B, T)`` True at real tokens, False at padding; padded cells are
            left out of batch averages and labels. ``None``: nothing is padded.
        layers: The hidden-state index of each lens row when the lens covered only some
            layers (e.g. a published Jacobian lens: ``1 .. L-1``); ``None``: rows ``0 .. L-1``.
    """

    log_probs: TrajectoryArray
    input_ids: IdArray
    targets: IdArray | None = None
    anti_targets: IdArray | None = None
    tokenizer: Tokenizer | None = None
    attention_mask: BoolArray | None = None
    layers: tuple[int, ...] | None = None
    _top_k_cache: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        shape = tuple(self.log_probs.shape)
        if len(shape) < 3:
            raise TrajectoryShapeError(
                f"log_probs must be (*batch, layers + 1, T, V), got shape {shape}"
            )
        input_ids = _as_int_array(self.input_ids, "input_ids")
        if input_ids is None:
            raise InvalidInputError("input_ids is required", option="input_ids")
        self.input_ids = input_ids
        self.targets = _as_int_array(self.targets, "targets")
        self.anti_targets = _as_int_array(self.anti_targets, "anti_targets")
        expected = shape[:-3] + shape[-2:-1]
        if self.input_ids.shape != expected:
            raise TrajectoryShapeError(
                f"input_ids has shape {self.input_ids.shape}, expected {expected} "
                f"(batch shape + T) for log_probs of shape {shape}"
            )
        for name in ("targets", "anti_targets"):
            value = getattr(self, name)
            if value is not None and value.shape != self.input_ids.shape:
                raise TrajectoryShapeError(
                    f"{name} has shape {value.shape}, input_ids has {self.input_ids.shape}"
                )
        if self.attention_mask is not None:
            mask = np.asarray(self.attention_mask).astype(bool)
            if mask.shape != self.input_ids.shape:
                raise TrajectoryShapeError(
                    f"attention_mask has shape {mask.shape}, input_ids has {self.input_ids.shape}"
                )
            self.attention_mask = None if mask.all() else mask
        self.layers = check_row_layers(self.layers, self.num_layers)

    # ------------------------------------------------------------------ shape properties
    @property
    def batch_axes(self) -> tuple[int, ...]:
        """The batch axes of the trajectory (those before the last three of ``log_probs``)."""
        return tuple(range(len(self.log_probs.shape) - 3))

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The batch shape of the trajectory."""
        return tuple(self.log_probs.shape[:-3])

    @property
    def n_batch_axis(self) -> int:
        """The number of batch axes."""
        return len(self.log_probs.shape) - 3

    @property
    def num_layers(self) -> int:
        """The number of lens layers, not counting the model-output row."""
        return int(self.log_probs.shape[-3]) - 1

    @property
    def num_tokens(self) -> int:
        """The number of positions in this slice of the sequence."""
        return int(self.log_probs.shape[-2])

    @property
    def vocab_size(self) -> int:
        """The size of the vocabulary."""
        return int(self.log_probs.shape[-1])

    @property
    def model_log_probs(self) -> TrajectoryArray:
        """``(*B, T, V)`` the model's own log-probabilities (a view of the last row)."""
        return self.log_probs[..., -1, :, :]

    @property
    def probs(self) -> TrajectoryArray:
        """``(*B, L+1, T, V)`` probabilities.

        This allocates a new array as large as ``log_probs`` on every access; the statistic
        methods never use it.
        """
        if _is_torch(self.log_probs):
            return self.log_probs.exp()  # type: ignore[union-attr]
        return np.exp(self.log_probs)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_lens_and_model(
        cls,
        lens: Lens,
        model: CausalLM,
        input_ids: TokenIds,
        tokenizer: Tokenizer | None = None,
        targets: TokenIds | None = None,
        anti_targets: TokenIds | None = None,
        mask_input: bool = False,
        *,
        attention_mask: TokenIds | BoolArray | None = None,
        device: torch.device | str | None = None,
    ) -> PredictionTrajectory:
        """Run a Hugging Face causal LM and decode every hidden state with a lens.

        Args:
            lens: A lens for the model; ``lens(h, i)`` gives logits for ``hidden_states[i]``.
            model: A Hugging Face causal language model.
            input_ids: One sequence (``(T,)``, a list of ints), a ``(B, T)`` batch, or a list
                of sequences of different lengths (right-padded, with a padding mask).
            tokenizer: Used for labels (and its ``pad_token_id`` for ragged lists).
            targets: Like ``input_ids``: what each position should predict.
            anti_targets: Like ``input_ids``: what each position should not predict.
            mask_input: Give probability 0 (log-prob ``−inf``) in the lens rows, not the
                model row, to every token id occurring in the sequence.
            attention_mask: ``(B, T)`` 1 at real tokens, 0 at padding (left or right).
            device: Where the inputs go (default: the model's device).

        Returns:
            A trajectory with ``log_probs`` of shape ``(L+1, T, V)`` for one sequence or
            ``(B, L+1, T, V)`` for a batch, in float32.

        Raises:
            InvalidInputError: For an empty batch or bad shapes.
            TargetIndexError: For input ids outside the model's vocabulary (checked before
                the model runs).

        Warns:
            UserWarning: Once, when a sequence is longer than ``max_position_embeddings``.
        """
        pad_id = getattr(tokenizer, "pad_token_id", None) or 0
        batch = _model_inputs.token_batch(
            input_ids, attention_mask=attention_mask, pad_token_id=pad_id
        )
        targets_np = _model_inputs.aligned_ids(targets, batch, "targets")
        anti_np = _model_inputs.aligned_ids(anti_targets, batch, "anti_targets")
        check_model_inputs(model, batch.ids, batch.mask)
        decoder = LayerDecoder.from_model(
            (lens,),
            model,
            batch.ids,
            batch.mask,
            model_device(model, device),
            mask_input=mask_input,
        )
        return cls(
            log_probs=batch.unbatch(_full_log_probs(decoder)),
            input_ids=batch.unbatch(batch.ids),
            targets=batch.unbatch(targets_np),
            anti_targets=batch.unbatch(anti_np),
            tokenizer=tokenizer,
            attention_mask=batch.unbatch(batch.mask),
            layers=decoder.layers,
        )

    @classmethod
    def from_lens_and_cache(
        cls,
        lens: Lens,
        input_ids: TokenIds,
        cache: Mapping[tuple[str, int], torch.Tensor],
        model_logits: torch.Tensor | NDArray[np.floating[Any]],
        targets: TokenIds | None = None,
        anti_targets: TokenIds | None = None,
        residual_component: ResidualComponent = "resid_pre",
        mask_input: bool = False,
        *,
        tokenizer: Tokenizer | None = None,
    ) -> PredictionTrajectory:
        """Build a trajectory from a TransformerLens ``ActivationCache``.

        Layer ``l`` decodes ``cache[residual_component, l]`` with lens layer ``l`` whatever
        the component (a ``resid_pre`` lens on other components is an approximation).

        Args:
            lens: A lens with one layer per transformer block.
            input_ids: ``(T,)`` or ``(B, T)`` ids that were fed to the model.
            cache: The ``ActivationCache`` from ``run_with_cache`` (or any mapping from
                ``(component, layer)`` to ``(B, T, d)`` tensors).
            model_logits: ``(B, T, V)`` (or ``(T, V)``) the model's output logits.
            targets: Like ``input_ids``: what each position should predict.
            anti_targets: Like ``input_ids``: what each position should not predict.
            residual_component: Which cached activation to decode.
            mask_input: Mask the input ids in the lens rows (see :meth:`from_lens_and_model`).
            tokenizer: Defaults to ``cache.model.tokenizer``.

        Returns:
            A trajectory; ``(L+1, T, V)`` for a 1-D ``input_ids`` and a cache of batch 1,
            else ``(B, L+1, T, V)``.
        """
        import torch

        from tuned_lens.integrations.transformer_lens import cached_residual

        batch = _model_inputs.token_batch(input_ids)
        targets_np = _model_inputs.aligned_ids(targets, batch, "targets")
        anti_np = _model_inputs.aligned_ids(anti_targets, batch, "anti_targets")
        if tokenizer is None:
            tokenizer = getattr(getattr(cache, "model", None), "tokenizer", None)
        logits = torch.as_tensor(model_logits)
        if logits.ndim == 2:
            logits = logits[None]
        n_batch, n_tokens = batch.ids.shape
        if tuple(logits.shape[:2]) != (n_batch, n_tokens):
            raise TrajectoryShapeError(
                f"model_logits has shape {tuple(logits.shape)}, expected "
                f"({n_batch}, {n_tokens}, V) to match input_ids"
            )
        hidden_states = []
        for layer in range(_cache_layers(lens, cache)):
            hidden = cached_residual(cache, residual_component, layer)
            if hidden.ndim == 2:
                hidden = hidden[None]
            if hidden.shape[-2] != n_tokens or hidden.shape[0] != n_batch:
                raise TrajectoryShapeError(
                    f"input_ids has shape {batch.ids.shape} but the cached "
                    f"{residual_component} of layer {layer} has {tuple(hidden.shape)}"
                )
            hidden_states.append(hidden)
        decoder = LayerDecoder(
            (lens,), hidden_states, logits, mask_input_ids=batch.ids if mask_input else None
        )
        return cls(
            log_probs=batch.unbatch(_full_log_probs(decoder)),
            input_ids=batch.unbatch(batch.ids),
            targets=batch.unbatch(targets_np),
            anti_targets=batch.unbatch(anti_np),
            tokenizer=tokenizer,
            layers=decoder.layers,
        )

    # ------------------------------------------------------------------ slicing
    def slice_sequence(self, slice: builtins.slice | int) -> PredictionTrajectory:  # noqa: A002
        """A view of the trajectory restricted to some positions (the T axis).

        Args:
            slice: A ``slice`` of positions; an int keeps that one position (the T axis
                stays, with length 1).

        Returns:
            A new trajectory sharing memory with this one (and its cached top-k tokens).
        """
        if isinstance(slice, (int, np.integer)):
            index = int(slice) % self.num_tokens
            slice = builtins.slice(index, index + 1)
        if not isinstance(slice, builtins.slice):
            raise TypeError(f"slice_sequence takes a slice or an int, got {type(slice)}")

        def cut(value: NDArray[Any] | None) -> NDArray[Any] | None:
            return None if value is None else value[..., slice]

        sliced = PredictionTrajectory(
            log_probs=self.log_probs[..., slice, :],
            input_ids=self.input_ids[..., slice],
            targets=cut(self.targets),
            anti_targets=cut(self.anti_targets),
            tokenizer=self.tokenizer,
            attention_mask=cut(self.attention_mask),
            layers=self.layers,
        )
        cached = self._cached_top_k()
        if cached is not None:
            sliced._top_k_cache.update(
                key=id(sliced.log_probs),
                k=cached["k"],
                ids=cached["ids"][..., slice, :],
                probs=cached["probs"][..., slice, :],
            )
        return sliced

    # ------------------------------------------------------------------ cell hooks
    def _targets_for_rows(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        return ids[..., None, :]

    def _cell_entropy(self) -> NDArray[np.float32]:
        return lens_stats.entropy(self.log_probs)

    def _cell_target_log_prob(
        self, which: Literal["targets", "anti_targets"]
    ) -> NDArray[np.float32]:
        targets = self._require(which)
        return lens_stats.target_log_prob(self.log_probs, self._targets_for_rows(targets))

    def _cell_token_log_prob(self, token_id: int) -> NDArray[np.float32]:
        if not 0 <= token_id < self.vocab_size:
            raise TargetIndexError(
                f"token_id {token_id} is outside the vocabulary [0, {self.vocab_size})"
            )
        targets = np.full(self.log_probs.shape[:-1], token_id, dtype=np.int64)
        return lens_stats.target_log_prob(self.log_probs, targets)

    def _cell_target_rank(self) -> NDArray[np.int64]:
        targets = self._require("targets")
        return lens_stats.target_rank(self.log_probs, self._targets_for_rows(targets))

    def _cell_forward_kl(self) -> NDArray[np.float32]:
        return lens_stats.forward_kl(self.log_probs, self.model_log_probs)

    def _cell_max_probability(self) -> NDArray[np.float32]:
        cached = self._cached_top_k()
        if cached is not None:
            return cached["probs"][..., 0]
        return lens_stats.max_probability(self.log_probs)[0]

    def _cached_top_k(self) -> dict[str, Any] | None:
        cache = self._top_k_cache
        if cache and cache.get("key") == id(self.log_probs):
            return cache
        return None

    def _cell_top_k(self, k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        if k < 1:
            raise InvalidInputError(f"topk must be positive, got {k}", option="topk")
        cached = self._cached_top_k()
        if cached is None or cached["k"] < k:
            ids, probs = lens_stats.top_k(self.log_probs, k)
            self._top_k_cache.clear()
            self._top_k_cache.update(key=id(self.log_probs), k=k, ids=ids, probs=probs)
            cached = self._top_k_cache
        return cached["ids"][..., :k], cached["probs"][..., :k]

    def select_layers(self, layers: Sequence[int]) -> PredictionTrajectory:
        """The rows of some held hidden-state indices (ascending) and the output row.

        Raises:
            InvalidInputError: An index this trajectory does not hold.
        """
        rows = [*row_positions(self.layer_indices, layers), self.num_layers]
        return replace(self, log_probs=self.log_probs[..., rows, :, :], layers=tuple(layers))

    def _align(self, other: object) -> tuple[PredictionTrajectory, PredictionTrajectory]:
        """Both trajectories on the layers both hold (unchanged when they agree)."""
        other = self._check_type(other)
        if other.layer_indices == self.layer_indices:
            return self, other
        shared = shared_rows(self.layer_indices, other.layer_indices)
        return self.select_layers(shared), other.select_layers(shared)

    def _check_type(self, other: object) -> PredictionTrajectory:
        if not isinstance(other, PredictionTrajectory):
            raise TypeError(f"other must be a PredictionTrajectory, got {type(other).__name__}")
        return other

    def _check_other(self, other: object) -> PredictionTrajectory:
        other = self._check_type(other)
        if other.layer_indices != self.layer_indices:
            raise TrajectoryShapeError(
                f"other holds layers {list(other.layer_indices)}, self "
                f"{list(self.layer_indices)}; compare through kl_divergence & co., which use the "
                "shared layers, or select_layers()"
            )
        if tuple(other.log_probs.shape) != tuple(self.log_probs.shape):
            raise TrajectoryShapeError(
                f"other.log_probs has shape {tuple(other.log_probs.shape)}, self has "
                f"{tuple(self.log_probs.shape)}"
            )
        return other

    def _cell_pairwise(self, other: object, kind: PairwiseKind) -> NDArray[np.float32]:
        other = self._check_other(other)
        kernel = getattr(lens_stats, _PAIRWISE_KERNELS[kind])
        return kernel(self.log_probs, other.log_probs)

    def _cell_top_k_delta(
        self, other: object, k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        other = self._check_other(other)
        return lens_stats.top_k_delta(self.log_probs, other.log_probs, k)


def _cache_layers(lens: Lens, cache: Mapping[tuple[str, int], torch.Tensor]) -> int:
    """Layers to decode from a TransformerLens cache: the lens's, else the model's."""
    try:
        return len(lens)  # type: ignore[arg-type]
    except TypeError:
        pass
    cfg = getattr(getattr(cache, "model", None), "cfg", None)
    if cfg is None:
        raise InvalidInputError(
            "cannot tell the number of layers: the lens has no len() and the "
            "cache no model.cfg.n_layers",
            option="cache",
        )
    return int(cfg.n_layers)


def _full_log_probs(decoder: LayerDecoder) -> F32Array:
    """``(b, R+1, T, V)`` float32 (``R`` decoded layers): every row written in place.

    Decoded one sequence at a time, each row straight into its ``(T, V)`` slice of the result
    (under :mod:`tuned_lens.decoding`'s policy for a float32 host destination).
    """
    n_batch, n_tokens = decoder.batch_shape
    shape = (n_batch, len(decoder.layers) + 1, n_tokens, decoder.vocab_size)
    log_probs = np.empty(shape, dtype=np.float32)

    def destination(row: int, positions: IdArray) -> F32Array:
        return log_probs[int(positions[0]) // n_tokens, row]

    for _ in decoder.rows(chunk_rows=n_tokens, destination=destination):
        pass
    return log_probs
