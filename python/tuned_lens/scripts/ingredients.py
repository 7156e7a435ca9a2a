"""Old name of :mod:`tuned_lens.training.ingredients` (kept importable; same module object)."""

import sys

from tuned_lens.training import ingredients as _module

sys.modules[__name__] = _module
