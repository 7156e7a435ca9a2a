"""``traj.explore()`` and the notebook view, shared by both trajectory classes.

The explorer (:mod:`tuned_lens.explorer`) reads trajectories; these two methods only forward to
it, imported on first use (the one deliberate back-edge of the import graph).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..explorer import ExplorerPage

__all__ = ["ExplorableMixin"]


class ExplorableMixin:
    """Adds :meth:`explore` and ``_repr_html_`` (Jupyter, VS Code and Colab show it inline)."""

    def explore(self, path: str | Path | None = None, **options: Any) -> ExplorerPage:
        """The interactive explorer of this trajectory: :func:`tuned_lens.explorer.explore`.

        Args:
            path: Write the self-contained HTML page there; ``None``: keep it in memory.
            **options: For :func:`tuned_lens.explorer.explore` (``title``, ``track``, ``topk``,
                ``formatter``, ``prompt_names``, ...).

        Returns:
            The :class:`tuned_lens.explorer.ExplorerPage` (notebooks show it inline).
        """
        from ..explorer import explore  # cycle-ok: forwards to the explorer

        return explore(self, path, **options)  # type: ignore[arg-type]

    def _repr_html_(self) -> str:
        """The explorer as an isolated iframe, for notebooks."""
        from ..explorer import explore  # cycle-ok: forwards to the explorer

        return explore(self)._repr_html_()  # type: ignore[arg-type]
