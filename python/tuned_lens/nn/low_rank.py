"""Low-rank translators of a tuned lens: ``h ↦ U Vᵀ h + b`` with ``U, V`` of shape ``(d, r)``.

A :class:`~tuned_lens.nn.TunedLens` whose config has ``rank = r`` uses one
:class:`LowRankTranslator` per layer instead of a full ``(d, d)`` ``nn.Linear``; the lens then
maps ``h`` to ``h + U Vᵀ h + b``. Initialisation: ``U = 0`` (a fresh lens is the logit lens)
and ``V`` random, so the first gradient step moves ``U`` (``∂L/∂U = g (Vᵀh)ᵀ ≠ 0``) and from
the second step on ``V`` moves too. With both factors zero, as a published fork does, both
gradients are zero forever.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LowRankTranslator"]


class LowRankTranslator(nn.Module):
    """``h ↦ (h V) Uᵀ + b``: a rank-``r`` map of ``(..., d)`` states to ``(..., d)``.

    Its state dict has keys ``"u"`` ``(d, r)``, ``"v"`` ``(d, r)`` and, with a bias,
    ``"bias"`` ``(d,)``.

    Args:
        d_model: Width ``d`` of the residual stream.
        rank: The rank ``r`` (``1 <= r <= d``).
        bias: Whether the translator has a bias (initialised to zero).
        dtype: Dtype of the parameters.
        device: Device of the parameters.
        seed: Seed of ``V``'s initialisation (normal, standard deviation ``1/sqrt(d)``), so two
            fresh lenses are identical.
    """

    def __init__(
        self,
        d_model: int,
        rank: int,
        *,
        bias: bool = True,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        v = torch.randn(d_model, rank, generator=generator, dtype=torch.float32) / d_model**0.5
        self.u = nn.Parameter(torch.zeros(d_model, rank, dtype=dtype, device=device))
        self.v = nn.Parameter(v.to(dtype=dtype, device=device))
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.zeros(d_model, dtype=dtype, device=device)
            )
        else:
            self.register_parameter("bias", None)

    @property
    def rank(self) -> int:
        """``r``."""
        return int(self.u.shape[1])

    def matrix(self) -> torch.Tensor:
        """The ``(d, d)`` matrix ``U Vᵀ`` this translator applies (without the bias)."""
        return self.u @ self.v.T

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(h V) Uᵀ + b`` for ``h`` of shape ``(..., d)``; never forms the ``(d, d)`` matrix."""
        out = (h @ self.v) @ self.u.T
        return out if self.bias is None else out + self.bias
