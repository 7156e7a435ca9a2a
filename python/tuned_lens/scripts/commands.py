"""Old name of :mod:`tuned_lens.training.commands` (kept importable; same module object)."""

import sys

from tuned_lens.training import commands as _module

sys.modules[__name__] = _module
