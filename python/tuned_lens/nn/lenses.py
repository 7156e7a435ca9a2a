"""Lenses: decode a transformer's intermediate hidden states into vocabulary logits.

Index convention (Hugging Face ``model(ids, output_hidden_states=True)``): translator ``i`` of a
lens reads ``hidden_states[i]`` for ``i`` in ``0 .. L-1``, where ``hidden_states[0]`` is the
embedding output and ``hidden_states[i]`` the output of block ``i-1``. There is no translator for
the final state; the model's own logits play that role.
"""

from __future__ import annotations

import abc
import copy
import inspect
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError, LensFileError
from ..lens_io import TunedLensConfig
from .generation_cache import StepCache
from .hub_mixin import LensHubMixin
from .low_rank import LowRankTranslator
from .unembed import Unembed

__all__ = ["Lens", "LogitLens", "TunedLens", "TunedLensConfig"]

logger = logging.getLogger(__name__)


class Lens(abc.ABC, nn.Module):
    """Abstract base class of all lenses.

    Args:
        unembed: The map from final-layer-like hidden states to logits.
    """

    unembed: Unembed

    def __init__(self, unembed: Unembed):
        super().__init__()
        self.unembed = unembed

    @abc.abstractmethod
    def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """Convert a layer-``idx`` hidden state to a final-layer-like state (before the norm).

        Args:
            h: Hidden states, shape ``(..., d_model)``.
            idx: The layer these hidden states come from (``hidden_states[idx]``).
        """

    @abc.abstractmethod
    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """Decode layer-``idx`` hidden states ``(..., d_model)`` into logits ``(..., vocab)``."""

    @property
    def num_layers(self) -> int | None:
        """Number of layers the lens decodes (``None`` when any index is accepted)."""
        return None

    @torch.inference_mode()
    def generate(
        self,
        model: nn.Module,
        layer: int,
        input_ids: torch.Tensor,
        do_sample: bool = True,
        temp: float = 1.0,
        max_new_tokens: int = 100,
    ) -> torch.Tensor:
        """Generate text where each next token is decoded by this lens at ``layer``.

        The model runs incrementally with its KV cache (only the new token is fed on each step);
        the hidden state ``hidden_states[layer]`` of the last position is decoded with the lens.
        Rows that produced an end-of-sequence token are padded afterwards with the pad token
        (the first EOS id when the model has none) until every row is done or
        ``max_new_tokens`` is reached. Needs a Hugging Face model (``output_hidden_states``).

        Args:
            model: The base model, usually the one the lens was trained on.
            layer: The layer to decode from, ``0 <= layer < num_layers`` (negative counts from
                the end of the lens).
            input_ids: Prompt ids, shape ``(batch, prompt_len)``; a 1-D prompt is batch 1.
            do_sample: Sample from ``softmax(logits / temp)`` if ``True``, else greedy argmax.
            temp: Sampling temperature (> 0).
            max_new_tokens: Maximum number of tokens to append.

        Returns:
            The prompt followed by the generated tokens, shape ``(batch, prompt_len + n)``.
        """
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise InvalidInputError(
                f"input_ids must have shape (batch, prompt_len>0), got {tuple(input_ids.shape)}",
                option="input_ids",
            )
        if do_sample and not temp > 0:
            raise InvalidInputError(f"temp must be > 0 when sampling, got {temp}", option="temp")
        if max_new_tokens < 0:
            raise InvalidInputError(
                f"max_new_tokens must be >= 0, got {max_new_tokens}", option="max_new_tokens"
            )
        layer = self._normalise_layer(layer)

        eos_ids = _eos_token_ids(model)
        pad_id = _pad_token_id(model, eos_ids)
        device = _module_device(model)
        tokens = input_ids.to(device)
        batch = tokens.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        eos = torch.tensor(eos_ids, dtype=tokens.dtype, device=device)

        cache = StepCache(
            model, batch=batch, max_len=tokens.shape[1] + max_new_tokens, device=device
        )
        step_input = tokens
        for _ in range(max_new_tokens):
            # Feed only the new tokens; the cache holds the keys/values of everything before.
            n_new = step_input.shape[1]
            out = model(
                step_input, use_cache=True, output_hidden_states=True, **cache.kwargs(n_new)
            )
            cache.update(out, n_new)
            hidden = out.hidden_states[layer][:, -1]
            logits = self(hidden, layer).float()
            if do_sample:
                next_token = torch.multinomial((logits / temp).softmax(dim=-1), num_samples=1)
            else:
                next_token = logits.argmax(dim=-1, keepdim=True)
            next_token = next_token.to(tokens.dtype)
            if pad_id is not None:
                next_token = torch.where(done.unsqueeze(-1), pad_id, next_token)
            tokens = torch.cat([tokens, next_token], dim=-1)
            if eos.numel():
                done = done | torch.isin(next_token.squeeze(-1), eos)
                if bool(done.all()):
                    break
            step_input = next_token
        return tokens

    def _normalise_layer(self, layer: int) -> int:
        n = self.num_layers
        if not isinstance(layer, int):
            raise TypeError(f"layer must be an int, got {type(layer).__name__}")
        if n is None:
            if layer < 0:
                raise IndexError(f"layer must be >= 0 for this lens, got {layer}")
            return layer
        if not -n <= layer < n:
            raise IndexError(f"layer {layer} out of range for a lens with {n} layers")
        return layer % n


