"""The limits of the statistics, defined once for Python.

The Rust core validates against its own constants (``crates/lens_stats/src/dims.rs``) and
exports them on the compiled module (``tuned_lens.lens_stats._native.MAX_K``); a test asserts
that both agree.
"""

from __future__ import annotations

__all__ = ["MAX_K"]

#: The largest ``k`` that ``top_k`` and ``top_k_delta`` accept (the per-row buffer is this long).
MAX_K = 64
