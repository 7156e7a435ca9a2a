"""Old name of :mod:`tuned_lens.training.optim` (kept importable; same module object)."""

import sys

from tuned_lens.training import optim as _module

sys.modules[__name__] = _module