def _module_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def _eos_token_ids(model: nn.Module) -> list[int]:
    for config in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(config, "eos_token_id", None)
        if eos is None:
            continue
        return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]
    return []


def _pad_token_id(model: nn.Module, eos_ids: list[int]) -> int | None:
    for config in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        pad = getattr(config, "pad_token_id", None)
        if isinstance(pad, int):
            return pad
    return eos_ids[0] if eos_ids else None


def _placement_tensor(unembed: nn.Module) -> torch.Tensor:
    """A tensor whose dtype and device new translators take: the unembedding weight, else the
    module's first floating-point parameter or buffer, else an empty float32 CPU tensor."""
    weight = getattr(getattr(unembed, "unembedding", None), "weight", None)
    if isinstance(weight, torch.Tensor):
        return weight
    tensors = (*unembed.parameters(), *unembed.buffers())
    return next((t for t in tensors if t.is_floating_point()), torch.empty(0))


class LogitLens(Lens):
    """The logit lens: decode every layer with the model's final norm and unembedding."""

    @classmethod
    def from_model(cls, model: nn.Module) -> LogitLens:
        """Create a logit lens from a Hugging Face model or TransformerLens model."""
        return cls(Unembed(model))

    def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """The identity: the logit lens does not transform hidden states."""
        return h

    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """Decode hidden states ``(..., d_model)`` into logits ``(..., vocab)``."""
        return self.unembed(h)


