"""Old name of :mod:`tuned_lens.training.eval_loop` (kept importable; same module object)."""

import sys

from tuned_lens.training import eval_loop as _module

sys.modules[__name__] = _module
