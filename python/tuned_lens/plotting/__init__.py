"""Prediction trajectories and their heat maps.

* :class:`PredictionTrajectory`: the full ``(*B, L+1, T, V)`` log-probabilities of a lens on
  some sequences, with statistic methods (entropy, cross entropy, rank, KL, …).
* :class:`CompactTrajectory`: the same statistics over many prompts, built layer by layer
  without ever holding the vocabulary axis of more than a few hundred positions.
* :class:`TrajectoryStatistic`, :class:`TrajectoryLabels`: a (layer × position) quantity and
  its cell labels, rendered with Plotly.
* :class:`TokenFormatter`: how tokens are shown.
* :func:`write_html`, :func:`write_png`, :func:`write_image`: saving figures (PNG through a
  headless Chromium, other formats through kaleido).
"""

from ..errors import MissingTargetsError, TrajectoryShapeError
from .compact_trajectory import CompactTrajectory, PairwiseCells
from .export import ExportDependencyError, write_html, write_image, write_png
from .prediction_trajectory import PredictionTrajectory, ResidualComponent
from .token_formatter import TokenFormatter
from .trajectory_plotting import (
    TrajectoryLabels,
    TrajectoryStatistic,
    trunc_string_left,
)

__all__ = [
    "CompactTrajectory",
    "ExportDependencyError",
    "MissingTargetsError",
    "PairwiseCells",
    "PredictionTrajectory",
    "ResidualComponent",
    "TokenFormatter",
    "TrajectoryLabels",
    "TrajectoryShapeError",
    "TrajectoryStatistic",
    "trunc_string_left",
    "write_html",
    "write_image",
    "write_png",
]
