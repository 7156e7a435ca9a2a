"""The explorer page in a real headless Chromium (Selenium + Debian's chromium-driver).

Skipped, with the reason, only where no Chromium (or no chromedriver) is installed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from _explorer_helpers import BROWSER, DRIVER, V2, make_pair
from tuned_lens.explorer import build_data, explore
from tuned_lens.plotting import TokenFormatter

pytestmark = [
    pytest.mark.skipif(BROWSER is None, reason="no Chrome/Chromium installed"),
    pytest.mark.skipif(
        DRIVER is None, reason="no chromedriver (Debian: apt-get install chromium-driver)"
    ),
]
FULL = TokenFormatter(max_string_len=None)


@pytest.fixture(scope="module")
def trajectories(tokenizer):
    return make_pair(tokenizer, seed=3, n=2, rows=5, t=7)


@pytest.fixture(scope="module")
def page(trajectories, tmp_path_factory) -> Path:
    a, b = trajectories
    path = tmp_path_factory.mktemp("explorer") / "page.html"
    explore({"logit": a, "tuned": b}, path, track=[1, 2], title="test page")
    return path


def open_page(driver, path: Path, fragment: str = "") -> None:
    driver.get("about:blank")
    driver.get(path.as_uri() + fragment)
    for _ in range(200):
        if driver.execute_script("return !!(window.tlExplorer && window.tlExplorer.ready)"):
            return
        time.sleep(0.02)
    status = driver.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"the explorer did not become ready: {status!r}")


def js(driver, expression: str):
    return driver.execute_script(f"return {expression}")


def point_at(driver, row: int, position: int, click: bool = False) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "grid")
    rect = js(driver, f"window.tlExplorer.cellRect({row}, {position})")
    size = canvas.size
    chain = ActionChains(driver).move_to_element_with_offset(
        canvas, int(rect["x"] - size["width"] / 2), int(rect["y"] - size["height"] / 2)
    )
    (chain.click() if click else chain).perform()


def shown_topk(driver) -> list[tuple[str, float]]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#topk-table tr[data-token]")
    out = []
    for row in rows:
        cells = row.find_elements(By.TAG_NAME, "td")
        out.append((cells[1].text, float(cells[2].text.rstrip("%")) / 100))
    return out


def chart_values(driver, chart: str = "probchart") -> list[list[float]]:
    script = f"""return Array.from(document.querySelectorAll('#{chart} g.series')).map(
        g => Array.from(g.querySelectorAll('circle')).map(
            c => [Number(c.dataset.row), Number(c.dataset.value)]))"""
    return driver.execute_script(script)


def test_opens_from_disk_with_no_request_and_no_console_error(driver, page):
    driver.get_log("performance")
    open_page(driver, page)
    requests = [
        json.loads(entry["message"])["message"]
        for entry in driver.get_log("performance")
        if "Network.requestWillBeSent" in entry["message"]
    ]
    urls = [m["params"]["request"]["url"] for m in requests]
    assert urls == [page.as_uri()], urls
    assert js(driver, "performance.getEntriesByType('resource').length") == 0
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "export").click()  # a blob: download, allowed by the page's CSP
    driver.find_element(By.ID, "dark").click()
    time.sleep(0.2)
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert problems == []
    assert js(driver, "document.getElementById('status').textContent") == ""


def test_hovering_and_clicking_a_cell_shows_the_topk_python_computed(driver, page, trajectories):
    a = trajectories[0]
    ids, probs = a._cell_top_k(10)
    open_page(driver, page)
    for row, position in ((0, 0), (4, 6), (2, 3)):
        point_at(driver, row, position)
        shown = shown_topk(driver)
        expected = [
            FULL.format(a.tokenizer.convert_ids_to_tokens(int(i))) for i in ids[0, row, position]
        ]
        assert [name for name, _ in shown] == expected
        np.testing.assert_allclose([p for _, p in shown], probs[0, row, position], atol=6e-4)
    point_at(driver, 1, 5, click=True)
    assert js(driver, "window.tlExplorer.state.cell") == [1, 5]
    time.sleep(0.1)
    assert "cell=1.5" in js(driver, "location.hash")


def test_pinning_tokens_draws_the_probabilities_python_computed(driver, page, trajectories):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    a = trajectories[0]
    lp = np.asarray(a.log_probs)[0]
    open_page(driver, page)
    point_at(driver, 2, 4, click=True)
    # Typed: a tracked token, known at every layer.
    box = driver.find_element(By.ID, "pininput")
    box.send_keys("_the", Keys.ENTER)
    (series,) = chart_values(driver)
    assert [r for r, _ in series] == list(range(5))
    np.testing.assert_allclose([p for _, p in series], np.exp(lp[:, 4, 1]), rtol=2e-3, atol=1e-4)
    # A group of two tracked tokens: their probabilities summed.
    box.send_keys("_the + _cat", Keys.ENTER)
    group = chart_values(driver)[1]
    np.testing.assert_allclose(
        [p for _, p in group], np.exp(lp[:, 4, 1]) + np.exp(lp[:, 4, 2]), rtol=2e-3, atol=2e-4
    )
    # Clicked in the top-k list: known wherever it is in a cell's top-k.
    first = driver.find_element(By.CSS_SELECTOR, "#topk-table tr[data-token] button.tok")
    first.click()
    clicked = chart_values(driver)[2]
    ids, probs = a._cell_top_k(10)
    token = ids[0, 2, 4, 0]
    for row, value in clicked:
        (where,) = np.flatnonzero(ids[0, row, 4] == token)
        assert value == pytest.approx(float(probs[0, row, 4, where]), abs=6e-4)
    assert 2 in [r for r, _ in clicked]
    # Pinning a second position adds its lines.
    driver.find_element(By.ID, "pinpos").click()
    point_at(driver, 2, 1, click=True)
    driver.find_element(By.ID, "pinpos").click()
    assert js(driver, "window.tlExplorer.state.ppos") == [4, 1]
    assert len(chart_values(driver)) == 6


def rows_of(values: np.ndarray, rows: list[int]) -> np.ndarray:
    return values[rows]


def test_switching_lens_statistic_and_comparison_changes_the_grid(driver, page, trajectories):
    from selenium.webdriver.support.ui import Select

    a, b = trajectories
    open_page(driver, page)
    rows = js(driver, "window.tlExplorer.gridInfo().rows")
    assert rows == [4, 3, 2, 1, 0]
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    np.testing.assert_allclose(grid, a._cell_entropy()[0][rows], rtol=1e-3)
    before = js(driver, "document.getElementById('grid').toDataURL()")
    Select(driver.find_element("id", "lens")).select_by_visible_text("tuned")
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    np.testing.assert_allclose(grid, b._cell_entropy()[0][rows], rtol=1e-3)
    assert js(driver, "document.getElementById('grid').toDataURL()") != before
    Select(driver.find_element("id", "stat")).select_by_value("cross_entropy")
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    expected = -b._cell_target_log_prob("targets")[0][rows]
    np.testing.assert_allclose(grid, expected, rtol=1e-3, atol=1e-3)
    Select(driver.find_element("id", "stat")).select_by_value("target_rank")
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    assert np.array_equal(grid, b._cell_target_rank()[0][rows])
    # Compared with the logit lens on the same prompt: the exact KL Python stored.
    Select(driver.find_element("id", "cmp")).select_by_value("0")
    Select(driver.find_element("id", "stat")).select_by_value("diff_kl")
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    np.testing.assert_allclose(grid, b._cell_pairwise(a, "kl")[0][rows], rtol=2e-3, atol=1e-3)
    Select(driver.find_element("id", "stat")).select_by_value("diff_js")
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    np.testing.assert_allclose(grid, a._cell_pairwise(b, "js")[0][rows], rtol=2e-3, atol=1e-3)
    # Layer stride 2 keeps layers 0, 2 and the output.
    from selenium.webdriver.common.keys import Keys

    stride = driver.find_element("id", "stride")
    stride.clear()
    stride.send_keys("2", Keys.TAB)
    assert js(driver, "window.tlExplorer.gridInfo().rows") == [4, 2, 0]


def test_the_url_hash_restores_the_state(driver, page, trajectories):
    b = trajectories[1]
    open_page(driver, page, "#lens=1&prompt=1&stat=forward_kl&pins=3~4,5&ppos=2&cell=3.2&dark=1")
    state = js(driver, "window.tlExplorer.state")
    assert (state["lens"], state["prompt"], state["stat"]) == (1, 1, "forward_kl")
    assert state["pins"] == [[3, 4], [5]] and state["ppos"] == [2] and state["cell"] == [3, 2]
    assert js(driver, "document.body.classList.contains('dark')")
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    np.testing.assert_allclose(grid, b._cell_forward_kl()[1][::-1], rtol=1e-3, atol=1e-3)
    assert len(chart_values(driver)) == 2


def test_keyboard_navigation(driver, page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(driver, page)
    point_at(driver, 2, 3, click=True)
    ActionChains(driver).send_keys(Keys.ARROW_UP, Keys.ARROW_RIGHT, "t", "p").perform()
    state = js(driver, "window.tlExplorer.state")
    assert state["cell"] == [3, 4] and state["ppos"] == [4] and len(state["pins"]) == 1
    ActionChains(driver).send_keys("s").perform()
    assert js(driver, "window.tlExplorer.state.stat") != "entropy"


def test_json_export_reimports_to_the_same_view(driver, page, tmp_path):
    from selenium.webdriver.common.by import By

    open_page(driver, page, "#lens=1&stat=cross_entropy&pins=1&cell=2.3&ppos=3,5")
    exported = js(driver, "window.tlExplorer.exportJSON()")
    state, grid = (
        js(driver, "window.tlExplorer.encodeState()"),
        js(driver, "window.tlExplorer.gridValues()"),
    )
    charts = chart_values(driver)
    path = tmp_path / "export.json"
    path.write_text(exported)
    open_page(driver, page)
    assert js(driver, "window.tlExplorer.encodeState()") != state
    driver.find_element(By.ID, "import").send_keys(str(path))
    for _ in range(100):
        if js(driver, "window.tlExplorer.encodeState()") == state:
            break
        time.sleep(0.02)
    assert js(driver, "window.tlExplorer.encodeState()") == state
    assert js(driver, "window.tlExplorer.gridValues()") == grid
    assert chart_values(driver) == charts
    assert js(driver, "document.getElementById('status').textContent") == ""


def test_time_to_interactive_of_a_30_layer_512_position_page(driver, tmp_path):
    from tuned_lens.plotting import CompactTrajectory

    rng = np.random.default_rng(1)
    n_rows, t, k, vocab = 31, 512, 10, 49_152
    probs = np.sort(rng.dirichlet(np.ones(64), size=(1, n_rows, t))[..., :k], axis=-1)[..., ::-1]
    cells = rng.random((1, n_rows, t)).astype(np.float32)
    compact = CompactTrajectory(
        input_ids=rng.integers(0, vocab, size=(1, t)),
        entropy_cells=cells * 5,
        forward_kl_cells=cells,
        top_k_ids=rng.integers(0, vocab, size=(1, n_rows, t, k)),
        top_k_probs=probs.astype(np.float32),
        vocab_size=vocab,
    )
    path = tmp_path / "big.html"
    explore(compact, path)
    start = time.perf_counter()
    open_page(driver, path)
    wall = time.perf_counter() - start
    ready = js(driver, "window.tlExplorer.readyMs")
    since_navigation = js(driver, "performance.now()")
    print(
        f"\n30x512 top-10 page: {path.stat().st_size / 1e6:.2f} MB; explorer ready "
        f"{ready:.0f} ms after its script started, {wall * 1000:.0f} ms wall from navigation "
        f"(page clock {since_navigation:.0f} ms)"
    )
    assert wall < 5.0
    assert build_data  # the same builder as every other test


def test_a_logitlenskit_v2_file_imports_into_the_page(driver, page, tmp_path):
    from selenium.webdriver.common.by import By
    from tuned_lens.explorer import decode_view, from_logitlenskit

    path = tmp_path / "v2.json"
    path.write_text(json.dumps(V2))
    open_page(driver, page, "#pins=1&cell=2.3")
    driver.find_element(By.ID, "import").send_keys(str(path))
    for _ in range(100):
        if js(driver, "window.tlExplorer.gridInfo().rows.length") == 3:
            break
        time.sleep(0.02)
    assert js(driver, "document.getElementById('status').textContent") == ""
    state = js(driver, "window.tlExplorer.state")
    assert state["pins"] == [] and state["cell"] is None and state["stat"] == "max_prob"
    converted = from_logitlenskit(V2)
    expected = decode_view(converted, 0)["topk_probs"][..., 0][::-1]
    grid = np.array(js(driver, "window.tlExplorer.gridValues()"), dtype=float)
    np.testing.assert_allclose(grid, expected, atol=1e-3)
    point_at(driver, 1, 1)
    assert shown_topk(driver) == [("_fox", pytest.approx(0.6, abs=1e-4)), ("_brown", 0.2)]
    assert js(driver, "document.title") == "tuned-lens explorer"
