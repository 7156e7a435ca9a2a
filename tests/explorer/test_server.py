"""The local app over real HTTP on 127.0.0.1: the right grid, 20 concurrent requests, limits."""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _explorer_helpers import BROWSER, DRIVER
from tuned_lens.explorer import decode_view
from tuned_lens.explorer._codec import decode_array
from tuned_lens.explorer.server import ExplorerApp, ServerLimits, start_server

SENTENCE = "Alice was beginning to get very tired of sitting by her sister on the bank. "


@pytest.fixture(scope="module")
def glass():
    from tuned_lens.assets import load_glassllm
    from tuned_lens.nn.lenses import LogitLens, TunedLens

    model, tokenizer = load_glassllm()
    lenses = {"logit": LogitLens.from_model(model), "tuned": TunedLens.from_model(model)}
    return model, tokenizer, lenses


@pytest.fixture(scope="module")
def base_url(glass):
    model, tokenizer, lenses = glass
    limits = ServerLimits(max_tokens=128, max_prompts=4, max_body_bytes=16 * 1024)
    app = ExplorerApp(model, tokenizer, lenses, limits=limits, model_name="glassllm")
    server, _ = start_server(app, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    app.close()


def request(url: str, body: object = None, *, raw: bytes | None = None, kind="application/json"):
    """``(status, parsed JSON or text)`` of a GET (no body) or POST."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(req, timeout=120) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def test_the_page_and_health(base_url):
    status, page = request(base_url + "/")
    assert status == 200 and 'id="prompt"' in page and "logit" in page
    assert request(base_url + "/health") == (200, {"ok": True, "lenses": ["logit", "tuned"]})
    status, answer = request(base_url + "/nothing")
    assert status == 404 and "no page" in answer["error"]


def test_a_prompt_gets_the_grid_python_computes(base_url, glass):
    from tuned_lens.plotting import CompactTrajectory

    model, tokenizer, lenses = glass
    text = "The One Ring"
    status, data = request(base_url + "/api/data", {"prompt": text, "compare": "The One Model"})
    assert status == 200 and data["prompts"] == [
        "prompt 0: The One Ring…",
        "prompt 1: The One Model…",
    ]
    ids = [tokenizer(text).input_ids, tokenizer("The One Model").input_ids]
    for lens_index, name in enumerate(["logit", "tuned"]):
        direct = CompactTrajectory.from_lens_and_model(
            lenses[name], model, ids, tokenizer=tokenizer, targets="next", progress=False
        )
        for prompt in range(2):
            view_index = lens_index * 2 + prompt
            view = decode_view(data, view_index)
            n = len(ids[prompt])
            assert data["views"][view_index]["positions"] == n
            table = decode_array(data["tokens"]["ids"])
            assert np.array_equal(table[view["topk_tokens"]], direct.top_k_ids[prompt][:, :n])
            np.testing.assert_allclose(
                view["stats"]["entropy"], direct.entropy_cells[prompt][:, :n], rtol=1e-3, atol=1e-3
            )
    status, page = request(base_url + "/api/explore", {"prompt": text, "lenses": ["tuned"]})
    assert status == 200 and page["html"].startswith("<!DOCTYPE html>")


def test_twenty_concurrent_requests_all_succeed(base_url, glass):
    tokenizer = glass[1]
    text = (SENTENCE * 8)[: 8 * len(SENTENCE)]
    while len(tokenizer(text).input_ids) > 100:
        text = text[:-5]
    tokens = len(tokenizer(text).input_ids)
    one = []
    for _ in range(3):
        start = time.perf_counter()
        status, _ = request(base_url + "/api/explore", {"prompt": text, "lenses": ["logit"]})
        one.append(time.perf_counter() - start)
        assert status == 200

    def ask(n: int):
        start = time.perf_counter()
        status, answer = request(base_url + "/api/explore", {"prompt": f"{n} {text}"})
        return status, time.perf_counter() - start, answer

    start = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(ask, range(20)))
    wall = time.perf_counter() - start
    assert [status for status, _, _ in results] == [200] * 20
    assert all("tl-data" in answer["html"] for _, _, answer in results)
    latencies = sorted(t for _, t, _ in results)
    print(
        f"\n{tokens}-token prompt, logit lens: {statistics.median(one) * 1000:.0f} ms alone "
        f"(median of 3); 20 concurrent (both lenses): all 200, wall {wall:.2f} s, "
        f"median {statistics.median(latencies):.2f} s, max {latencies[-1]:.2f} s"
    )


@pytest.mark.parametrize(
    ("body", "kind", "status", "message"),
    [
        ({"prompt": SENTENCE * 20}, "application/json", 413, "too long"),
        ({"prompts": ["a", "b", "c", "d", "e"]}, "application/json", 413, "at most 4"),
        ({"prompt": "x" * 20_000}, "application/json", 413, "bytes"),
        (b"{not json", "application/json", 400, "not JSON"),
        ({"prompt": "hi"}, "text/plain", 415, "JSON"),
        ({"prompt": "hi", "lenses": ["nope"]}, "application/json", 400, "unknown lens"),
        ({"prompt": 3}, "application/json", 400, "must be text"),
        ({"prompt": "  "}, "application/json", 400, "empty"),
        (["a list"], "application/json", 400, "JSON object"),
    ],
)
def test_limits_get_clear_json_errors(base_url, body, kind, status, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, answer = request(base_url + "/api/explore", raw=raw, kind=kind)
    assert got == status and message in answer["error"] and answer["status"] == status


@pytest.mark.skipif(BROWSER is None or DRIVER is None, reason="no Chromium / chromedriver")
def test_a_scripted_session_types_a_prompt_and_gets_the_right_grid(driver, base_url, glass):
    from selenium.webdriver.common.by import By
    from tuned_lens.plotting import CompactTrajectory

    model, tokenizer, lenses = glass
    driver.get_log("browser")
    driver.get(base_url + "/")
    driver.find_element(By.ID, "prompt").send_keys("The One Ring")
    driver.find_element(By.ID, "go").click()
    for _ in range(300):
        if driver.execute_script("return document.getElementById('view').srcdoc.length > 0"):
            break
        time.sleep(0.02)
    driver.switch_to.frame("view")
    try:
        for _ in range(200):
            if driver.execute_script("return !!(window.tlExplorer && window.tlExplorer.ready)"):
                break
            time.sleep(0.02)
        grid = np.array(driver.execute_script("return window.tlExplorer.gridValues()"), float)
        stat = driver.execute_script("return window.tlExplorer.gridInfo().stat")
    finally:
        driver.switch_to.default_content()
    direct = CompactTrajectory.from_lens_and_model(
        lenses["logit"],
        model,
        [tokenizer("The One Ring").input_ids],
        tokenizer=tokenizer,
        targets="next",
        progress=False,
    )
    assert stat == "entropy"
    np.testing.assert_allclose(grid, direct.entropy_cells[0][::-1], rtol=1e-3, atol=1e-3)
    assert [e for e in driver.get_log("browser") if e["level"] == "SEVERE"] == []
