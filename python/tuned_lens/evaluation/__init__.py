"""Comparing lenses of any kind on the same tokens: ``tuned_lens.evaluate`` and ``--lens``.

* :mod:`tuned_lens.evaluation.compare`: :func:`evaluate` runs the model once per batch through
  :class:`tuned_lens.decoding.LayerDecoder`, decodes every layer with every lens and gathers the
  per-token statistics of :mod:`tuned_lens.lens_stats` per document, then bootstraps them.
* :mod:`tuned_lens.evaluation.lens_specs`: ``logit``, ``tuned:PATH``, ``jacobian:PATH``,
  ``shortcut:PATH`` → lenses.
* :mod:`tuned_lens.evaluation.report`: the Markdown / JSON table and the comparison figure.
* :mod:`tuned_lens.evaluation.command`: ``tuned-lens eval --lens …``.
"""

from __future__ import annotations

from tuned_lens.evaluation.compare import METRICS, ComparisonResult, evaluate

__all__ = ["METRICS", "ComparisonResult", "evaluate"]
