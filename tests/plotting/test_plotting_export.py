"""Saving figures: HTML always; PNG only where kaleido and a Chrome/Chromium exist."""

import importlib.util
import re

import numpy as np
import pytest
from tuned_lens.plotting import ExportDependencyError, TrajectoryStatistic, write_html, write_image
from tuned_lens.plotting.export import find_browser

HAVE_KALEIDO = importlib.util.find_spec("kaleido") is not None


def small_figure():
    stat = TrajectoryStatistic(
        "Entropy",
        np.array([[1.0, 2.0], [0.5, 0.25]]),
        sequence_labels=np.array(["a", "b"]),
        units="nats",
    )
    return stat.figure(title="export test")


def test_write_html_is_standalone(tmp_path):
    path = write_html(small_figure(), tmp_path / "nested" / "figure.html")
    html = path.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<html") or html.lstrip().lower().startswith(
        "<!doctype"
    )
    assert re.search(r"<script[^>]*\bsrc=", html) is None  # nothing fetched from a CDN
    assert "Entropy (nats)" in html and "export test" in html
    assert len(html) > 1_000_000  # plotly.js itself is inside


def test_write_image_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="format"):
        write_image(small_figure(), tmp_path / "figure.bmp")


@pytest.mark.skipif(HAVE_KALEIDO, reason="kaleido is installed")
def test_write_image_without_kaleido_names_what_to_install(tmp_path):
    # PNG needs only a browser (write_png); the vector formats need kaleido.
    with pytest.raises(ExportDependencyError, match=r"kaleido.*tuned-lens-rs\[export\]"):
        write_image(small_figure(), tmp_path / "figure.svg")


@pytest.mark.skipif(not HAVE_KALEIDO, reason="kaleido is not installed")
def test_write_image_without_browser_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))
    with pytest.raises(ExportDependencyError, match="Chrom"):
        write_image(small_figure(), tmp_path / "figure.png")


@pytest.mark.skipif(
    not HAVE_KALEIDO or find_browser() is None, reason="needs kaleido and Chrome/Chromium"
)
def test_write_png(tmp_path):
    path = write_image(small_figure(), tmp_path / "figure.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_browser_discovery_falls_back_and_leaves_the_environment_alone(tmp_path, monkeypatch):
    from tuned_lens import headless_chromium

    assert headless_chromium.find_chromium is find_browser
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))
    assert find_browser() == str(fake)  # a wrong $BROWSER_PATH falls back to the PATH
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert find_browser() == str(fake)
    monkeypatch.delenv("BROWSER_PATH")
    assert find_browser() == str(fake)


def test_no_browser_errors_are_one_class():
    from tuned_lens.errors import BrowserError, BrowserNotFoundError
    from tuned_lens.headless_chromium import ChromiumError

    assert ExportDependencyError is BrowserNotFoundError
    assert ChromiumError is BrowserError
    assert issubclass(ExportDependencyError, (RuntimeError, ImportError))


@pytest.mark.skipif(find_browser() is None, reason="needs Chrome/Chromium")
def test_write_png_needs_no_kaleido_and_honours_size_and_scale(tmp_path):
    import os
    import struct

    from tuned_lens.plotting.export import write_png

    before = os.environ.get("BROWSER_PATH")
    path = write_png(small_figure(), tmp_path / "figure.png", width=300, height=200, scale=2)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (600, 400)
    assert os.environ.get("BROWSER_PATH") == before
    assert not list(tmp_path.glob(".*tmp*"))
