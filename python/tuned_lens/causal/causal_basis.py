"""Causal bases: residual-stream directions whose ablation most changes a lens' prediction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from tuned_lens.causal.subspaces import AblationMode, sample_derangement

if TYPE_CHECKING:
    from tuned_lens.nn.lenses import Lens

__all__ = ["CausalBasis", "extract_causal_bases"]

_MODES = ("zero", "mean", "resample")


class CausalBasis(NamedTuple):
    """An ordered orthonormal basis of causally important directions of one layer.

    Attributes:
        energies: (k,) the expected prediction change caused by ablating each direction alone
            (nats), non-increasing.
        vectors: (d, k) orthonormal columns, in the order of ``energies``.
    """

    energies: Tensor
    vectors: Tensor


def extract_causal_bases(
    lens: Lens,
    hiddens: Sequence[Tensor],
    k: int,
    *,
    labels: Tensor | None = None,
    max_iter: int = 100,
    mode: AblationMode = "mean",
) -> Iterator[CausalBasis]:
    """Find, layer by layer, the k residual directions the lens' prediction depends on most.

    For layer ℓ with hidden states h (rows of ``hiddens[ℓ]``, the states the lens' translator ℓ
    reads), directions are found greedily: the j-th is the unit vector v, orthogonal to the
    j − 1 found before, that maximises the energy

        E_h[ KL( lens(h, ℓ) ‖ lens(h_v, ℓ) ) ]      (or, with ``labels``, the mean increase of the
                                                     cross-entropy against the labels),

    where h_v is h with its component along v ablated by ``mode`` (``"zero"``: removed,
    ``"mean"``: set to its mean over the rows, ``"resample"``: taken from another row through a
    derangement drawn once per layer, so the objective is deterministic). Each v lives in the
    residual space of layer ℓ, so the lens' translator (if any) acts on the ablated hidden state:
    this works for the tuned lens as well as the logit lens.

    The search runs L-BFGS with a strong-Wolfe line search over an unconstrained w, with
    v = normalise(w minus its projection on the earlier directions), stopping after ``max_iter``
    iterations (at most ``max_iter`` objective evaluations) or when the loss changes by less than
    1e-4 relative to the first energy. It starts from the most output-sensitive direction not yet
    covered: the top right singular vectors of the lens' linearised readout
    W_U · diag(norm weight) · A_ℓ, where A_ℓ is the linear part of ``transform_hidden`` at layer
    ℓ (identity for the logit lens).

    Under ``torch.distributed`` the loss, the gradient and the mean used by ``"mean"`` are
    averaged across ranks, so every rank finds the same basis.

    Args:
        lens: a ``Lens`` (``lens(h, idx)`` → logits, ``lens.transform_hidden(h, idx)``,
            ``lens.unembed`` with ``unembedding`` and ``final_norm``).
        hiddens: one (..., d) tensor per lens layer, ``hiddens[ℓ]`` = ``hidden_states[ℓ]``.
        k: number of directions per layer (1 ≤ k ≤ d).
        labels: optional (...) int64 token ids matching the leading shape of each hidden tensor.
        max_iter: L-BFGS iterations per direction.
        mode: ablation of the direction, ``"mean"``, ``"zero"`` or ``"resample"``.

    Yields:
        One :class:`CausalBasis` per layer, in layer order: energies (k,) sorted non-increasing
        (float32) and vectors (d, k) float32 orthonormal columns.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if len(hiddens) == 0:
        raise ValueError("hiddens must hold at least one layer's hidden states")

    readout = _readout_gram(lens)
    for layer, hidden in enumerate(hiddens):
        yield _layer_basis(lens, layer, hidden, k, labels, max_iter, mode, readout)


# ---------------------------------------------------------------------------- one layer


