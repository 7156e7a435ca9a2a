"""A headless Chromium, used to turn HTML figures into PNG screenshots and to check they render.

Plotly's own PNG export needs ``kaleido``; this module only needs a Chromium (or Chrome)
executable, which is what ``kaleido`` drives anyway. Found in this order: ``$BROWSER_PATH``,
then ``chromium``, ``chromium-browser``, ``google-chrome``, ``google-chrome-stable`` on the PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChromiumError", "RenderedPage", "find_chromium", "screenshot", "render_dom"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Chromium prints a page's console messages as `...:INFO:CONSOLE:12] "text", source: ...`.
_CONSOLE_LINE = re.compile(r":CONSOLE[:(]")


class ChromiumError(RuntimeError):
    """Chromium is missing, failed, or timed out."""


@dataclass(frozen=True)
class RenderedPage:
    """What a page looked like after its scripts ran.

    Attributes:
        dom: the serialised DOM (``--dump-dom``), i.e. after JavaScript changed it.
        console: the page's console messages (errors, warnings and logs), one per entry.
    """

    dom: str
    console: list[str]


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or ``None`` when there is none."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        return explicit if Path(explicit).is_file() else shutil.which(explicit)
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    exe = find_chromium()
    if exe is None:
        raise ChromiumError(
            "no Chromium found: install one (Debian: `apt-get install chromium`) "
            "or point $BROWSER_PATH at a Chrome/Chromium executable"
        )
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
            raise ChromiumError(f"Chromium did not finish within {timeout:.0f} s") from err
    if done.returncode != 0:
        raise ChromiumError(
            f"Chromium exited with status {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done


def screenshot(
    html_path: str | os.PathLike[str],
    png_path: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    budget_ms: int = 10_000,
    timeout: float = 120.0,
) -> Path:
    """Render a local HTML file and save a ``width`` × ``height`` PNG of the viewport.

    Args:
        html_path: the page (scripts inline or next to it; nothing is fetched).
        png_path: where the PNG goes.
        width: viewport width in CSS pixels.
        height: viewport height in CSS pixels.
        budget_ms: virtual time the page gets to run its scripts before the shot.
        timeout: wall-clock limit for Chromium.
    """
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    html = Path(html_path).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"no HTML file at {html}")
    png = Path(png_path).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(
        [
            f"--window-size={width},{height}",
            "--force-device-scale-factor=1",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={png}",
            html.as_uri(),
        ],
        timeout=timeout,
    )
    if not png.is_file() or png.stat().st_size == 0:
        raise ChromiumError(f"Chromium wrote no screenshot to {png}")
    return png


def render_dom(
    html_path: str | os.PathLike[str], *, budget_ms: int = 10_000, timeout: float = 120.0
) -> RenderedPage:
    """Load a local HTML file, let its scripts run, and return the DOM plus console output."""
    html = Path(html_path).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"no HTML file at {html}")
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
