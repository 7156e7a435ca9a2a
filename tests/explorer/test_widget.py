"""The anywidget widget: the same page as explore(), and its front-end module run in Chromium.

The front end is the widget's own ES module (``_esm``), loaded in a real headless Chromium and
called as anywidget calls it: ``render({model, el})`` with a model that answers ``get`` and
``on("change:html", ...)``. The explorer inside its iframe must become ready, show the grid and
follow a change of the ``html`` trait.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _explorer_helpers import BROWSER, DRIVER
from tuned_lens.explorer import explore, explorer_widget

anywidget = pytest.importorskip("anywidget", reason="the widget needs anywidget")

HOST_PAGE = """<!doctype html><html><head><meta charset="utf-8"></head><body>
<div id="host"></div>
<script type="module">
const listeners = {};
const state = {html: %s};
const model = {
  get: (name) => state[name],
  on: (event, callback) => { (listeners[event] = listeners[event] || []).push(callback); },
  set: (name, value) => { state[name] = value;
    for (const cb of listeners["change:" + name] || []) cb(); },
};
window.tlModel = model;
const source = new Blob([%s], {type: "text/javascript"});
const module = await import(URL.createObjectURL(source));
module.default.render({model, el: document.getElementById("host")});
window.tlRendered = true;
</script></body></html>"""


def _js_string(text: str) -> str:
    """A JavaScript string literal that cannot close the host page's <script> element."""
    return json.dumps(text).replace("</", "<\\/")


def test_the_widget_shows_the_same_page_as_explore(pair) -> None:
    widget = explorer_widget(pair[0], title="widget")
    assert isinstance(widget, anywidget.AnyWidget)
    assert widget.html == explore(pair[0], title="widget").html
    assert "export default" in widget._esm and "render" in widget._esm


@pytest.mark.skipif(BROWSER is None or DRIVER is None, reason="no Chromium / chromedriver")
def test_the_front_end_renders_the_explorer_and_follows_the_trait(
    driver, pair, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    widget = explorer_widget(pair[0], title="first title")
    host = tmp_path / "host.html"
    host.write_text(HOST_PAGE % (_js_string(widget.html), _js_string(widget._esm)), "utf-8")
    driver.get(host.as_uri())
    frame = None
    for _ in range(250):
        frames = driver.find_elements(By.TAG_NAME, "iframe")
        if frames and driver.execute_script("return window.tlRendered === true"):
            frame = frames[0]
            break
        time.sleep(0.02)
    logs = driver.get_log("browser") if frame is None else []
    assert frame is not None, f"render() did not add the iframe: {logs}"
    assert frame.get_attribute("sandbox") == "allow-scripts allow-downloads"

    def ready_title() -> str:
        driver.switch_to.frame(driver.find_elements(By.TAG_NAME, "iframe")[0])
        try:
            for _ in range(250):
                if driver.execute_script("return !!(window.tlExplorer && window.tlExplorer.ready)"):
                    assert driver.find_element(By.ID, "grid").size["width"] > 0
                    return driver.execute_script("return document.title")
                time.sleep(0.02)
            raise AssertionError("the explorer inside the widget did not become ready")
        finally:
            driver.switch_to.default_content()

    assert "first title" in ready_title()
    second = explorer_widget(pair[0], title="second title").html
    driver.execute_script("window.tlModel.set('html', arguments[0])", second)
    time.sleep(0.1)
    assert "second title" in ready_title()
