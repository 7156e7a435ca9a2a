"""An anywidget widget showing the explorer (optional: only where ``anywidget`` is installed).

The widget renders the same page as :func:`tuned_lens.explorer.explore`, inside an isolated
iframe, so notebooks that support anywidget (Jupyter, VS Code, Colab) show the same explorer
with the same data.
"""

from __future__ import annotations

from typing import Any

from ..errors import MissingDependencyError

__all__ = ["explorer_widget"]

_ESM = """
function render({ model, el }) {
  const frame = document.createElement("iframe");
  frame.style.width = "100%";
  frame.style.height = "760px";
  frame.style.border = "0";
  frame.setAttribute("sandbox", "allow-scripts allow-downloads");
  const show = () => { frame.srcdoc = model.get("html"); };
  model.on("change:html", show);
  show();
  el.appendChild(frame);
}
export default { render };
"""


def explorer_widget(trajectories: Any, **options: Any) -> Any:
    """An ``anywidget.AnyWidget`` showing the explorer of ``trajectories``.

    Args:
        trajectories: As for :func:`tuned_lens.explorer.explore`.
        **options: As for :func:`tuned_lens.explorer.explore`.

    Returns:
        The widget (its ``html`` trait holds the page).

    Raises:
        MissingDependencyError: ``anywidget`` is not installed (``pip install anywidget``).
    """
    try:
        import anywidget
        import traitlets
    except ImportError:
        raise MissingDependencyError(
            "the explorer widget needs anywidget: `pip install anywidget` (or use "
            "tuned_lens.explorer.explore(...), which needs nothing)"
        ) from None
    from .page import explore

    page = explore(trajectories, **options)

    class ExplorerWidget(anywidget.AnyWidget):
        _esm = _ESM
        html = traitlets.Unicode("").tag(sync=True)

    return ExplorerWidget(html=page.html)
