"""Statistics of predicted distributions: divergences from logits and streaming marginals."""

from tuned_lens.stats.distance import js_distance, js_divergence, kl_divergence, sqrtmh
from tuned_lens.stats.logit_stats import LogitStats

__all__ = ["LogitStats", "js_distance", "js_divergence", "kl_divergence", "sqrtmh"]
