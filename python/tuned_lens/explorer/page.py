"""The explorer page: one self-contained HTML file (inline CSS, JS and data; no request leaves it).

:func:`render_html` puts a document (:mod:`.schema`) into the page; :func:`explore` builds the
document from trajectories and returns an :class:`ExplorerPage`, written to a file when a path
is given and shown inline by notebooks (``_repr_html_``).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .._atomic import write_text_atomically
from ._build import Trajectories, build_data
from .schema import validate

__all__ = ["ExplorerPage", "explore", "render_html", "static_text"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; \
script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; connect-src 'none'">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1 id="title">{title}</h1>
<div class="controls">
<label>lens <select id="lens"></select></label>
<label>prompt <select id="prompt"></select></label>
<label>compare with <select id="cmp"></select></label>
<label>statistic <select id="stat"></select></label>
<label>colours <select id="scale"></select></label>
<label>layer stride <input id="stride" type="number" min="1" max="64" value="1"></label>
<label>column width <input id="width" type="range" min="8" max="80" value="44"></label>
<button id="dark" type="button" title="dark mode (d)">dark / light</button>
<button id="export" type="button">export JSON</button>
<label>import JSON <input id="import" type="file" accept=".json,application/json"></label>
</div>
</header>
<div id="status" role="status"></div>
<main>
<section>
<div id="gridarea"><canvas id="rowlabels"></canvas>
<div id="scroller"><canvas id="grid" tabindex="0" aria-label="layer by position grid"></canvas>\
</div></div>
<div id="legend"><span id="statname"></span><span id="lo"></span>\
<canvas id="colorbar" width="160" height="12"></canvas><span id="hi"></span></div>
<p class="hint">Click a cell, then: arrows move · t pins its top token · p pins its position ·
s next statistic · l next lens · d dark mode · Esc clears. Shift-click a token to add it to the
last pinned group; type <code>a + b</code> to pin a group.</p>
</section>
<aside>
<h2>Cell</h2><div id="cellinfo"></div><div id="topk"></div>
<h2>Pinned tokens</h2>
<div><input id="pininput" placeholder="token, or a + b" size="18">
<button id="pinbtn" type="button">pin</button></div>
<div id="pins" class="chips"></div>
<h2>Pinned positions</h2>
<button id="pinpos" type="button">pin the selected position</button>
<div id="ppos" class="chips"></div>
</aside>
</main>
<section id="charts"><svg id="probchart"></svg><svg id="rankchart"></svg></section>
<script type="application/json" id="tl-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def static_text(name: str) -> str:
    """The text of a file of the package's ``static`` folder (``explorer.js``, …)."""
    return (resources.files("tuned_lens.explorer") / "static" / name).read_text(encoding="utf-8")


def _script_json(data: dict[str, Any]) -> str:
    """JSON safe inside ``<script>``: every ``<`` escaped, so no ``</script>`` can occur."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_html(data: dict[str, Any], *, title: str | None = None) -> str:
    """The page for a document.

    Args:
        data: A version-1 explorer document (validated here).
        title: The page title (default: the document's ``meta.title``, or "tuned-lens explorer").

    Returns:
        The HTML text.
    """
    validate(data)
    title = title or data["meta"].get("title") or "tuned-lens explorer"
    return _TEMPLATE.format(
        title=html.escape(title),
        css=static_text("explorer.css"),
        js=static_text("explorer.js"),
        data=_script_json(data),
    )


@dataclass
class ExplorerPage:
    """An explorer page: its document, its HTML and where it was written.

    Attributes:
        data: The document.
        html: The page.
        path: The file written, or None.
    """

    data: dict[str, Any]
    html: str
    path: Path | None = None

    def save(self, path: str | Path) -> Path:
        """Write the page (atomically); returns the path."""
        self.path = Path(path)
        write_text_atomically(self.path, self.html)
        return self.path

    def screenshot(
        self, png_path: str | Path, *, state: str = "", width: int = 1400, height: int = 900
    ) -> Path:
        """A PNG of the page in a headless Chromium (:func:`tuned_lens.headless_chromium.screenshot`).

        Args:
            png_path: Where the PNG goes (written atomically).
            state: The view to show, in the URL-hash form (``"stat=forward_kl&pins=12&cell=3.4"``).
            width: Viewport width in CSS pixels.
            height: Viewport height in CSS pixels.

        Returns:
            The PNG's path.

        Raises:
            BrowserNotFoundError: No Chrome/Chromium is installed.
        """
        import tempfile

        from ..headless_chromium import screenshot

        data = {**self.data, "state": state} if state else self.data
        with tempfile.TemporaryDirectory() as folder:
            page = Path(folder) / "page.html"
            write_text_atomically(page, render_html(data))
            return screenshot(page, png_path, width=width, height=height, budget_ms=2_000)

    def _repr_html_(self) -> str:
        """The page in an isolated ``<iframe srcdoc>`` (Jupyter, VS Code, Colab)."""
        return (
            '<iframe style="width:100%;height:760px;border:0" sandbox="allow-scripts '
            f'allow-downloads" srcdoc="{html.escape(self.html, quote=True)}"></iframe>'
        )


def explore(
    trajectories: Trajectories,
    path: str | Path | None = None,
    *,
    title: str = "",
    **options: Any,
) -> ExplorerPage:
    """Build the interactive explorer for one or more trajectories.

    Args:
        trajectories: A :class:`~tuned_lens.plotting.PredictionTrajectory` or
            :class:`~tuned_lens.plotting.CompactTrajectory`, a list of them, or
            ``{lens name: trajectory}`` (several lenses over the same prompts).
        path: Write the page there (atomically); None keeps it in memory.
        title: The page's title.
        **options: For :func:`tuned_lens.explorer.build_data`: ``lens_names``,
            ``prompt_names``, ``track``, ``topk``, ``formatter``, ``model``.

    Returns:
        The page; in a notebook it shows itself.
    """
    data = build_data(trajectories, title=title, **options)
    page = ExplorerPage(data=data, html=render_html(data))
    if path is not None:
        page.save(path)
    return page
