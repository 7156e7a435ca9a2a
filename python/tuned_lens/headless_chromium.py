"""The headless Chrome/Chromium of the library: finding it, screenshots of pages, rendered DOMs.

This module is the one owner of two jobs:

* :func:`find_browser` — the one browser discovery, used by the demo, by
  :mod:`tuned_lens.plotting.export` (which hands the path to kaleido through kaleido's own
  options) and by the tests. Search order: ``$BROWSER_PATH`` when it names an executable file
  or a program on the ``PATH``; otherwise the first of ``chromium``, ``chromium-browser``,
  ``google-chrome``, ``google-chrome-stable`` on the ``PATH``. The process environment is
  never changed.
* :func:`screenshot` — "page → PNG". Every PNG the library makes (the demo's pictures,
  :func:`tuned_lens.plotting.export.write_png`, the evaluator's per-layer plot) goes through it.

Plotly's own image export needs ``kaleido``; nothing here does, only a browser executable.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tuned_lens._atomic import write_bytes_atomically
from tuned_lens.errors import BrowserError, BrowserNotFoundError, InvalidInputError

__all__ = [
    "BROWSER_NAMES",
    "BrowserError",
    "BrowserNotFoundError",
    "ChromiumError",
    "RenderedPage",
    "find_browser",
    "find_chromium",
    "require_browser",
    "screenshot",
    "render_dom",
]

logger = logging.getLogger(__name__)

#: Programs looked for on the ``PATH``, in this order, when ``$BROWSER_PATH`` gives none.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Chromium prints a page's console messages as `...:INFO:CONSOLE:12] "text", source: ...`.
_CONSOLE_LINE = re.compile(r":CONSOLE[:(]")

#: Earlier name of :class:`~tuned_lens.errors.BrowserError` (Chromium failed or timed out);
#: "no Chromium at all" is its subclass :class:`~tuned_lens.errors.BrowserNotFoundError`.
ChromiumError = BrowserError


@dataclass(frozen=True)
class RenderedPage:
    """What a page looked like after its scripts ran.

    Attributes:
        dom: the serialised DOM (``--dump-dom``), i.e. after JavaScript changed it.
        console: the page's console messages (errors, warnings and logs), one per entry.
    """

    dom: str
    console: list[str]


def find_browser() -> str | None:
    """Path of the Chrome/Chromium executable to use, or ``None`` when there is none.

    ``$BROWSER_PATH`` wins when it names an existing file or a program on the ``PATH``; when it
    names neither, the search falls back to :data:`BROWSER_NAMES` on the ``PATH``.
    """
    configured = os.environ.get("BROWSER_PATH")
    if configured:
        if Path(configured).is_file():
            return configured
        found = shutil.which(configured)
        if found:
            return found
        logger.debug("BROWSER_PATH=%r is not an executable; searching the PATH", configured)
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


#: Earlier name of :func:`find_browser`, kept for callers of this module.
find_chromium = find_browser


def require_browser(purpose: str = "rendering pages") -> str:
    """:func:`find_browser`, or an error that says how to install one.

    Args:
        purpose: What the browser is needed for, for the message.

    Raises:
        BrowserNotFoundError: No Chrome/Chromium was found.
    """
    exe = find_browser()
    if exe is None:
        raise BrowserNotFoundError(
            f"{purpose} needs Chrome or Chromium: install one (Debian: `apt-get install "
            "chromium`) or set $BROWSER_PATH to its executable; looked for "
            + ", ".join(BROWSER_NAMES)
        )
    return exe


def _run(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    exe = require_browser()
    # A private profile per call: concurrent runs would otherwise fight over the profile lock.
    with tempfile.TemporaryDirectory(prefix="tuned-lens-chromium-") as profile:
        command = [
            exe,
            "--headless=new",
            "--no-sandbox",  # root in containers cannot use the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--mute-audio",
            f"--user-data-dir={profile}",
            *args,
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise BrowserError(f"Chromium did not finish within {timeout:.0f} s") from err
    if done.returncode != 0:
        raise BrowserError(
            f"Chromium exited with status {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done


def _existing_page(html_path: str | os.PathLike[str]) -> Path:
    html = Path(html_path).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"no HTML file at {html}")
    return html


def screenshot(
    html_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    scale: float = 1.0,
    budget_ms: int = 10_000,
    timeout: float = 120.0,
) -> Path:
    """Render a local HTML file and save a PNG of its ``width`` × ``height`` viewport.

    The PNG is written atomically: a reader sees the previous file or the complete new one.

    Args:
        html_path: the page (scripts inline or next to it; nothing is fetched).
        png_path: where the PNG goes (its folder is created).
        width: viewport width in CSS pixels.
        height: viewport height in CSS pixels.
        scale: device pixels per CSS pixel: the PNG is ``width * scale`` pixels wide.
        budget_ms: virtual time the page gets to run its scripts before the shot.
        timeout: wall-clock limit for Chromium.

    Returns:
        ``png_path``, resolved.

    Raises:
        InvalidInputError: a size or scale that is not positive.
        FileNotFoundError: no page at ``html_path``.
        BrowserNotFoundError: no Chrome/Chromium.
        BrowserError: Chromium failed, timed out, or wrote nothing.
    """
    if width < 1 or height < 1:
        raise InvalidInputError(f"width and height must be positive, got {width} x {height}")
    if not scale > 0:
        raise InvalidInputError(f"scale must be positive, got {scale}", option="scale")
    html = _existing_page(html_path)
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tuned-lens-shot-") as tmp:
        shot = Path(tmp) / "shot.png"
        _run(
            [
                f"--window-size={width},{height}",
                f"--force-device-scale-factor={scale:g}",
                f"--virtual-time-budget={budget_ms}",
                f"--screenshot={shot}",
                html.as_uri(),
            ],
            timeout=timeout,
        )
        if not shot.is_file() or shot.stat().st_size == 0:
            raise BrowserError(f"Chromium wrote no screenshot to {png}")
        write_bytes_atomically(png, shot.read_bytes())
    return png


def render_dom(
    html_path: str | os.PathLike[str], *, budget_ms: int = 10_000, timeout: float = 120.0
) -> RenderedPage:
    """Load a local HTML file, let its scripts run, and return the DOM plus console output.

    Raises:
        FileNotFoundError: no page at ``html_path``.
        BrowserNotFoundError: no Chrome/Chromium.
        BrowserError: Chromium failed or timed out.
    """
    html = _existing_page(html_path)
    done = _run(
        [
            "--enable-logging=stderr",
            "--v=0",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            html.as_uri(),
        ],
        timeout=timeout,
    )
    console = [line for line in done.stderr.splitlines() if _CONSOLE_LINE.search(line)]
    return RenderedPage(dom=done.stdout, console=console)
