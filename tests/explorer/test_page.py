"""The page without a browser: self-contained, safe to embed, written atomically, in notebooks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _explorer_helpers import compact_from_full, random_log_probs
from tuned_lens.errors import MissingDependencyError
from tuned_lens.explorer import ExplorerPage, explore, explorer_widget, render_html
from tuned_lens.explorer.page import static_text
from tuned_lens.plotting import PredictionTrajectory


class HostileTokenizer:
    """Token strings that would break out of a ``<script>`` or an attribute if not escaped."""

    def convert_ids_to_tokens(self, ids):
        names = {0: "</script><script>window.pwned=1</script>", 1: '"><img src=x>', 2: "\u2028"}
        return [names.get(int(i), f"t{i}") for i in ids]


def test_the_page_is_self_contained(pair):
    page = explore(pair[0], title="self-contained")
    assert isinstance(page, ExplorerPage) and page.path is None
    html = page.html
    assert "<script src" not in html and "<link" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "default-src 'none'" in html  # the browser itself refuses any request
    assert static_text("explorer.js") in html and static_text("explorer.css") in html
    data = re.search(r'<script type="application/json" id="tl-data">(.*?)</script>', html, re.S)
    assert json.loads(data.group(1))["format"] == "tuned-lens-explorer"


def test_token_strings_cannot_escape_the_page():
    rng = np.random.default_rng(0)
    traj = PredictionTrajectory(
        log_probs=random_log_probs(rng, (3, 4, 5)),
        input_ids=np.array([0, 1, 2, 3]),
        tokenizer=HostileTokenizer(),
    )
    html = explore(traj).html
    assert html.count("</script>") == 2  # the data block's and the program's, nothing else
    assert "window.pwned" in html  # the text is there, escaped as \u003c/script>
    data = re.search(r'id="tl-data">(.*?)</script>', html, re.S).group(1)
    assert "</script><script>window.pwned=1</script>" in json.loads(data)["tokens"]["text"]
    assert "\u2028" not in data


def test_traj_explore_writes_the_page_atomically(pair, tmp_path):
    path = tmp_path / "page.html"
    page = pair[0].explore(path, title="from the method")
    assert page.path == path and path.read_text(encoding="utf-8") == page.html
    assert "from the method" in page.html
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"]
    compact = compact_from_full(pair[0], k=3, track=[1])
    assert compact.explore().data["views"][0]["k"] == 3


def test_notebooks_get_an_isolated_iframe(pair):
    html = pair[0]._repr_html_()
    assert html.startswith("<iframe") and 'sandbox="allow-scripts' in html
    assert "srcdoc=" in html and "<script>" not in html  # escaped inside the attribute
    compact = compact_from_full(pair[0], k=3, track=[1])
    assert compact._repr_html_().startswith("<iframe")


def test_render_html_validates_the_document(pair):
    data = pair[0].explore().data
    with pytest.raises(ValueError, match="version"):
        render_html({**data, "version": 99})


def test_the_widget_needs_anywidget(pair):
    try:
        import anywidget  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="anywidget"):
            explorer_widget(pair[0])
    else:  # pragma: no cover - only where anywidget is installed
        assert "tl-data" in explorer_widget(pair[0]).html


def test_a_screenshot_of_a_view(pair, tmp_path):
    from _explorer_helpers import BROWSER

    if BROWSER is None:
        pytest.skip("no Chrome/Chromium installed")
    png = pair[0].explore().screenshot(tmp_path / "view.png", state="stat=forward_kl&cell=2.3")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
