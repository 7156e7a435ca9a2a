"""The demo's pages in a real headless Chromium.

A sentence's page is the trajectory explorer: opened from disk (Selenium driving Debian's
chromium-driver, with the explorer tests' helpers), it must make no request beyond itself, log
no console message, become interactive, show for a clicked cell the top-k that Python computes
with the demo's own lens, and switch between the tuned and the logit lens. The index page shows
the first explorer in a frame. The KL page is plotly: its SVG exists only once plotly.js ran.
Screenshots and the demo's PNG previews are checked for actual pixels.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tuned_lens.headless_chromium import find_chromium, render_dom, screenshot

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "explorer"))
from _explorer_helpers import DRIVER  # noqa: E402
from demo_png_pixels import colour_summary  # noqa: E402
from test_browser import js, open_page, point_at, shown_topk  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="no chromium/chrome installed"),
]
pytest.importorskip("glassllm")
needs_driver = pytest.mark.skipif(
    DRIVER is None, reason="no chromedriver (Debian: apt-get install chromium-driver)"
)


def _explorer_conftest():
    """tests/explorer/conftest.py, whose session-wide ``driver`` fixture these tests reuse."""
    path = Path(__file__).parents[1] / "explorer" / "conftest.py"
    spec = importlib.util.spec_from_file_location("explorer_conftest_for_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = _explorer_conftest().driver


@pytest.fixture
def demo_output(quick_demo_output):
    return quick_demo_output


def page_data(page: Path) -> dict:
    """The explorer document embedded in a page."""
    text = page.read_text(encoding="utf-8")
    match = re.search(r'<script type="application/json" id="tl-data">(.*?)</script>', text, re.S)
    assert match, "no explorer data in the page"
    return json.loads(match.group(1))


def requests_since_cleared(driver) -> list[str]:
    return [
        json.loads(entry["message"])["message"]["params"]["request"]["url"]
        for entry in driver.get_log("performance")
        if "Network.requestWillBeSent" in entry["message"]
    ]


def console_problems(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


@needs_driver
def test_sentence_explorer_is_interactive_offline_and_quiet(driver, demo_output):
    from selenium.webdriver.support.select import Select
    from tuned_lens.assets import load_glassllm
    from tuned_lens.demo.figures import sentence_trajectories
    from tuned_lens.nn import TunedLens

    page = demo_output / "trajectories" / "sentence_1.html"
    driver.get_log("performance")
    driver.get_log("browser")
    started = time.perf_counter()
    open_page(driver, page)
    print(
        f"\ndemo page {page.stat().st_size / 1e3:.0f} kB: interactive in "
        f"{(time.perf_counter() - started) * 1000:.0f} ms from navigation"
    )
    assert requests_since_cleared(driver) == [page.as_uri()]
    assert js(driver, "performance.getEntriesByType('resource').length") == 0
    lenses = [o.text for o in Select(driver.find_element("id", "lens")).options]
    assert lenses == ["tuned lens", "logit lens"]
    # It opens on the forward KL with the logit lens compared, as the demo asked.
    assert js(driver, "window.tlExplorer.state.stat") == "forward_kl"
    assert js(driver, "window.tlExplorer.state.cmp") == 1

    # The top-k of a clicked cell is what Python computes with the demo's own lens.
    model, tokenizer = load_glassllm()
    lens = TunedLens.from_model_and_pretrained(model, str(demo_output / "lens"))
    tuned, _ = sentence_trajectories(model, tokenizer, lens, "Alice looked at the Queen.")
    ids, probs = tuned._cell_top_k(10)
    data = page_data(page)
    table = {int(i): n for i, n in zip(_decode(data["tokens"]["ids"]), data["tokens"]["text"])}
    for row, position in ((0, 0), (tuned.num_layers, 2)):
        point_at(driver, row, position, click=True)
        shown = shown_topk(driver)
        assert [name for name, _ in shown] == [table[int(i)] for i in ids[row, position]]
        np.testing.assert_allclose([p for _, p in shown], probs[row, position], atol=6e-4)

    # Switching the lens changes the grid (the logit lens's KL is not the tuned lens's).
    tuned_grid = js(driver, "window.tlExplorer.gridValues()")
    Select(driver.find_element("id", "lens")).select_by_index(1)
    time.sleep(0.1)
    assert js(driver, "window.tlExplorer.gridInfo().view") == 1
    assert js(driver, "window.tlExplorer.gridValues()") != tuned_grid
    assert console_problems(driver) == []
    assert js(driver, "document.getElementById('status').textContent") == ""


def _decode(encoded: dict) -> np.ndarray:
    from tuned_lens.explorer._codec import decode_array

    return decode_array(encoded)


@needs_driver
def test_index_page_shows_the_first_explorer_in_a_frame(driver, demo_output):
    index = demo_output / "index.html"
    driver.get_log("performance")
    driver.get_log("browser")
    driver.get("about:blank")
    driver.get(index.as_uri())
    frame = driver.find_element("tag name", "iframe")
    driver.switch_to.frame(frame)
    try:
        for _ in range(200):
            if js(driver, "!!(window.tlExplorer && window.tlExplorer.ready)"):
                break
            time.sleep(0.02)
        assert js(driver, "window.tlExplorer.ready")
    finally:
        driver.switch_to.default_content()
    urls = requests_since_cleared(driver)
    assert urls and all(url.startswith("file://") for url in urls), urls
    assert (demo_output / "trajectories" / "sentence_1.html").as_uri() in urls
    assert console_problems(driver) == []


def test_kl_page_renders_both_curves(demo_output):
    rendered = render_dom(demo_output / "kl_per_layer.html")
    assert rendered.dom.count('class="main-svg"') >= 2
    assert rendered.dom.count('class="scatterlayer') >= 1
    assert "tuned lens" in rendered.dom and "logit lens" in rendered.dom
    assert rendered.console == [], rendered.console


def test_screenshot_of_an_explorer_page_is_not_blank(demo_output, tmp_path):
    png = screenshot(
        demo_output / "trajectories" / "sentence_1.html",
        tmp_path / "shot.png",
        width=1400,
        height=900,
    )
    colours, non_white = colour_summary(png)
    assert colours > 50  # the grid's colour scale, text, the charts
    assert non_white > 0.05


def test_demo_wrote_non_blank_pngs(demo_output):
    pngs = [
        demo_output / "kl_per_layer.png",
        demo_output / "trajectories" / "sentence_1_entropy.png",
    ]
    for png in pngs:
        assert png.is_file(), png
        colours, non_white = colour_summary(png)
        assert colours > 20 and non_white > 0.02, (png, colours, non_white)


def test_a_broken_page_is_caught(tmp_path):
    # The console check is real: a page with a script error reports it.
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefinedAnywhere();</script></body></html>")
    rendered = render_dom(page, budget_ms=1000)
    assert any("notDefinedAnywhere" in line for line in rendered.console)
