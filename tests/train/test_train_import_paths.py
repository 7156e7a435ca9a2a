"""The old ``tuned_lens.scripts.*`` paths are the ``tuned_lens.training.*`` modules."""

from __future__ import annotations

import importlib

import pytest

MODULES = ("checkpoint", "commands", "eval_loop", "ingredients", "optim", "train_loop")


@pytest.mark.parametrize("name", MODULES)
def test_old_scripts_path_is_the_training_module(name):
    old = importlib.import_module(f"tuned_lens.scripts.{name}")
    new = importlib.import_module(f"tuned_lens.training.{name}")
    assert old is new


def test_old_names_still_import():
    from tuned_lens.scripts.eval_loop import EvalConfig, evaluate_lenses  # noqa: F401
    from tuned_lens.scripts.ingredients import DataSpec, ModelSpec  # noqa: F401
    from tuned_lens.scripts.train_loop import TrainConfig, train_lens  # noqa: F401
