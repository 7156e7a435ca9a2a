"""The compiled core's former name, kept importable: it *is* :mod:`tuned_lens.lens_stats._native`.

It was private; import :mod:`tuned_lens.lens_stats` instead.
"""

import sys

from tuned_lens.lens_stats import _native

sys.modules[__name__] = _native
