"""The tuned lens and the logit lens for transformers, with a Rust statistics core.

Heavy submodules (torch, transformers, plotly) are imported lazily, so that
``import tuned_lens`` and the array statistics in :mod:`tuned_lens.lens_stats` stay cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "Lens",
    "LogitLens",
    "TunedLens",
    "TunedLensConfig",
    "Unembed",
    "InversionOutput",
    "PredictionTrajectory",
    "TrajectoryStatistic",
    "CompactTrajectory",
    "load_lens_artifacts",
    "available_lens_artifacts",
    "evaluate",
    "__version__",
]

_LAZY = {
    "Lens": "tuned_lens.nn.lenses",
    "LogitLens": "tuned_lens.nn.lenses",
    "TunedLens": "tuned_lens.nn.lenses",
    "TunedLensConfig": "tuned_lens.lens_io",
    "Unembed": "tuned_lens.nn.unembed",
    "InversionOutput": "tuned_lens.nn.unembed",
    "PredictionTrajectory": "tuned_lens.plotting",
    "TrajectoryStatistic": "tuned_lens.plotting",
    "CompactTrajectory": "tuned_lens.plotting",
    "load_lens_artifacts": "tuned_lens.load_artifacts",
    "available_lens_artifacts": "tuned_lens.load_artifacts",
    "evaluate": "tuned_lens.evaluation.compare",
}

if TYPE_CHECKING:  # pragma: no cover
    from .evaluation.compare import evaluate
    from .lens_io import TunedLensConfig
    from .load_artifacts import available_lens_artifacts, load_lens_artifacts
    from .nn.lenses import Lens, LogitLens, TunedLens
    from .nn.unembed import InversionOutput, Unembed
    from .plotting import CompactTrajectory, PredictionTrajectory, TrajectoryStatistic


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("tuned-lens-rs")
        except PackageNotFoundError:  # running from a source tree
            return "0.0.0+local"
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tuned_lens' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
