"""The interactive trajectory explorer: one self-contained HTML page per set of trajectories.

* :func:`explore`: trajectories -> an :class:`ExplorerPage` (written to a file when given a
  path; shown inline in notebooks). ``traj.explore(...)`` on both trajectory classes calls it.
* :func:`build_data`, :func:`load_data`, :func:`save_data`, :func:`validate`: the data file, a
  documented and versioned JSON schema (``docs/explorer.md``).
* :func:`to_logitlenskit`, :func:`from_logitlenskit`: logitlenskit's V2 layout.
* :func:`render_html`: a document -> the page.
* :func:`explorer_widget`: an anywidget widget, where ``anywidget`` is installed.
"""

from __future__ import annotations

from ._build import build_data
from .logitlenskit import from_logitlenskit, is_logitlenskit, to_logitlenskit
from .page import ExplorerPage, explore, render_html
from .reading import load_data
from .schema import FORMAT, VERSION, decode_view, save_data, validate
from .widget import explorer_widget

__all__ = [
    "FORMAT",
    "VERSION",
    "ExplorerPage",
    "build_data",
    "decode_view",
    "explore",
    "explorer_widget",
    "from_logitlenskit",
    "is_logitlenskit",
    "load_data",
    "render_html",
    "save_data",
    "to_logitlenskit",
    "validate",
]
