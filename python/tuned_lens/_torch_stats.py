"""The torch twin's former name, kept importable: it *is* :mod:`tuned_lens.lens_stats._torch`.

Call the statistics through :mod:`tuned_lens.lens_stats` (``keep_device=True`` keeps CUDA results
on the GPU) rather than importing the twin.
"""

import sys

from tuned_lens.lens_stats import _torch

sys.modules[__name__] = _torch
