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
    with pytest.raises(ExportDependencyError, match=r"kaleido.*tuned-lens-rs\[export\]"):
        write_image(small_figure(), tmp_path / "figure.png")


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
