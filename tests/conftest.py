"""Project-wide test settings: offline, deterministic, quiet."""

import os

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
