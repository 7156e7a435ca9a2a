"""tuned_lens.hub.hub_offline: the one parser of HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE."""

from __future__ import annotations

import pytest
from tuned_lens.hub import hub_offline


@pytest.mark.parametrize(
    ("hf", "transformers", "expected"),
    [
        (None, None, False),
        ("1", None, True),
        ("ON", None, True),
        ("on", None, True),
        ("Yes", None, True),
        ("true", None, True),
        (" TRUE ", None, True),
        ("0", None, False),
        ("off", None, False),
        ("OFF", None, False),
        ("false", None, False),
        ("no", None, False),
        ("", None, False),
        (None, "1", True),
        (None, "off", False),
        ("", "yes", True),  # an empty HF_HUB_OFFLINE defers to TRANSFORMERS_OFFLINE
        ("0", "1", False),  # a set HF_HUB_OFFLINE decides, as in huggingface_hub
        ("1", "0", True),
    ],
)
def test_hub_offline_parses_like_huggingface_hub(monkeypatch, hf, transformers, expected):
    for name, value in (("HF_HUB_OFFLINE", hf), ("TRANSFORMERS_OFFLINE", transformers)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert hub_offline() is expected


def test_hub_offline_agrees_with_huggingface_hub_parser(monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    for value in ("1", "ON", "yes", "True", "0", "off", "nope"):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub_offline() is constants._is_true(value)
