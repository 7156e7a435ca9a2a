"""Causal tools: layer and subspace ablation, derangements, and causal bases of a lens."""

from tuned_lens.causal.ablation import ablate_layer, ablate_subspace
from tuned_lens.causal.causal_basis import CausalBasis, extract_causal_bases
from tuned_lens.causal.subspaces import derange, remove_subspace, sample_derangement

__all__ = [
    "CausalBasis",
    "ablate_layer",
    "ablate_subspace",
    "derange",
    "extract_causal_bases",
    "remove_subspace",
    "sample_derangement",
]