class TunedLens(LensHubMixin, Lens):
    """A tuned lens: one affine translator per layer in front of the unembedding.

    Translator ``i`` maps ``h`` to ``h + W_i h + b_i``; ``W_i`` and ``b_i`` start at zero, so a
    fresh tuned lens is exactly the logit lens. With ``config.rank = r`` each translator is a
    :class:`~tuned_lens.nn.low_rank.LowRankTranslator` (``h + U_i V_iᵀ h + b_i``, ``U_i = 0``
    and ``V_i`` random, so a fresh one is the logit lens too and training moves both factors).
    Parameters take the dtype and device of the unembedding (float16 if the unembedding is not
    floating point). ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` publish it as a
    Hugging Face model repository (:class:`~tuned_lens.nn.hub_mixin.LensHubMixin`).

    Args:
        unembed: The unembedding of the base model.
        config: The lens's metadata; ``config.unembed_hash`` is set from ``unembed``.
    """

    config: TunedLensConfig
    layer_translators: nn.ModuleList

    def __init__(self, unembed: Unembed, config: TunedLensConfig):
        super().__init__(unembed)
        # Any module with the original's interface (forward, unembedding_hash) is accepted:
        # d_model comes from the config, checked only against an unembed that states its own.
        d_model = getattr(unembed, "d_model", None)
        if isinstance(d_model, int) and config.d_model != d_model:
            raise InvalidInputError(
                f"config.d_model={config.d_model} does not match the model's hidden size {d_model}",
                option="config",
            )
        self.config = copy.copy(config)
        self.config.unembed_hash = unembed.unembedding_hash()
        weight = _placement_tensor(unembed)
        dtype = weight.dtype if weight.dtype.is_floating_point else torch.float16
        translators: list[nn.Module] = []
        for i in range(config.num_hidden_layers):
            if config.rank is not None:
                low_rank = LowRankTranslator(
                    config.d_model,
                    config.rank,
                    bias=config.bias,
                    dtype=dtype,
                    device=weight.device,
                    seed=i,
                )
                translators.append(low_rank)
                continue
            translator = nn.Linear(
                config.d_model, config.d_model, bias=config.bias, dtype=dtype, device=weight.device
            )
            nn.init.zeros_(translator.weight)
            if translator.bias is not None:
                nn.init.zeros_(translator.bias)
            translators.append(translator)
        self.layer_translators = nn.ModuleList(translators)

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        model_revision: str | None = None,
        bias: bool = True,
        rank: int | None = None,
    ) -> TunedLens:
        """Create a fresh (identity) lens for ``model``.

        Args:
            model: The model to create the lens for.
            model_revision: The git revision of the model, recorded in the config.
            bias: Whether the translators have a bias.
            rank: ``None`` for full translators, ``r`` for rank-``r`` ones.
        """
        unembed = Unembed(model)
        num_layers = _num_hidden_layers(model)
        config = TunedLensConfig(
            base_model_name_or_path=unembed.model_name_or_path or "",
            d_model=unembed.d_model,
            num_hidden_layers=num_layers,
            bias=bias,
            base_model_revision=model_revision,
            rank=rank,
        )
        return cls(unembed, config)

    @classmethod
    def from_model_and_pretrained(
        cls, model: nn.Module, lens_resource_id: str | None = None, **kwargs: Any
    ) -> TunedLens:
        """Load a tuned lens for ``model`` from a local folder or the Hugging Face Hub.

        Args:
            model: The model the lens decodes.
            lens_resource_id: A local folder or a Hub lens id; defaults to
                ``model.config.name_or_path``.
            **kwargs: Passed to :func:`tuned_lens.load_artifacts.load_lens_artifacts` (e.g.
                ``revision``, ``repo_id``, ``cache_dir``) or to the parameter reader
                (``map_location``; see :meth:`from_unembed_and_pretrained`).
        """
        unembed = Unembed(model)
        if lens_resource_id is None:
            # The model's name: config.name_or_path (also of a bridge's or nnsight's model).
            lens_resource_id = unembed.model_name_or_path
            if not lens_resource_id:
                raise InvalidInputError(
                    "lens_resource_id is required: the model has no name_or_path",
                    option="lens_resource_id",
                )
        expected = _num_hidden_layers(model)
        lens = cls._load_pretrained(unembed, lens_resource_id, kwargs, num_layers=expected)
        if len(lens) != expected:  # read_lens_folder checked it before building anything
            raise LensFileError(
                f"lens {lens_resource_id!r} has {len(lens)} translators but the model has "
                f"{expected} layers"
            )
        return lens

    @classmethod
    def from_unembed_and_pretrained(
        cls, unembed: Unembed, lens_resource_id: str, **kwargs: Any
    ) -> TunedLens:
        """Load a tuned lens from a folder or the Hub, around an existing unembedding.

        Keyword arguments named like a parameter of
        :func:`~tuned_lens.load_artifacts.load_lens_artifacts` go there; the others go to the
        parameter reader :func:`tuned_lens.lens_io.read_lens_params`: ``map_location`` (where to
        put the tensors; they are read on the CPU first) and ``weights_only`` (accepted for
        compatibility; pickled code is never executed regardless).

        The stored config must match the unembedding's hidden size; a different base model name
        or unembedding hash only warns (the hash is advisory, as in the original). The files are
        read as one version (see :mod:`tuned_lens.lens_folder`), and the config is checked
        against the model and the parameter file before any translator is built.

        Raises:
            TypeError: For keyword arguments neither function accepts.
            tuned_lens.lens_io.LensFileError: For malformed or unsafe lens files.
        """
        return cls._load_pretrained(unembed, lens_resource_id, kwargs)

    @classmethod
    def _load_pretrained(
        cls,
        unembed: Unembed,
        lens_resource_id: str,
        kwargs: dict[str, Any],
        num_layers: int | None = None,
    ) -> TunedLens:
        """:meth:`from_unembed_and_pretrained`, with the model's layer count when known."""
        from ..lens_folder import read_lens_folder
        from ..lens_io import read_lens_params
        from ..load_artifacts import load_lens_artifacts

        artifact_names = set(inspect.signature(load_lens_artifacts).parameters) - {"resource_id"}
        reader_names = set(inspect.signature(read_lens_params).parameters) - {"path"}
        artifact_kwargs = {k: v for k, v in kwargs.items() if k in artifact_names}
        reader_kwargs = {k: v for k, v in kwargs.items() if k in reader_names}
        unknown = sorted(set(kwargs) - artifact_names - reader_names)
        if unknown:
            raise TypeError(
                f"unexpected keyword arguments {unknown}; accepted: "
                f"{sorted(artifact_names | reader_names)}"
            )
        config_path, params_path = load_lens_artifacts(lens_resource_id, **artifact_kwargs)
        config, state = read_lens_folder(
            config_path, params_path, d_model=unembed.d_model, num_layers=num_layers
        )
        if (
            unembed.model_name_or_path
            and config.base_model_name_or_path
            # Compare last path components: "gpt2" and "/models/gpt2" name the same model.
            and Path(config.base_model_name_or_path).name != Path(unembed.model_name_or_path).name
        ):
            warnings.warn(
                f"lens {lens_resource_id!r} was trained on {config.base_model_name_or_path!r}, "
                f"but the model is {unembed.model_name_or_path!r}",
                UserWarning,
                stacklevel=3,
            )
        stored_hash = config.unembed_hash
        lens = cls(unembed, config)
        if stored_hash and stored_hash != lens.config.unembed_hash:
            warnings.warn(
                f"the unembedding of the model differs from the one lens {lens_resource_id!r} was "
                "trained with (unembed_hash mismatch); its predictions may be meaningless",
                UserWarning,
                stacklevel=3,
            )
        device = unembed.unembedding.weight.device
        target = reader_kwargs.get("map_location")
        # The translators' dtype (that of their first parameter, layer 0's weight).
        dtype = next(lens.layer_translators.parameters()).dtype if len(lens) else torch.float32
        with torch.no_grad():
            lens.layer_translators.load_state_dict(
                {k: v.to(dtype=dtype, device=device) for k, v in state.items()}, strict=True
            )
        if target is not None:
            lens = lens.to(target)
        return lens

    # -- persistence ----------------------------------------------------------------------------

    def save(
        self,
        path: str | Path,
        ckpt: str = "params.safetensors",
        config: str = "config.json",
    ) -> None:
        """Save the lens to a directory: ``config.json`` and ``params.safetensors``.

        The parameters are stored as safetensors with keys ``"{i}.weight"`` and ``"{i}.bias"``
        (the original's ``state_dict`` names) in the lens's dtype. Pickle files are never
        written. The folder changes as one unit: concurrent savers take turns, and a manifest
        ``lens_manifest.json`` written last lets loaders refuse files of a save that was killed
        midway (see :mod:`tuned_lens.lens_folder`). Other files in the folder are kept.

        A lens with NaN or infinite parameters is refused here, since loading refuses it too.

        Args:
            path: Directory to create (parents too) or reuse.
            ckpt: File name of the parameters; must end in ``.safetensors``.
            config: File name of the config.

        Raises:
            InvalidInputError: A parameter is not finite, or ``ckpt`` is not ``.safetensors``.
        """
        from ..lens_folder import write_lens_folder

        write_lens_folder(
            path,
            self.config,
            self.layer_translators.state_dict(),
            params_name=ckpt,
            config_name=config,
        )

    # -- the lens -------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.layer_translators)

    def __len__(self) -> int:
        return len(self.layer_translators)

    def __getitem__(self, item: int) -> nn.Module:
        """The translator of layer ``item`` (negative indices count from the end)."""
        return self.layer_translators[item]

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.layer_translators)

    def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """``h + W_idx h + b_idx``: move layer-``idx`` states ``(..., d)`` toward the last layer."""
        translator = self.layer_translators[self._normalise_layer(idx)]
        return h + translator(h)

    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """Translate then decode layer-``idx`` states ``(..., d_model)`` into logits."""
        return self.unembed(self.transform_hidden(h, idx))


def _num_hidden_layers(model: nn.Module) -> int:
    from ..architectures import resolve_architecture

    return len(resolve_architecture(model).layers)