def _layer_basis(
    lens: Lens,
    layer: int,
    hidden: Tensor,
    k: int,
    labels: Tensor | None,
    max_iter: int,
    mode: str,
    readout: Tensor,
) -> CausalBasis:
    device, lens_dtype = _lens_device_dtype(lens)
    d = hidden.shape[-1]
    if not 1 <= k <= d:
        raise ValueError(f"k must be in [1, d={d}], got {k}")
    if readout.shape != (d, d):
        raise ValueError(
            f"hiddens[{layer}] has width {d}, but the lens' unembedding reads {readout.shape[0]}"
        )
    rows = hidden.detach().reshape(-1, d).to(device=device, dtype=torch.float32)
    if rows.shape[0] < 2 and mode != "zero":
        raise ValueError(
            f"{mode} ablation needs at least 2 rows, hiddens[{layer}] has {rows.shape[0]}"
        )
    flat_labels = _flat_labels(labels, hidden, device)

    with torch.no_grad():
        base_log_probs = _log_probs(lens, rows, layer, lens_dtype)
        base_ce = (
            None
            if flat_labels is None
            else -base_log_probs.gather(-1, flat_labels[:, None]).squeeze(-1).mean()
        )

    mean_row = _all_reduce_mean(rows.mean(dim=0))
    donor = rows[sample_derangement(rows.shape[0], device=device)] if mode == "resample" else None

    def energy(direction: Tensor) -> Tensor:
        coords = rows @ direction  # (N,)
        if mode == "zero":
            target = torch.zeros_like(coords)
        elif mode == "mean":
            target = (mean_row @ direction).expand_as(coords)
        else:
            assert donor is not None  # mode == "resample"
            target = donor @ direction
        ablated = rows + (target - coords)[:, None] * direction[None, :]
        log_probs = _log_probs(lens, ablated, layer, lens_dtype)
        if flat_labels is None:
            # KL(base ‖ ablated), rows where base gives zero mass contribute 0.
            p = base_log_probs.exp()
            return (p * (base_log_probs - log_probs)).sum(-1).mean()
        ce = -log_probs.gather(-1, flat_labels[:, None]).squeeze(-1).mean()
        assert base_ce is not None  # computed whenever there are labels
        return ce - base_ce

    starts = _initial_directions(lens, layer, readout, d, device)
    found: list[Tensor] = []
    energies: list[float] = []
    for _ in range(k):
        basis = torch.stack(found, dim=1) if found else rows.new_zeros(d, 0)
        start = _first_uncovered(starts, basis)
        direction, value = _maximise_direction(energy, start, basis, max_iter)
        found.append(direction)
        energies.append(value)

    vectors = _orthonormalise(torch.stack(found, dim=1))
    energy_tensor = torch.tensor(energies, dtype=torch.float32, device=device)
    order = torch.argsort(energy_tensor, descending=True, stable=True)
    return CausalBasis(energy_tensor[order], vectors[:, order])


def _maximise_direction(
    energy, start: Tensor, basis: Tensor, max_iter: int
) -> tuple[Tensor, float]:
    """L-BFGS over w, v = normalise((I − BBᵀ) w); returns (v, energy(v))."""

    def direction_of(w: Tensor) -> Tensor:
        if basis.shape[1]:
            w = w - basis @ (basis.T @ w)
        return w / w.norm().clamp_min(1e-12)

    w = start.clone().requires_grad_(True)
    with torch.no_grad():
        first = float(_all_reduce_mean(energy(direction_of(w))).item())
    optimiser = torch.optim.LBFGS(
        [w],
        lr=1.0,
        max_iter=max_iter,
        max_eval=max_iter,
        tolerance_change=1e-4 * max(abs(first), 1e-8),
        tolerance_grad=1e-9,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        loss = -energy(direction_of(w))
        (grad,) = torch.autograd.grad(loss, [w])
        w.grad = _all_reduce_mean(grad)
        return _all_reduce_mean(loss.detach())

    optimiser.step(closure)
    with torch.no_grad():
        direction = direction_of(w.detach())
        value = float(_all_reduce_mean(energy(direction)).item())
    if not value >= first:  # a worse (or NaN) end point of the line search: keep the start
        with torch.no_grad():
            direction = direction_of(start)
        value = first
    return direction.detach(), value


# ---------------------------------------------------------------------------- helpers


def _lens_device_dtype(lens: Lens) -> tuple[torch.device, torch.dtype]:
    weight = lens.unembed.unembedding.weight
    return weight.device, weight.dtype


def _log_probs(lens: Lens, rows: Tensor, layer: int, dtype: torch.dtype) -> Tensor:
    logits = lens(rows.to(dtype), layer)
    return torch.log_softmax(logits.float(), dim=-1)


def _flat_labels(labels: Tensor | None, hidden: Tensor, device: torch.device) -> Tensor | None:
    if labels is None:
        return None
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"labels must have the leading shape of the hidden states {tuple(hidden.shape[:-1])}, "
            f"got {tuple(labels.shape)}"
        )
    return labels.reshape(-1).to(device=device, dtype=torch.int64)


