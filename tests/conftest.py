"""Project-wide test settings: offline, deterministic, quiet."""

import os

# No test may reach the Hugging Face Hub: everything comes from local folders, caches or wheels.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
