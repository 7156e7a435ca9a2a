"""Derangements and subspace ablation of batches of vectors."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = ["derange", "remove_subspace", "sample_derangement", "subspace_projector_basis"]

AblationMode = Literal["zero", "mean", "resample"]
_MODES = ("zero", "mean", "resample")


def sample_derangement(
    n: int,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> Tensor:
    """A uniformly random permutation of ``range(n)`` with no fixed point.

    Rejection sampling: about 1/e of all permutations are derangements, so on average e ≈ 2.7
    draws are needed.

    Args:
        n: length, at least 2 (no derangement of fewer elements exists).
        device: where the result lives.
        generator: random source; the draws happen on the generator's device.

    Returns:
        (n,) int64 permutation ``perm`` with ``perm[i] != i`` for every i.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 2:
        raise ValueError(f"a derangement needs n >= 2 elements, got n={n}")
    draw_device = generator.device if generator is not None else torch.device(device)
    identity = torch.arange(n, device=draw_device)
    while True:
        perm = torch.randperm(n, generator=generator, device=draw_device)
        if not bool((perm == identity).any()):
            return perm.to(device)


def derange(batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Shuffle ``batch`` along its first axis so that no row stays in place.

    Args:
        batch: (N, ...) with N ≥ 2.
        generator: random source.

    Returns:
        (N, ...) a copy of ``batch`` with rows permuted by a derangement.
    """
    if batch.ndim == 0:
        raise ValueError("batch must have at least one axis to derange")
    perm = sample_derangement(batch.shape[0], device=batch.device, generator=generator)
    return batch[perm]


def subspace_projector_basis(A: Tensor, *, orthonormal: bool = False) -> Tensor:
    """An orthonormal basis Q (d, r) of col(A), so that Q Qᵀ is the projector onto it.

    With ``orthonormal=True`` the columns of ``A`` are trusted to be orthonormal and returned
    as they are. Otherwise the left singular vectors with non-negligible singular values are
    used, which equals A (AᵀA)⁻¹ Aᵀ for full-rank A and stays correct for rank-deficient A.
    """
    if A.ndim != 2:
        raise ValueError(f"A must be a (d, k) matrix, got shape {tuple(A.shape)}")
    if orthonormal:
        return A
    left, singular, _ = torch.linalg.svd(A, full_matrices=False)
    if singular.numel() == 0:
        return left
    cutoff = singular.max() * max(A.shape) * torch.finfo(singular.dtype).eps
    return left[:, singular > cutoff]


def _as_matrix(A: Tensor) -> Tensor:
    """``A`` as a (d, k) matrix: a single (d,) vector is the span of one direction."""
    if A.ndim == 1:
        return A[:, None]
    if A.ndim != 2:
        raise ValueError(f"A must be a (d,) vector or a (d, k) matrix, got shape {tuple(A.shape)}")
    return A


def _subspace_coordinates(rows: Tensor, A: Tensor, orthonormal: bool) -> tuple[Tensor, Tensor]:
    """``(coords, B)`` with ``P rows = coords @ Bᵀ`` for the projector P onto col(A).

    Orthonormal columns: ``coords = rows A``, ``B = A``. Otherwise the normal equations
    ``(AᵀA) c = Aᵀ u`` are solved by a Cholesky factorisation of the (k, k) Gram matrix (the
    original's ``A (AᵀA)⁻¹ Aᵀ`` without forming a (d, d) projector); a rank-deficient A, where
    the factorisation fails, falls back to an SVD basis of col(A).
    """
    if orthonormal:
        return rows @ A, A
    gram = A.T @ A
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) == 0:
        coords = torch.cholesky_solve((rows @ A).T, factor).T
        if bool(torch.isfinite(coords).all()):
            return coords, A
    basis = subspace_projector_basis(A)
    return rows @ basis, basis


def remove_subspace(
    u: Tensor,
    A: Tensor,
    mode: AblationMode = "zero",
    orthonormal: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Ablate the components of the rows of ``u`` that lie in the column space of ``A``.

    Every axis of ``u`` but the last is a sample axis (they are flattened into N rows).
    With P the orthogonal projector onto col(A):

    * ``"zero"``: u − P u (the components are removed);
    * ``"mean"``: u + P(ū − u) (the components are replaced by their mean over the N rows);
    * ``"resample"``: u + P(u_π − u) for a random derangement π of the rows (the components
      are taken from another sample).

    Args:
        u: (..., d) vectors.
        A: (d, k) matrix whose columns span the subspace, or one (d,) direction.
        mode: ``"zero"``, ``"mean"`` or ``"resample"``.
        orthonormal: the columns of ``A`` are already orthonormal (``P = A Aᵀ``).
        generator: random source for ``"resample"``.

    Returns:
        (..., d) ablated copy of ``u`` in the promoted dtype of ``u`` and ``A``.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    matrix = _as_matrix(A)
    if u.ndim == 0 or matrix.shape[0] != u.shape[-1]:
        raise ValueError(
            f"u must be (..., d) and A (d, k) or (d,) with the same d, got u {tuple(u.shape)} "
            f"and A {tuple(A.shape)}"
        )
    dtype = torch.promote_types(u.dtype, matrix.dtype)
    rows = u.reshape(-1, u.shape[-1]).to(dtype)
    coords, basis = _subspace_coordinates(
        rows, matrix.to(device=u.device, dtype=dtype), orthonormal
    )
    if mode == "zero":
        target = torch.zeros_like(coords)
    elif mode == "mean":
        target = coords.mean(dim=0, keepdim=True).expand_as(coords)
    else:
        target = derange(coords, generator=generator)
    ablated = rows + (target - coords) @ basis.T
    return ablated.reshape(u.shape)
