"""The exceptions of the statistics, as the compiled core and the torch twin raise them.

The classes are defined once, in :mod:`tuned_lens.errors`; this module re-exports the four
that the statistics raise, and the Rust extension looks them up here
(``pyo3::import_exception!(tuned_lens.lens_stats.errors, ...)``), so both routes raise the very
same classes. Also importable from :mod:`tuned_lens.lens_stats`.

* :class:`LensStatsError` (a ``ValueError``): any rejected input; ``k`` out of range, an
  ``out=`` array that cannot be written, a bad thread count.
* :class:`ShapeError`: wrong number of axes, mismatched or non-broadcastable shapes, an empty
  vocabulary axis.
* :class:`DTypeError` (also a ``TypeError``): an element type the statistics do not read.
* :class:`TargetIndexError` (also an ``IndexError``): a token id outside ``[0, V)``.

Every message starts with the argument at fault (``"log_q: shape (2, 4) does not match ..."``).
"""

from __future__ import annotations

from tuned_lens.errors import DTypeError, LensStatsError, ShapeError, TargetIndexError

__all__ = ["LensStatsError", "ShapeError", "DTypeError", "TargetIndexError"]

# The element types the core reads, in its own words (crates/lens_stats/src/python/convert.rs).
READABLE_DTYPES = (
    "expected float32, float64, float16, bfloat16 (torch) or uint16 (raw bfloat16 bits), "
    "in native byte order"
)


def unsupported_dtype(arg: str, dtype: str) -> DTypeError:
    """The core's error for values of an element type it does not read.

    Args:
        arg: The argument's name.
        dtype: The element type as numpy prints it (``"int64"``), or torch for types numpy lacks.
    """
    return DTypeError(f"{arg}: unsupported dtype {dtype}; {READABLE_DTYPES}")


def meta_tensor(arg: str) -> LensStatsError:
    """The error for a tensor on the ``meta`` device (a shape without data), on both routes."""
    return LensStatsError(f"{arg}: is a meta tensor, which holds no data to compute on")
