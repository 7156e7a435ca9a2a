"""Estimating the Jacobian lens: ``J_i = E[∂h_final / ∂hidden_states[i]]``.

The estimator of the reference (``jlens``) and TransformerLens, in this project's index
convention (``hidden_states[i]``: ``0`` the embedding output, ``i`` the output of block ``i-1``).
For one prompt of ``T`` tokens let ``V = {skip_first, …, T-2}`` (the first positions are
attention sinks, the last has no next-token target); then::

    J_i^(prompt)[a, b] = 1/|V| · Σ_{t ∈ V} Σ_{t' ∈ V} ∂h_final[t', a] / ∂h_i[t, b]

where ``h_final`` is the output of the last block *before* the final norm. Target positions
are summed (causality zeroes ``t' < t``), source positions averaged, prompts averaged with
equal weight; prompts with an empty ``V`` are skipped. Per prompt: one forward pass on the
prompt replicated ``dim_batch`` times, then ``ceil(d / dim_batch)`` backward passes, pass ``k``
seeding output dimension ``k·dim_batch + b`` in batch row ``b`` at every ``t' ∈ V``. It is
exact reverse-mode differentiation, without sampling, so the result is deterministic.

Running sums are kept in float64 on the CPU. A checkpoint (``checkpoint=``) holds the sums,
the number of prompts used and the index of the next prompt, written atomically (and durably)
every ``checkpoint_every`` prompts; a fit restarted with the same arguments resumes from it and
gives bit-identical sums.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from ..errors import InvalidInputError, LensFileError

__all__ = ["FitResult", "fit_jacobians", "prompt_jacobians", "tokenize_prompts"]

_CHECKPOINT_FORMAT = "tuned-lens-rs/jacobian-fit-checkpoint"


@dataclass
class FitResult:
    """What :func:`fit_jacobians` returns.

    Attributes:
        jacobians: Hidden-state index -> ``(d, d)`` mean Jacobian (float64, CPU).
        n_prompts: Prompts averaged in (prompts with an empty ``V`` do not count).
        n_skipped: Prompts skipped for being too short.
        n_blocks: The model's number of blocks ``L``.
    """

    jacobians: dict[int, torch.Tensor]
    n_prompts: int
    n_skipped: int
    n_blocks: int


class _StopForward(Exception):
    """Raised by the target hook: nothing after the last block (norm, head) is needed."""


def tokenize_prompts(
    prompts: Sequence[Any], tokenizer: Any, max_seq_len: int, prepend_bos: bool
) -> list[list[int]]:
    """Token ids of every prompt, each cut to ``max_seq_len``.

    Strings go through ``tokenizer``; when ``prepend_bos`` and the tokenizer has a BOS id that
    it did not add itself, BOS is put first (as the reference and TransformerLens do; BOS
    counts toward ``max_seq_len``). Token-id sequences (lists, 1-D tensors or arrays) are used
    as given.
    """
    out = []
    bos = getattr(tokenizer, "bos_token_id", None) if prepend_bos else None
    for k, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if tokenizer is None:
                raise InvalidInputError("string prompts need a tokenizer=", option="tokenizer")
            ids = [int(i) for i in tokenizer(prompt)["input_ids"]]
            if bos is not None and (not ids or ids[0] != bos):
                ids = [int(bos), *ids]
        else:
            flat = torch.as_tensor(prompt)
            if flat.dim() != 1 or flat.dtype.is_floating_point:
                raise InvalidInputError(
                    f"prompt {k} must be a string or a 1-D sequence of token ids, got shape "
                    f"{tuple(flat.shape)} ({flat.dtype})",
                    option="prompts",
                )
            ids = [int(i) for i in flat.tolist()]
        out.append(ids[:max_seq_len])
    return out


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters do not require grad inside the block (restored afterwards)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for param, _ in flags:
            param.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


class _Capture:
    """Forward hooks that keep the source states and the last block's output.

    The earliest source is replaced by a detached copy that requires grad, so the graph starts
    there (only later blocks are recorded); later sources are the very tensors the model passes
    on, so gradients with respect to them are exact.
    """

    def __init__(self, blocks: nn.ModuleList, layers: Sequence[int]):
        self.blocks, self.layers = blocks, list(layers)
        self.sources: dict[int, torch.Tensor] = {}
        self.target: torch.Tensor | None = None

    def _keep(self, idx: int, h: torch.Tensor) -> torch.Tensor | None:
        if idx == self.layers[0]:
            h = h.detach().requires_grad_(True)
            self.sources[idx] = h
            return h
        self.sources[idx] = h
        return None

    def _embedding_hook(self, _m: nn.Module, args: tuple, kwargs: dict) -> Any:
        if args:
            new = self._keep(0, args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = self._keep(0, kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    def _block_hook(self, idx: int) -> Any:
        def hook(_m: nn.Module, _args: tuple, output: Any) -> Any:
            h = output[0] if isinstance(output, tuple) else output
            new = self._keep(idx, h)
            if new is None:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    def _target_hook(self, _m: nn.Module, _args: tuple, output: Any) -> None:
        self.target = output[0] if isinstance(output, tuple) else output
        raise _StopForward

    @contextmanager
    def installed(self) -> Iterator[_Capture]:
        handles = []
        for idx in self.layers:
            if idx == 0:
                handles.append(
                    self.blocks[0].register_forward_pre_hook(self._embedding_hook, with_kwargs=True)
                )
            else:
                handles.append(self.blocks[idx - 1].register_forward_hook(self._block_hook(idx)))
        handles.append(self.blocks[-1].register_forward_hook(self._target_hook))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


def prompt_jacobians(
    model: nn.Module,
    blocks: nn.ModuleList,
    ids: Sequence[int],
    layers: Sequence[int],
    *,
    skip_first: int,
    dim_batch: int,
) -> dict[int, torch.Tensor] | None:
    """One prompt's ``J_i^(prompt)`` for every ``i`` in ``layers`` (``(d, d)`` float64, CPU).

    Returns ``None`` when the prompt has no valid position (``T <= skip_first + 1``).
    Parameters must already be frozen (see :func:`fit_jacobians`).
    """
    positions = list(range(skip_first, len(ids) - 1))
    if not positions:
        return None
    device = next(model.parameters()).device
    batch = torch.as_tensor([list(ids)] * dim_batch, dtype=torch.long, device=device)
    capture = _Capture(blocks, layers)
    with torch.enable_grad(), capture.installed():
        try:
            model(batch, use_cache=False)
        except _StopForward:
            pass
    target = capture.target
    if target is None or len(capture.sources) != len(layers):
        raise InvalidInputError("the model's blocks did not run as expected", option="model")
    sources = [capture.sources[i] for i in layers]
    d = target.shape[-1]
    pos = torch.as_tensor(positions, device=device)
    rows = torch.arange(dim_batch, device=device)
    out = {i: torch.zeros(d, d, dtype=torch.float64) for i in layers}
    for start in range(0, d, dim_batch):
        n = min(dim_batch, d - start)
        cotangent = torch.zeros_like(target)
        cotangent[rows[:n, None], pos[None, :], (start + rows[:n])[:, None]] = 1.0
        grads = torch.autograd.grad(
            target, sources, grad_outputs=cotangent, retain_graph=start + dim_batch < d
        )
        for i, grad in zip(layers, grads):
            out[i][start : start + n] = grad[:n, pos].to("cpu", torch.float64).mean(dim=1)
    return out


def _normalise_layers(layers: Sequence[int] | None, n_blocks: int) -> list[int]:
    if layers is None:
        return list(range(n_blocks))
    out = set()
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise InvalidInputError(f"layers must be ints, got {layer!r}", option="layers")
        if not -n_blocks <= layer < n_blocks:
            raise InvalidInputError(
                f"layer {layer} is out of range: a model with {n_blocks} blocks has lens layers "
                f"0..{n_blocks - 1} (hidden_states[i]; 0 = embeddings)",
                option="layers",
            )
        out.add(layer % n_blocks)
    if not out:
        raise InvalidInputError("layers is empty", option="layers")
    return sorted(out)


def _check_settings(skip_first: int, max_seq_len: int, dim_batch: int, shard: Any) -> None:
    for name, value, low in (
        ("skip_first", skip_first, 0),
        ("max_seq_len", max_seq_len, 2),
        ("dim_batch", dim_batch, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInputError(f"{name} must be an int >= {low}, got {value!r}", option=name)
    rank, world = shard
    if not (isinstance(rank, int) and isinstance(world, int) and 0 <= rank < world):
        raise InvalidInputError(
            f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}", option="shard"
        )


def _hidden_size(model: nn.Module) -> int:
    """The residual width (the text config's ``hidden_size``, else the head's input width)."""
    from ..architectures import resolve_architecture

    config: Any = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "hidden_size", None)
    if isinstance(size, int):
        return size
    return int(resolve_architecture(model).unembedding.in_features)


def _digest(prompts: list[list[int]]) -> str:
    sha = hashlib.sha256()
    for ids in prompts:
        sha.update(len(ids).to_bytes(4, "little"))
        sha.update(torch.as_tensor(ids, dtype=torch.int64).numpy().tobytes())
    return sha.hexdigest()


class _Checkpoint:
    """The resumable state of one fit: sums, prompts used, next prompt (within the shard)."""

    def __init__(self, path: Path | None, settings: dict[str, Any], layers: list[int], d: int):
        self.path, self.settings = path, settings
        self.sums = {i: torch.zeros(d, d, dtype=torch.float64) for i in layers}
        self.n_prompts = self.n_skipped = self.next_index = 0
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        from .jacobian_io import read_plain_torch_file

        state = read_plain_torch_file(path)
        if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
            raise LensFileError(f"{path} is not a Jacobian-lens fitting checkpoint")
        if state.get("settings") != self.settings:
            raise LensFileError(
                f"checkpoint {path} belongs to a different fit: it was written with "
                f"{state.get('settings')!r:.300}, this fit has {self.settings!r:.300}"
            )
        sums = state["sums"]
        if sorted(sums) != sorted(self.sums) or any(
            sums[i].shape != self.sums[i].shape for i in self.sums
        ):
            raise LensFileError(f"checkpoint {path}: its sums do not match the fit's layers")
        self.sums = {i: sums[i].to(torch.float64) for i in self.sums}
        self.n_prompts, self.n_skipped = int(state["n_prompts"]), int(state["n_skipped"])
        self.next_index = int(state["next_index"])

    def save(self) -> None:
        if self.path is None:
            return
        state = {
            "format": _CHECKPOINT_FORMAT,
            "settings": self.settings,
            "sums": self.sums,
            "n_prompts": self.n_prompts,
            "n_skipped": self.n_skipped,
            "next_index": self.next_index,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path, durable=True) as tmp:
            torch.save(state, tmp)


def fit_jacobians(
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
) -> FitResult:
    """Fit ``J_i`` for each hidden-state index in ``layers`` (see the module docstring).

    Args:
        model: A Hugging Face causal LM in eval mode.
        prompts: Strings (with ``tokenizer``) or token-id sequences.
        tokenizer: Turns string prompts into ids.
        skip_first: Leading positions excluded as sources and targets.
        max_seq_len: Tokens kept per prompt (BOS included).
        dim_batch: Output dimensions per backward pass (memory, not result).
        layers: Hidden-state indices to fit (negative count from ``L``); default ``0..L-1``.
        checkpoint: File to checkpoint to and resume from.
        checkpoint_every: Prompts between checkpoints (one is also written at the end).
        progress: Show a tqdm progress bar.
        shard: ``(rank, world)``: use prompts ``k`` with ``k % world == rank``.
        prepend_bos: Put the tokenizer's BOS first on string prompts.

    Raises:
        InvalidInputError: Bad settings, a model in training mode, or no usable prompt.
        LensFileError: A checkpoint that belongs to a different fit.
    """
    from tqdm.auto import tqdm

    from ..architectures import resolve_architecture

    _check_settings(skip_first, max_seq_len, dim_batch, shard)
    if any(m.training for m in model.modules()):
        raise InvalidInputError("call model.eval() first (dropout must be off)", option="model")
    blocks = resolve_architecture(model).layers
    n_blocks, fit_layers = len(blocks), _normalise_layers(layers, len(blocks))
    ids = tokenize_prompts(prompts, tokenizer, max_seq_len, prepend_bos)
    mine = list(range(shard[0], len(ids), shard[1]))
    settings = {
        "layers": fit_layers,
        "skip_first": skip_first,
        "max_seq_len": max_seq_len,
        "shard": list(shard),
        "prompts_sha256": _digest(ids),
    }
    d_model = _hidden_size(model)
    path = None if checkpoint is None else Path(checkpoint)
    state = _Checkpoint(path, settings, fit_layers, d_model)
    bar = tqdm(total=len(mine), initial=state.next_index, disable=not progress, desc="J-lens")
    with _frozen_parameters(model), bar:
        while state.next_index < len(mine):
            prompt = ids[mine[state.next_index]]
            found = prompt_jacobians(
                model, blocks, prompt, fit_layers, skip_first=skip_first, dim_batch=dim_batch
            )
            if found is None:
                state.n_skipped += 1
            else:
                for i, jac in found.items():
                    state.sums[i] += jac
                state.n_prompts += 1
            state.next_index += 1
            bar.update(1)
            if state.next_index % max(checkpoint_every, 1) == 0:
                state.save()
    state.save()
    return _finish(state, n_blocks, skip_first)


def _finish(state: _Checkpoint, n_blocks: int, skip_first: int) -> FitResult:
    if state.n_prompts == 0:
        raise InvalidInputError(
            f"no prompt has more than skip_first + 1 = {skip_first + 1} tokens; nothing to fit",
            option="prompts",
        )
    if state.n_skipped:
        warnings.warn(
            f"{state.n_skipped} prompts had at most skip_first + 1 = {skip_first + 1} tokens and "
            "were skipped",
            UserWarning,
            stacklevel=3,
        )
    jacobians = {i: s / state.n_prompts for i, s in state.sums.items()}
    return FitResult(jacobians, state.n_prompts, state.n_skipped, n_blocks)
