"""The linear shortcut (Din et al. 2023): ``h_L ≈ h_i + A_i h_i + b_i``, fitted in closed form.

For every lens layer ``i`` (``hidden_states[i]``, ``0`` the embeddings) the affine map from the
layer's residual to the last block's output *before* the final norm is the least-squares
solution over a stream of hidden states; the lens reads the shortcut's prediction out through
the model's own final norm and unembedding (:class:`~tuned_lens.nn.Unembed`).

Solver: the normal equations of the centred problem, accumulated batch by batch in float64 —
``Σx``, ``Σy``, ``Σxxᵀ`` and ``Σxyᵀ`` with ``y = h_L − h_i`` — so memory is ``O(d²)`` per layer
whatever the number of tokens, then ``(C_xx + λ·tr(C_xx)/d · I) Aᵀ = C_xy`` and
``b = ȳ − A x̄`` by a Cholesky solve. Centring keeps the bias out of the ridge and removes the
large common offset of residual streams before the squares are formed; float64 keeps the
squared condition number of the normal equations harmless at residual widths; the small ridge
``λ`` (relative to the mean variance) makes the system positive definite even with fewer
tokens than dimensions or with dead directions. A QR/``lstsq`` of the data matrix would need
all tokens in memory at once.

The same fit (:class:`AffineLeastSquares`, :meth:`LinearShortcutLens.translator_state`)
initialises tuned-lens translators, whose form ``h + W h + b`` it shares.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path, write_json_atomically
from ..errors import InvalidInputError, LensFileError
from .lenses import Lens
from .unembed import Unembed

__all__ = ["AffineLeastSquares", "LinearShortcutLens", "fit_linear_shortcut"]

LENS_TYPE = "linear_shortcut"
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"


class AffineLeastSquares:
    """Streaming least squares ``y ≈ A x + b`` for ``x, y`` of width ``d`` (float64 sums).

    Args:
        d_in: Width of ``x``.
        d_out: Width of ``y``.
    """

    def __init__(self, d_in: int, d_out: int):
        self.n = 0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_y = torch.zeros(d_out, dtype=torch.float64)
        self.sum_xx = torch.zeros(d_in, d_in, dtype=torch.float64)
        self.sum_xy = torch.zeros(d_in, d_out, dtype=torch.float64)

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add ``(n, d_in)`` inputs and ``(n, d_out)`` targets (any float dtype or device)."""
        if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
            raise InvalidInputError(
                f"x and y must be (n, d) with the same n, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        x = x.detach().to("cpu", torch.float64)
        y = y.detach().to("cpu", torch.float64)
        self.n += x.shape[0]
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.sum_xx += x.T @ x
        self.sum_xy += x.T @ y

    def solve(self, ridge: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, b)``, shapes ``(d_out, d_in)`` and ``(d_out,)``, float64.

        Args:
            ridge: ``λ``: ``λ · tr(C_xx) / d_in`` is added to the diagonal of the centred
                ``C_xx`` (the bias is not penalised); ``0`` is plain least squares.

        Raises:
            InvalidInputError: No data, a negative ridge, or a singular system at ``ridge=0``.
        """
        if self.n == 0:
            raise InvalidInputError("no data to fit", option="data")
        if ridge < 0:
            raise InvalidInputError(f"ridge must be >= 0, got {ridge}", option="ridge")
        mean_x, mean_y = self.sum_x / self.n, self.sum_y / self.n
        cxx = self.sum_xx - self.n * torch.outer(mean_x, mean_x)
        cxy = self.sum_xy - self.n * torch.outer(mean_x, mean_y)
        d = cxx.shape[0]
        cxx = cxx + ridge * float(torch.trace(cxx)) / d * torch.eye(d, dtype=torch.float64)
        factor, info = torch.linalg.cholesky_ex(cxx)
        if int(info) != 0:
            raise InvalidInputError(
                "the normal equations are singular (fewer distinct tokens than dimensions?); "
                "use a ridge > 0",
                option="ridge",
            )
        a_t = torch.cholesky_solve(cxy, factor)  # (d_in, d_out)
        return a_t.T.contiguous(), mean_y - mean_x @ a_t


def _last_block_output(model: nn.Module, blocks: nn.ModuleList, ids: torch.Tensor) -> tuple:
    """``(hidden_states[0..L-1], h_L)`` for ``(1, T)`` ids; ``h_L`` is pre-norm."""
    kept: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _a: tuple, output: Any) -> None:
        kept["h"] = output[0] if isinstance(output, tuple) else output

    handle = blocks[-1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            out = model(ids, output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    return tuple(out.hidden_states[: len(blocks)]), kept["h"]


def fit_linear_shortcut(
    model: nn.Module,
    prompts: Iterable[Any],
    *,
    tokenizer: Any = None,
    max_seq_len: int = 128,
    skip_first: int = 0,
    prepend_bos: bool = True,
    progress: bool = True,
) -> list[AffineLeastSquares]:
    """Accumulate, for every lens layer ``i``, the least squares of ``h_L − h_i`` on ``h_i``.

    Args:
        model: A Hugging Face causal LM.
        prompts: Strings (with ``tokenizer``) or token-id sequences; one model call each.
        tokenizer: For string prompts.
        max_seq_len: Tokens kept per prompt.
        skip_first: Leading positions left out of the fit (e.g. ``1`` for the BOS sink).
        prepend_bos: Put the tokenizer's BOS first on string prompts.
        progress: Show a tqdm progress bar.

    Returns:
        One accumulator per layer ``0 .. L-1``; ``solve()`` them (or call
        :meth:`LinearShortcutLens.fit`, which does).
    """
    from tqdm.auto import tqdm

    from ..architectures import resolve_architecture
    from .jacobian_fit import tokenize_prompts

    blocks = resolve_architecture(model).layers
    device = next(model.parameters()).device
    sums: list[AffineLeastSquares] = []
    for ids in tqdm(list(prompts), disable=not progress, desc="shortcut"):
        (seq,) = tokenize_prompts([ids], tokenizer, max_seq_len, prepend_bos)
        if len(seq) <= skip_first:
            continue
        hidden, final = _last_block_output(model, blocks, torch.tensor([seq], device=device))
        target = final[0, skip_first:]
        if not sums:
            sums = [AffineLeastSquares(target.shape[-1], target.shape[-1]) for _ in hidden]
        for acc, h in zip(sums, hidden):
            acc.update(h[0, skip_first:], target - h[0, skip_first:])
    if not sums:
        raise InvalidInputError("no prompt has more than skip_first tokens", option="prompts")
    return sums


class LinearShortcutLens(Lens):
    """``lens(h, i) = unembed(h + A_i h + b_i)``: the least-squares shortcut to the last layer.

    Args:
        unembed: The model's unembedding.
        weight: ``(L, d, d)`` the maps ``A_i``.
        bias: ``(L, d)`` the offsets ``b_i``.
        n_tokens: Tokens the fit used.
        ridge: The ridge it used.
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(
        self,
        unembed: Unembed,
        weight: torch.Tensor,
        bias: torch.Tensor,
        *,
        n_tokens: int = 0,
        ridge: float = 0.0,
    ):
        super().__init__(unembed)
        d = unembed.d_model
        if weight.dim() != 3 or weight.shape[1:] != (d, d) or bias.shape != weight.shape[:2]:
            raise InvalidInputError(
                f"weight must be (L, {d}, {d}) and bias (L, {d}), got {tuple(weight.shape)} "
                f"and {tuple(bias.shape)}",
                option="weight",
            )
        device = unembed.unembedding.weight.device
        self.register_buffer("weight", weight.detach().to(device, torch.float32))
        self.register_buffer("bias", bias.detach().to(device, torch.float32))
        self.n_tokens, self.ridge = int(n_tokens), float(ridge)

    @property
    def num_layers(self) -> int:
        return int(self.weight.shape[0])

    def __len__(self) -> int:
        return self.num_layers

    def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """``h + A_idx h + b_idx`` for ``(..., d)`` states, computed in float32."""
        i = self._normalise_layer(idx)
        x = h.to(device=self.weight.device, dtype=torch.float32)
        out = x + x @ self.weight[i].T + self.bias[i]
        unembed_dtype = self.unembed.unembedding.weight.dtype
        return out.to(unembed_dtype if unembed_dtype.is_floating_point else h.dtype)

    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        """Logits ``(..., vocab)`` for layer-``idx`` states ``(..., d)``."""
        return self.unembed(self.transform_hidden(h, idx))

    def translator_state(self) -> dict[str, torch.Tensor]:
        """``{"{i}.weight": A_i, "{i}.bias": b_i}``: a tuned lens's translator state dict."""
        state = {}
        for i in range(self.num_layers):
            state[f"{i}.weight"], state[f"{i}.bias"] = self.weight[i], self.bias[i]
        return state

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        prompts: Iterable[Any],
        *,
        ridge: float = 1e-6,
        **kwargs: Any,
    ) -> LinearShortcutLens:
        """Fit the shortcut of every layer; ``kwargs`` go to :func:`fit_linear_shortcut`."""
        sums = fit_linear_shortcut(model, prompts, **kwargs)
        solved = [acc.solve(ridge) for acc in sums]
        weight = torch.stack([a for a, _ in solved])
        bias = torch.stack([b for _, b in solved])
        return cls(Unembed(model), weight, bias, n_tokens=sums[0].n, ridge=ridge)

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` and ``params.safetensors`` (float32) into folder ``path``."""
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.translator_state().items()}
        with atomic_path(folder / PARAMS_FILE) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "tuned-lens-rs"})
        config = {
            "lens_type": LENS_TYPE,
            "base_model_name_or_path": self.unembed.model_name_or_path,
            "d_model": self.unembed.d_model,
            "num_hidden_layers": self.num_layers,
            "n_tokens": self.n_tokens,
            "ridge": self.ridge,
        }
        write_json_atomically(folder / CONFIG_FILE, config)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], *, model: nn.Module
    ) -> LinearShortcutLens:
        """Load a folder written by :meth:`save`, checked against ``model``.

        Raises:
            LensFileError: Unreadable, not a shortcut lens, or not fitting the model.
        """
        from ..architectures import resolve_architecture

        folder = Path(path)
        config, tensors = _read_folder(folder)
        unembed = Unembed(model)
        n_layers = len(resolve_architecture(model).layers)
        if (config.get("d_model"), config.get("num_hidden_layers")) != (unembed.d_model, n_layers):
            raise LensFileError(
                f"{folder}: a shortcut lens for d_model={config.get('d_model')} and "
                f"{config.get('num_hidden_layers')} layers; the model has {unembed.d_model} and "
                f"{n_layers}"
            )
        expected = {f"{i}.{k}" for i in range(n_layers) for k in ("weight", "bias")}
        if set(tensors) != expected:
            raise LensFileError(
                f"{folder}: tensors {sorted(tensors)[:6]} are not {n_layers} layers"
            )
        weight = torch.stack([tensors[f"{i}.weight"] for i in range(n_layers)])
        bias = torch.stack([tensors[f"{i}.bias"] for i in range(n_layers)])
        d = unembed.d_model
        if weight.shape != (n_layers, d, d) or bias.shape != (n_layers, d):
            raise LensFileError(f"{folder}: tensor shapes do not match d_model={d}")
        if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise LensFileError(f"{folder}: parameters contain NaN or infinite values")
        return cls(
            unembed,
            weight.float(),
            bias.float(),
            n_tokens=int(config.get("n_tokens", 0)),
            ridge=float(config.get("ridge", 0.0)),
        )


def _read_folder(folder: Path) -> tuple[Mapping[str, Any], dict[str, torch.Tensor]]:
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / PARAMS_FILE), device="cpu")
    except (OSError, ValueError, SafetensorError) as err:
        raise LensFileError(f"cannot read the shortcut lens in {folder}: {err}") from err
    if not isinstance(config, dict) or config.get("lens_type") != LENS_TYPE:
        raise LensFileError(f"{folder / CONFIG_FILE} is not a linear-shortcut lens config")
    return config, tensors
