"""Old home of the demo's pictures; they live in :mod:`tuned_lens.demo.figures` (and the index
page in :mod:`tuned_lens.demo.report`). Kept importable."""

from tuned_lens.demo.figures import DrawnFigures, TooShortSentenceError, draw, kl_figure
from tuned_lens.demo.report import index_page

__all__ = ["DrawnFigures", "TooShortSentenceError", "draw", "index_page", "kl_figure"]
