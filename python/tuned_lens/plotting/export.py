"""Saving figures: standalone HTML always, PNG/SVG/PDF through kaleido and a local Chrome.

HTML export embeds plotly.js in the file, so it opens offline. Static images need the
optional ``export`` extra (``pip install 'tuned-lens-rs[export]'``, i.e. kaleido ≥ 1) and a
Chrome or Chromium binary: ``$BROWSER_PATH`` if set, else ``chromium``, ``chromium-browser``,
``google-chrome`` or ``google-chrome-stable`` on ``PATH``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = ["ExportDependencyError", "find_browser", "write_html", "write_image"]

_BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_IMAGE_FORMATS = ("png", "svg", "pdf", "jpeg", "jpg", "webp")


class ExportDependencyError(RuntimeError):
    """Static image export lacks kaleido or a Chrome/Chromium browser."""


def write_html(fig: Any, path: str | os.PathLike[str], *, auto_open: bool = False) -> Path:
    """Write a figure as a standalone HTML file that works offline.

    Args:
        fig: A Plotly figure (e.g. ``statistic.figure()``).
        path: Destination file.
        auto_open: Open it in a browser afterwards.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True, auto_open=auto_open)
    return path


def find_browser() -> str | None:
    """The Chrome/Chromium executable kaleido will use, or None.

    ``$BROWSER_PATH`` wins when it names an existing file; otherwise the first of
    ``chromium``, ``chromium-browser``, ``google-chrome``, ``google-chrome-stable`` on PATH.
    """
    configured = os.environ.get("BROWSER_PATH")
    if configured and Path(configured).is_file():
        return configured
    for name in _BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def write_image(
    fig: Any,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,  # noqa: A002
    width: int | None = None,
    height: int | None = None,
    scale: float | None = None,
) -> Path:
    """Write a figure as a static image (PNG, SVG, PDF, …) with kaleido.

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
        ExportDependencyError: kaleido is not installed or no Chrome/Chromium is found.
        ValueError: The format is not supported.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".") or "png").lower()
    if fmt not in _IMAGE_FORMATS:
        raise ValueError(f"format must be one of {_IMAGE_FORMATS}, got {fmt!r}")
    if importlib.util.find_spec("kaleido") is None:
        raise ExportDependencyError(
            "static image export needs kaleido >= 1.0: pip install 'tuned-lens-rs[export]' "
            "(or pip install 'kaleido>=1'); write_html() needs nothing extra"
        )
    browser = find_browser()
    if browser is None:
        raise ExportDependencyError(
            "static image export needs Chrome or Chromium: install one (e.g. apt-get install "
            "chromium) or set BROWSER_PATH to its executable; looked for "
            + ", ".join(_BROWSER_NAMES)
        )
    os.environ.setdefault("BROWSER_PATH", browser)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_image(str(path), format=fmt, width=width, height=height, scale=scale)
    return path
