"""Project-wide test settings: offline, deterministic, quiet."""

import os

import pytest

# No test may reach the Hugging Face Hub: everything comes from local folders, caches or wheels.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The test models are tiny: one torch thread is faster than two on a 2-core CI machine, where a
# second intra-op thread mostly adds synchronisation (measured: 0.7 s vs 2.9 s per training step).
# Tests that need more threads set them explicitly.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - the array statistics need no torch
    pass

# kaleido's browser driver logs at INFO from finalizers that run after pytest has closed its
# capture streams ("--- Logging error ---" after the summary); its INFO lines are not needed.
import logging  # noqa: E402

for _name in ("choreographer", "kaleido", "logistro"):
    logging.getLogger(_name).setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def require_tiny_family():
    """``require(family)`` skips the calling test when the installed transformers predates the
    tiny family (the reason names the family and the release that added it); the one place
    that decides such skips (tuned_lens.testing.tiny_family_unavailable)."""
    from tuned_lens.testing import tiny_family_unavailable

    def require(family: str) -> str:
        reason = tiny_family_unavailable(family)
        if reason is not None:
            pytest.skip(reason)
        return family

    return require


@pytest.fixture(autouse=True)
def _restore_library_logging():
    """Undo what an in-process CLI call (``configure_logging``) did to the ``tuned_lens`` logger:
    a CLI handler and ``propagate = False`` left behind would hide later tests' records from
    ``caplog``."""
    ours, root = logging.getLogger("tuned_lens"), logging.getLogger()
    handlers, level, propagate, root_level = (
        list(ours.handlers),
        ours.level,
        ours.propagate,
        root.level,
    )
    yield
    ours.handlers[:] = handlers
    ours.setLevel(level)
    ours.propagate = propagate
    root.setLevel(root_level)