@torch.no_grad()
def _readout_gram(lens: Lens) -> Tensor:
    """(d, d) float64 Gram matrix Mᵀ M of the linear readout M = W_U · W_pre · diag(norm weight).

    W_pre is the projection some models apply before the head (OPT-350m's ``project_out``);
    the norm's weight is used when it is a (d,) scale. Only used to pick start directions.
    """
    unembed = lens.unembed
    weight = unembed.unembedding.weight  # (V, d_unembed)
    pre = getattr(unembed, "pre_unembed", None)
    pre_weight = pre.weight.to(torch.float64) if isinstance(pre, nn.Linear) else None
    d = pre_weight.shape[1] if pre_weight is not None else weight.shape[1]
    scale = getattr(unembed.final_norm, "weight", None)
    scale = scale.to(torch.float64) if isinstance(scale, Tensor) and scale.shape == (d,) else None
    gram = torch.zeros(d, d, dtype=torch.float64, device=weight.device)
    for chunk in weight.split(8192, dim=0):  # bounds the float64 copy for large vocabularies
        block = chunk.to(torch.float64)
        if pre_weight is not None:
            block = block @ pre_weight.to(block.device)
        if scale is not None:
            block = block * scale.to(block.device)
        gram += block.T @ block
    return gram


@torch.no_grad()
def _initial_directions(
    lens: Lens, layer: int, readout: Tensor, d: int, device: torch.device
) -> Tensor:
    """(d, d) start directions, most output-sensitive first, for layer ``layer``.

    The linear part of ``transform_hidden`` at the layer is measured by pushing the identity
    and the origin through it (exact for affine translators), giving J = A_ℓᵀ. The right
    singular vectors of M A_ℓ are the eigenvectors of A_ℓᵀ (MᵀM) A_ℓ.
    """
    _, dtype = _lens_device_dtype(lens)
    eye = torch.eye(d, device=device, dtype=dtype)
    origin = torch.zeros(1, d, device=device, dtype=dtype)
    jac_t = (lens.transform_hidden(eye, layer) - lens.transform_hidden(origin, layer)).to(
        torch.float64
    )  # row j = A e_j
    sensitivity = jac_t @ readout @ jac_t.T
    sensitivity = 0.5 * (sensitivity + sensitivity.T)
    _, eigvecs = torch.linalg.eigh(sensitivity)
    return eigvecs.flip(-1).to(torch.float32)


def _first_uncovered(starts: Tensor, basis: Tensor) -> Tensor:
    """The most output-sensitive start with a sizeable part outside span(basis), projected out.

    "Sizeable" means at least half the largest remaining part among all starts, so a start
    that is nearly covered by the earlier directions is skipped.
    """
    rest = starts - basis @ (basis.T @ starts) if basis.shape[1] else starts
    norms = rest.norm(dim=0)
    index = int(torch.nonzero(norms >= 0.5 * norms.max())[0, 0])
    return rest[:, index] / norms[index]


def _orthonormalise(vectors: Tensor) -> Tensor:
    """Gram–Schmidt in float64 (the columns are already orthonormal up to rounding)."""
    wide = vectors.to(torch.float64)
    columns: list[Tensor] = []
    for column in wide.T:
        for done in columns:
            column = column - (done @ column) * done
        columns.append(column / column.norm())
    return torch.stack(columns, dim=1).to(vectors.dtype)


def _all_reduce_mean(value: Tensor) -> Tensor:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    reduced = value.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / dist.get_world_size()
