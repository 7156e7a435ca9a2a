"""The demo's pages render in a real headless Chromium: plotly.js runs and draws heat maps.

A string match on the HTML would pass even if the page were broken; here the DOM is read back
after the page's scripts ran (plotly's SVG and heat-map image exist only then), the console is
checked for errors, and a screenshot is checked for actual pixels.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tuned_lens.headless_chromium import find_chromium, render_dom, screenshot

sys.path.insert(0, str(Path(__file__).parent))
from demo_png_pixels import colour_summary  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None, reason="no chromium/chrome installed"),
]
pytest.importorskip("glassllm")


@pytest.fixture
def demo_output(quick_demo_output):
    return quick_demo_output


def test_trajectory_page_renders_heatmaps_without_errors(demo_output):
    page = demo_output / "trajectories" / "sentence_1.html"
    rendered = render_dom(page)
    dom = rendered.dom
    # plotly.js builds one <svg class="main-svg"> pair per figure, and for a heat map a
    # "heatmaplayer" group holding an <image class="hm">; none of this is in the HTML file.
    assert 'class="main-svg"' not in page.read_text(encoding="utf-8")
    assert dom.count('class="main-svg"') >= 4 * 2
    assert dom.count("heatmaplayer") >= 4
    assert dom.count('class="hm"') >= 4
    assert 'class="colorbar"' in dom or "colorbar" in dom
    assert rendered.console == [], rendered.console


def test_kl_page_renders_both_curves(demo_output):
    rendered = render_dom(demo_output / "kl_per_layer.html")
    assert rendered.dom.count('class="main-svg"') >= 2
    assert rendered.dom.count('class="scatterlayer') >= 1
    assert "tuned lens" in rendered.dom and "logit lens" in rendered.dom
    assert rendered.console == [], rendered.console


def test_screenshot_of_a_trajectory_is_not_blank(demo_output, tmp_path):
    png = screenshot(
        demo_output / "trajectories" / "sentence_1.html",
        tmp_path / "shot.png",
        width=1400,
        height=900,
    )
    colours, non_white = colour_summary(png)
    assert colours > 50  # a heat map's colour scale, text, axes
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
