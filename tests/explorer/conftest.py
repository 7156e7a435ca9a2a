"""Fixtures of the explorer tests (helpers in _explorer_helpers)."""

from __future__ import annotations

import pytest
from _explorer_helpers import BROWSER, DRIVER, build_tokenizer, make_pair


@pytest.fixture(scope="session")
def tokenizer():
    """A word-level fast tokenizer over VOCAB, built offline."""
    return build_tokenizer()


@pytest.fixture
def pair(tokenizer):
    return make_pair(tokenizer)


@pytest.fixture(scope="session")
def driver():
    """One headless Chromium for the whole session, skipped (with the reason) without one."""
    if BROWSER is None:
        pytest.skip("no Chrome/Chromium installed")
    if DRIVER is None:
        pytest.skip("no chromedriver (Debian: apt-get install chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = BROWSER
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # The driver's path is given, so Selenium Manager never looks for (or downloads) one.
    chrome = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    yield chrome
    chrome.quit()
