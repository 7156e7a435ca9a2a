"""Old name of :mod:`tuned_lens.training.checkpoint` (kept importable; same module object)."""

import sys

from tuned_lens.training import checkpoint as _module

sys.modules[__name__] = _module
