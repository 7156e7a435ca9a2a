"""Which layers a lens decodes: the one answer behind every trajectory, comparison and evaluation.

Most lenses decode every hidden state ``0 .. L-1``. A lens that covers only some of them (a
:class:`~tuned_lens.nn.JacobianLens` fitted with ``layers=`` or read from a published file,
which covers blocks ``0 .. L-2``, i.e. hidden-state indices ``1 .. L-1``) says so with a
``layers`` attribute: the covered hidden-state indices, ascending. Trajectories built with such
a lens hold only the covered rows (plus the model's output row), labelled with their true
hidden-state indices; two lenses are compared on the layers both cover.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .errors import InvalidInputError

__all__ = [
    "check_lens_matches",
    "covered_layers",
    "decoded_layers",
    "describe_layers",
    "shared_layers",
]


def covered_layers(lens: Any, num_layers: int) -> tuple[int, ...]:
    """The hidden-state indices ``lens`` decodes in a model with ``num_layers`` lens layers.

    Args:
        lens: A lens; its ``layers`` attribute (a sequence of ints) if it has one, else every
            layer.
        num_layers: ``L``, the model's number of blocks (lens layers ``0 .. L-1``).

    Returns:
        The covered indices, ascending.

    Raises:
        InvalidInputError: A covered index outside ``0 .. L-1`` (the lens is for another model).
    """
    layers = getattr(lens, "layers", None)
    if layers is None:
        return tuple(range(num_layers))
    covered = tuple(sorted({int(i) for i in layers}))
    outside = [i for i in covered if not 0 <= i < num_layers]
    if outside:
        raise InvalidInputError(
            f"the lens covers layers {outside} outside 0..{num_layers - 1} of this model",
            option="lens",
        )
    return covered


def shared_layers(lenses: Iterable[Any], num_layers: int) -> tuple[int, ...]:
    """The hidden-state indices every lens of ``lenses`` covers, ascending.

    Raises:
        InvalidInputError: The lenses share no layer.
    """
    shared = set(range(num_layers))
    described = []
    for lens in lenses:
        mine = covered_layers(lens, num_layers)
        shared &= set(mine)
        described.append(describe_layers(mine))
    if not shared:
        raise InvalidInputError(
            f"the lenses share no layer (they cover {'; '.join(described)})", option="lens"
        )
    return tuple(sorted(shared))


def decoded_layers(
    lenses: Sequence[Any], num_layers: int, layers: Sequence[int] | None
) -> tuple[int, ...]:
    """``layers`` checked (ascending indices in ``0 .. L-1``), or the :func:`shared_layers`.

    Raises:
        InvalidInputError: Indices out of range, repeated or unsorted, or no shared layer.
    """
    if layers is None:
        return shared_layers(lenses, num_layers)
    chosen = tuple(int(i) for i in layers)
    if list(chosen) != sorted(set(chosen)) or not all(0 <= i < num_layers for i in chosen):
        raise InvalidInputError(
            f"layers must be ascending indices in 0..{num_layers - 1}, got {chosen}",
            option="layers",
        )
    return chosen


def describe_layers(layers: Sequence[int]) -> str:
    """``"1..3"`` for a run of consecutive indices, else ``"0, 2, 3"``."""
    if not layers:
        return "none"
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}..{layers[-1]}"
    return ", ".join(map(str, layers))


def check_lens_matches(lens: Any, n_hidden_states: int) -> int:
    """Number of lens layers ``L``; the model must return ``L + 1`` hidden states."""
    n_layers = n_hidden_states - 1
    try:
        lens_layers = len(lens)
    except TypeError:
        return n_layers
    if lens_layers != n_layers:
        raise InvalidInputError(
            f"the lens has {lens_layers} layers but the model returned {n_hidden_states} "
            f"hidden states (expected {lens_layers + 1})",
            option="lens",
        )
    return n_layers
