"""The one exception hierarchy: every class derives from TunedLensError and from the builtin
that callers of the original library catch, and the old import locations name the same class."""

from __future__ import annotations

import importlib
import inspect

import pytest
from tuned_lens import errors

# (old location, name there, class in tuned_lens.errors)
OLD_LOCATIONS = [
    ("tuned_lens.lens_stats", "LensStatsError", errors.LensStatsError),
    ("tuned_lens.lens_stats", "ShapeError", errors.ShapeError),
    ("tuned_lens.lens_stats", "DTypeError", errors.DTypeError),
    ("tuned_lens.lens_stats", "TargetIndexError", errors.TargetIndexError),
    ("tuned_lens.lens_io", "LensFileError", errors.LensFileError),
    ("tuned_lens.lens_io", "UnsafeLensFileError", errors.UnsafeLensFileError),
    (
        "tuned_lens.architectures",
        "UnsupportedArchitectureError",
        errors.UnsupportedArchitectureError,
    ),
    ("tuned_lens.assets", "AssetMissingError", errors.AssetMissingError),
    ("tuned_lens.data", "NotEnoughDataError", errors.NotEnoughDataError),
    ("tuned_lens.plotting", "TrajectoryShapeError", errors.TrajectoryShapeError),
    ("tuned_lens.plotting", "MissingTargetsError", errors.MissingTargetsError),
    ("tuned_lens.headless_chromium", "ChromiumError", errors.BrowserError),
    ("tuned_lens.plotting.export", "ExportDependencyError", errors.BrowserNotFoundError),
    ("tuned_lens.explorer.server", "RequestError", errors.RequestError),
]

BUILTIN_BASES = {
    "InvalidInputError": ValueError,
    "LensStatsError": ValueError,
    "ShapeError": ValueError,
    "TrajectoryShapeError": AssertionError,
    "DTypeError": TypeError,
    "TargetIndexError": IndexError,
    "MissingTargetsError": ValueError,
    "NotEnoughDataError": ValueError,
    "TooShortSentenceError": ValueError,
    "RequestError": ValueError,
    "LensFileError": ValueError,
    "UnsafeLensFileError": ValueError,
    "UnsupportedArchitectureError": NotImplementedError,
    "BrowserError": RuntimeError,
    "MissingDependencyError": ImportError,
    "AssetMissingError": ModuleNotFoundError,
    "BrowserNotFoundError": RuntimeError,
}


def test_every_class_is_a_tuned_lens_error_and_its_builtin() -> None:
    classes = {
        name: obj
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }
    assert set(classes) == set(errors.__all__)
    for name, cls in classes.items():
        assert issubclass(cls, errors.TunedLensError), name
        assert cls.__module__ == "tuned_lens.errors", name
        if name != "TunedLensError":
            assert issubclass(cls, BUILTIN_BASES[name]), name


@pytest.mark.parametrize(("module", "name", "cls"), OLD_LOCATIONS)
def test_old_locations_name_the_same_class(module: str, name: str, cls: type) -> None:
    assert getattr(importlib.import_module(module), name) is cls


def test_one_class_per_concept_in_the_package() -> None:
    """No module of the package defines an exception class of its own any more."""
    import pkgutil

    import tuned_lens

    for info in pkgutil.walk_packages(tuned_lens.__path__, "tuned_lens."):
        if info.name == "tuned_lens.errors" or info.name.endswith("__main__"):
            continue  # a __main__ module runs its program when imported
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue  # an optional integration that is not installed
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                if obj.__name__.startswith("_"):
                    continue  # private control flow (e.g. stopping a forward pass), never raised
                if obj.__module__ == info.name:
                    pytest.fail(f"{info.name} defines its own exception class {obj.__name__}")


def test_invalid_input_error_carries_the_option() -> None:
    err = errors.InvalidInputError("num_steps must be >= 1, got 0", option="num_steps")
    assert err.option == "num_steps"
    assert str(err) == "num_steps must be >= 1, got 0"
    assert errors.InvalidInputError("plain").option is None
