"""The Jacobian lens: ``lens(h, i) = unembed(final_norm(J_i h))`` with ``J_i = E[∂h_final/∂h_i]``.

``J_i`` is the average Jacobian of the last block's output (before the final norm) with
respect to ``hidden_states[i]`` (see :mod:`tuned_lens.nn.jacobian_fit` for the estimator and
:mod:`tuned_lens.nn.jacobian_io` for the files). The read-out goes through the model's own
:class:`~tuned_lens.nn.Unembed` (final norm, head, soft-capping or logit scaling), and the norm
statistics are recomputed for the transported vector ``J_i h``.

Index convention: ``lens(hidden_states[i], i)``, ``i = 0`` the embedding output. The files
published for the reference cover blocks ``0 .. L-2``, i.e. hidden-state indices ``1 .. L-1``;
a fit here covers ``0 .. L-1`` unless ``layers=`` says otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import InvalidInputError
from . import jacobian_io
from .jacobian_io import JacobianLensData
from .lenses import Lens
from .unembed import Unembed

__all__ = ["JacobianLens"]


class JacobianLens(Lens):
    """A Jacobian lens: one ``(d, d)`` transport matrix per covered layer, then the unembedding.

    Args:
        unembed: The model's unembedding.
        jacobians: Hidden-state index ``i`` -> ``J_i`` of shape ``(d_model, d_model)`` (rows:
            final-block dimensions, columns: source dimensions).
        num_layers: ``L``, the model's number of blocks (lens layers are ``0 .. L-1``).
        n_prompts: Number of prompts ``J`` was averaged over (the weight in :meth:`merge`).
        metadata: Provenance, plain values only (saved with the lens).

    Attributes:
        J: ``(n_covered, d, d)`` buffer, float32 (float64 when given float64 matrices), on the
            unembedding's device.
    """

    J: torch.Tensor

    def __init__(
        self,
        unembed: Unembed,
        jacobians: Mapping[int, torch.Tensor],
        *,
        num_layers: int,
        n_prompts: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ):
        super().__init__(unembed)
        d = unembed.d_model
        if not jacobians:
            raise InvalidInputError("a Jacobian lens needs at least one layer", option="jacobians")
        for i, jac in jacobians.items():
            if not 0 <= i < num_layers:
                raise InvalidInputError(
                    f"layer {i} is outside 0..{num_layers - 1}", option="jacobians"
                )
            if tuple(jac.shape) != (d, d):
                raise InvalidInputError(
                    f"J[{i}] has shape {tuple(jac.shape)}, expected ({d}, {d})", option="jacobians"
                )
        self._num_layers = num_layers
        self._layers = tuple(sorted(jacobians))
        self._slot = {i: k for k, i in enumerate(self._layers)}
        wide = any(j.dtype == torch.float64 for j in jacobians.values())
        dtype = torch.float64 if wide else torch.float32
        device = unembed.unembedding.weight.device
        stacked = torch.stack([jacobians[i].detach().to(device, dtype) for i in self._layers])
        self.register_buffer("J", stacked)
        self.n_prompts = int(n_prompts)
        self.metadata: dict[str, Any] = dict(metadata or {})

    # -- the lens -------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return self._num_layers

    def __len__(self) -> int:
        return self._num_layers

    @property
    def layers(self) -> tuple[int, ...]:
        """The covered hidden-state indices, ascending."""
        return self._layers

    @property
    def d_model(self) -> int:
        """The residual width."""
        return int(self.J.shape[-1])

    def jacobian(self, idx: int) -> torch.Tensor:
        """``J_idx``, shape ``(d_model, d_model)`` (a view of the buffer).

        Raises:
            IndexError: ``idx`` outside ``-L .. L-1``.
            InvalidInputError: The lens has no matrix for this layer (the message names the
                covered layers).
        """
        layer = self._normalise_layer(idx)
        slot = self._slot.get(layer)
        if slot is None:
            raise InvalidInputError(
                f"this Jacobian lens has no matrix for layer {layer} (hidden_states[{layer}]); it "
                f"covers layers {_describe(self._layers)} of 0..{self._num_layers - 1}",
                option="layer",
            )
        return self.J[slot]

    def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """``J_idx h`` for states ``(..., d_model)``, computed in ``J``'s dtype.

        The result has the unembedding's dtype (as the reference casts to the head's dtype).
        """
        jac = self.jacobian(idx)
        out = h.to(device=jac.device, dtype=jac.dtype) @ jac.T
        weight = self.unembed.unembedding.weight
        return out.to(weight.dtype if weight.dtype.is_floating_point else h.dtype)

    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """``unembed(J_idx h)``: logits ``(..., vocab)`` for layer-``idx`` states ``(..., d)``."""
        return self.unembed(self.transform_hidden(h, idx))

    # -- fitting ----------------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        prompts: Sequence[Any],
        *,
        tokenizer: Any = None,
        skip_first: int = 16,
        max_seq_len: int = 128,
        dim_batch: int = 8,
        layers: Sequence[int] | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 10,
        progress: bool = True,
        shard: tuple[int, int] = (0, 1),
        prepend_bos: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ) -> JacobianLens:
        """Fit a Jacobian lens on ``prompts`` (see :mod:`tuned_lens.nn.jacobian_fit`).

        One forward and ``ceil(d_model / dim_batch)`` backward passes per prompt. Sharded
        runs (``shard=(rank, world)``, e.g. one per torchrun process) are combined with
        :meth:`merge`, which equals the fit on all prompts.

        Args:
            model: A Hugging Face causal LM in eval mode.
            prompts: Strings (with ``tokenizer``) or token-id sequences.
            tokenizer: For string prompts.
            skip_first: Leading positions excluded (attention sinks).
            max_seq_len: Tokens kept per prompt, BOS included.
            dim_batch: Output dimensions per backward pass (memory only).
            layers: Hidden-state indices to fit; default all of ``0 .. L-1``.
            checkpoint: A file to checkpoint the running sums to; an existing one is resumed.
            checkpoint_every: Prompts between checkpoints.
            progress: Show a tqdm progress bar.
            shard: ``(rank, world)``: fit prompts ``k`` with ``k % world == rank``.
            prepend_bos: Put the tokenizer's BOS first on string prompts.
            metadata: Extra provenance (e.g. ``{"corpus": ...}``); it cannot override the keys
                the fit records.
        """
        from .jacobian_fit import fit_jacobians

        result = fit_jacobians(
            model,
            prompts,
            tokenizer=tokenizer,
            skip_first=skip_first,
            max_seq_len=max_seq_len,
            dim_batch=dim_batch,
            layers=layers,
            checkpoint=checkpoint,
            checkpoint_every=checkpoint_every,
            progress=progress,
            shard=shard,
            prepend_bos=prepend_bos,
        )
        unembed = Unembed(model)
        dtype = torch.float64 if unembed.unembedding.weight.dtype == torch.float64 else None
        recorded = _fit_metadata(model, result.n_blocks, skip_first, max_seq_len, dim_batch)
        clash = sorted(set(metadata or {}) & set(recorded))
        if clash:
            raise InvalidInputError(f"metadata cannot override {clash}", option="metadata")
        return cls(
            unembed,
            {i: j if dtype else j.float() for i, j in result.jacobians.items()},
            num_layers=result.n_blocks,
            n_prompts=result.n_prompts,
            metadata={**recorded, **(metadata or {})},
        )

    @classmethod
    def merge(cls, lenses: Sequence[JacobianLens]) -> JacobianLens:
        """Combine lenses fitted on disjoint prompts: ``Σ n_k J_k / Σ n_k`` per layer.

        Every prompt has weight 1, so this equals one fit on all the prompts (up to rounding).

        Raises:
            InvalidInputError: No lenses, a lens with ``n_prompts <= 0``, or lenses that differ
                in layers, width, depth or metadata (other than ``n_prompts``).
        """
        if not lenses:
            raise InvalidInputError("merge needs at least one lens", option="lenses")
        first = lenses[0]
        total = sum(lens.n_prompts for lens in lenses)
        for lens in lenses:
            if lens.n_prompts <= 0:
                raise InvalidInputError("every merged lens needs n_prompts > 0", option="lenses")
            same = (lens.layers, lens.d_model, lens.num_layers) == (
                first.layers,
                first.d_model,
                first.num_layers,
            )
            if not same or _without_count(lens.metadata) != _without_count(first.metadata):
                raise InvalidInputError(
                    "merged lenses must agree on layers, d_model, depth and metadata",
                    option="lenses",
                )
        sums = sum(lens.J.double() * lens.n_prompts for lens in lenses)
        assert isinstance(sums, torch.Tensor)
        merged = (sums / total).to(first.J.dtype)
        metadata = dict(first.metadata)
        if "n_prompts" in metadata:
            metadata["n_prompts"] = total
        return cls(
            first.unembed,
            dict(zip(first.layers, merged)),
            num_layers=first.num_layers,
            n_prompts=total,
            metadata=metadata,
        )

    # -- files ----------------------------------------------------------------------------------

    def to_data(self) -> JacobianLensData:
        """The lens's content as plain data (matrices on the CPU)."""
        jacobians = {i: self.J[k].detach().cpu() for k, i in enumerate(self._layers)}
        return JacobianLensData(jacobians, self.d_model, self.n_prompts, dict(self.metadata))

    def save(
        self,
        path: str | Path,
        *,
        format: Literal["reference", "safetensors"] = "reference",
        dtype: torch.dtype = torch.float16,
    ) -> None:
        """Write the lens.

        Args:
            path: ``"reference"``: the ``.pt`` file (the format of ``jlens`` and TransformerLens:
                ``J`` keyed by block, ``n_prompts``, ``source_layers``, ``d_model``,
                ``metadata``). ``"safetensors"``: a folder for ``config.json`` and
                ``params.safetensors``.
            format: Which layout.
            dtype: Storage dtype of the matrices (float16 by default, as the reference).
        """
        if format == "reference":
            jacobian_io.write_reference(path, self.to_data(), dtype)
        elif format == "safetensors":
            jacobian_io.write_safetensors(path, self.to_data(), dtype)
        else:
            raise InvalidInputError(
                f"format must be 'reference' or 'safetensors', got {format!r}", option="format"
            )

    @classmethod
    def from_pretrained(
        cls,
        path_or_repo: str | os.PathLike[str],
        *,
        model: nn.Module,
        filename: str | None = None,
        revision: str | None = None,
        cache_dir: str | None = None,
        validate: bool = True,
    ) -> JacobianLens:
        """Load a lens from a ``.pt`` file, a folder, or a Hugging Face repository.

        Published ``.pt`` files are read without unpickling code (see
        :mod:`tuned_lens.nn.jacobian_io`). The lens is checked against ``model``: ``d_model``,
        the layer range, the target layer, and the recorded model name and revision.

        Args:
            path_or_repo: A file, a folder, or a Hub repo id (e.g. ``"neuronpedia/jacobian-lens"``).
            model: The model the lens decodes (its unembedding is used for the read-out).
            filename: The file inside the folder or repository (Hub default ``lens.pt``).
            revision: The Hub revision (branch, tag or commit).
            cache_dir: The Hugging Face cache directory.
            validate: Run the model-name / revision / target checks (``d_model`` and the
                layer range are always checked).

        Raises:
            LensFileError: Unreadable, unsafe, or not fitting the model.
        """
        resolved = jacobian_io.resolve_jacobian_lens_path(
            path_or_repo, filename=filename, revision=revision, cache_dir=cache_dir
        )
        unembed = Unembed(model)
        from ..architectures import resolve_architecture

        n_blocks = len(resolve_architecture(model).layers)
        limit = n_blocks * unembed.d_model**2 * 8 + (1 << 20)
        data = jacobian_io.read_jacobian_lens(resolved, max_bytes=limit)
        if validate:
            jacobian_io.check_lens_fits_model(data, model, unembed.d_model)
        else:
            strict = JacobianLensData(data.jacobians, data.d_model)
            jacobian_io.check_lens_fits_model(strict, model, unembed.d_model)
        return cls(
            unembed,
            data.jacobians,
            num_layers=n_blocks,
            n_prompts=data.n_prompts,
            metadata=data.metadata,
        )


def _describe(layers: Sequence[int]) -> str:
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


def _without_count(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if k != "n_prompts"}


def _fit_metadata(
    model: nn.Module, n_blocks: int, skip_first: int, max_seq_len: int, dim_batch: int
) -> dict[str, Any]:
    """What a fit records (TransformerLens's keys where they exist; block convention)."""
    config = getattr(model, "config", None)
    dtype = next(model.parameters()).dtype
    meta: dict[str, Any] = {
        "model_name": getattr(config, "name_or_path", None) or None,
        "model_revision": getattr(config, "_commit_hash", None),
        "processing": {"compatibility_mode": False, "weight_basis": "raw_huggingface"},
        "target_layer": n_blocks - 1,
        "num_hidden_layers": n_blocks,
        "fit_dtype": str(dtype).removeprefix("torch."),
        "dim_batch": dim_batch,
        "max_seq_len": max_seq_len,
        "skip_first_positions": skip_first,
        "estimator": "jacobian_lens",
        "producer": "tuned-lens-rs",
    }
    return {k: v for k, v in meta.items() if v is not None}
