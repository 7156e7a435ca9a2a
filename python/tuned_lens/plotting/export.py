"""Saving figures: standalone HTML always; PNG with a local Chrome/Chromium; SVG/PDF/… with kaleido.

* :func:`write_html` — a page with plotly.js inside, so it opens offline.
* :func:`write_png` — the one "figure → PNG" of the library (the demo, the evaluator's
  per-layer plot and :func:`write_image` for ``.png`` all come here): the figure is drawn on a
  temporary static page and screenshotted by :func:`tuned_lens.headless_chromium.screenshot`.
  It needs a Chrome/Chromium, not kaleido.
* :func:`write_image` — any static format. PNG goes through :func:`write_png`; the other
  formats need the optional ``export`` extra (``pip install 'tuned-lens-rs[export]'``, i.e.
  kaleido ≥ 1), which is given the browser found by
  :func:`tuned_lens.headless_chromium.find_browser` through its own options.

The browser is found as :func:`~tuned_lens.headless_chromium.find_browser` says:
``$BROWSER_PATH`` if it names one, else ``chromium``, ``chromium-browser``, ``google-chrome`` or
``google-chrome-stable`` on ``PATH``. Every file is written atomically.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens._atomic import write_bytes_atomically, write_text_atomically
from tuned_lens.errors import BrowserNotFoundError, InvalidInputError
from tuned_lens.headless_chromium import find_browser, require_browser, screenshot

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go

__all__ = [
    "ExportDependencyError",
    "find_browser",
    "write_html",
    "write_image",
    "write_png",
]

_IMAGE_FORMATS = ("png", "svg", "pdf", "jpeg", "jpg", "webp")
# Plotly's own fallbacks for a figure without a size (plotly.io defaults).
_DEFAULT_WIDTH = 700
_DEFAULT_HEIGHT = 500

#: Earlier name of :class:`~tuned_lens.errors.BrowserNotFoundError` (no kaleido or no browser).
ExportDependencyError = BrowserNotFoundError


def write_html(fig: go.Figure, path: str | os.PathLike[str], *, auto_open: bool = False) -> Path:
    """Write a figure as a standalone HTML file that works offline.

    Args:
        fig: A Plotly figure (e.g. ``statistic.figure()``).
        path: Destination file (its folder is created).
        auto_open: Open it in a browser afterwards.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, fig.to_html(include_plotlyjs=True, full_html=True))
    if auto_open:
        webbrowser.open(path.resolve().as_uri())
    return path


def _figure_size(fig: go.Figure, width: int | None, height: int | None) -> tuple[int, int]:
    """The size a figure is drawn at: the arguments, else its layout, else its template's."""
    template = fig.layout.template.layout if fig.layout.template else None
    w = width or fig.layout.width or (template.width if template else None) or _DEFAULT_WIDTH
    h = height or fig.layout.height or (template.height if template else None) or _DEFAULT_HEIGHT
    return int(w), int(h)


def _static_page(fig: go.Figure, width: int, height: int) -> str:
    """A page holding only the figure at ``width`` × ``height``, at its top-left corner."""
    import plotly.graph_objects as go

    sized = go.Figure(fig)
    sized.update_layout(width=width, height=height)
    body = sized.to_html(full_html=False, include_plotlyjs=True, config={"staticPlot": True})
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n'
        "<style>html,body{margin:0;padding:0;overflow:hidden;background:white}</style>\n"
        f"</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_png(
    fig: go.Figure,
    path: str | os.PathLike[str],
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
) -> Path:
    """Write a figure as a PNG, drawn by plotly.js in a headless Chrome/Chromium.

    Args:
        fig: A Plotly figure.
        path: Destination file (its folder is created; written atomically).
        width: Image width in CSS pixels (default: the figure's, else 700).
        height: Image height in CSS pixels (default: the figure's, else 500).
        scale: Resolution multiplier (default 1): the PNG is ``width * scale`` pixels wide.

    Returns:
        The path written.

    Raises:
        BrowserNotFoundError: No Chrome/Chromium is found.
        BrowserError: The browser failed or timed out.
    """
    require_browser("PNG export")
    w, h = _figure_size(fig, width, height)
    with tempfile.TemporaryDirectory(prefix="tuned-lens-png-") as tmp:
        page = Path(tmp) / "figure.html"
        page.write_text(_static_page(fig, w, h), encoding="utf-8")
        screenshot(page, path, width=w, height=h, scale=1.0 if scale is None else scale)
    return Path(path)


def write_image(
    fig: go.Figure,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,  # noqa: A002
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
) -> Path:
    """Write a figure as a static image (PNG, SVG, PDF, …).

    PNG goes through :func:`write_png` (a Chrome/Chromium is enough); the other formats are
    rendered by kaleido, driving the browser :func:`find_browser` found.

    Args:
        fig: A Plotly figure.
        path: Destination file; its suffix gives the format unless ``format`` is set.
        format: One of png, svg, pdf, jpeg, jpg, webp.
        width: Image width in pixels (default: the figure's).
        height: Image height in pixels (default: the figure's).
        scale: Resolution multiplier.

    Returns:
        The path written.

    Raises:
        ExportDependencyError: kaleido (for formats other than PNG) or a Chrome/Chromium is
            missing (a :class:`~tuned_lens.errors.BrowserNotFoundError`).
        InvalidInputError: The format is not supported (a ``ValueError``).
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".") or "png").lower()
    if fmt not in _IMAGE_FORMATS:
        raise InvalidInputError(f"format must be one of {_IMAGE_FORMATS}, got {fmt!r}")
    if fmt == "png":
        return write_png(fig, path, width=width, height=height, scale=scale)
    if importlib.util.find_spec("kaleido") is None:
        raise BrowserNotFoundError(
            f"{fmt.upper()} export needs kaleido >= 1.0: pip install 'tuned-lens-rs[export]' "
            "(or pip install 'kaleido>=1'); write_html() and write_png() need nothing extra"
        )
    browser = require_browser("static image export")
    import kaleido

    opts = {"format": fmt, "width": width, "height": height, "scale": scale}
    data = kaleido.calc_fig_sync(
        fig.to_dict(),
        opts={key: value for key, value in opts.items() if value is not None},
        kopts={"path": browser},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, data)
    return path
