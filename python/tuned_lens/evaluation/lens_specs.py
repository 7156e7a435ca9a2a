"""``--lens`` specifications: ``logit``, ``tuned:PATH``, ``jacobian:PATH``, ``shortcut:PATH``.

An optional ``NAME=`` prefix names the lens in the table (``--lens r8=tuned:lenses/r8``);
otherwise the kind is the name, followed by the folder's name when a kind appears twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from tuned_lens.nn.lenses import Lens

__all__ = ["KINDS", "LensSpec", "load_lenses", "parse_lens_specs"]

KINDS = ("logit", "tuned", "jacobian", "shortcut")


@dataclass(frozen=True)
class LensSpec:
    """One ``--lens`` value: the table name, the kind and the path (``None`` for ``logit``)."""

    name: str
    kind: str
    path: str | None


def _parse_one(text: str) -> tuple[str | None, str, str | None]:
    name, sep, rest = text.partition("=")
    if not sep or ":" in name:
        name, rest = "", text
    kind, _, path = rest.partition(":")
    if kind not in KINDS:
        raise InvalidInputError(
            f"lens {text!r}: the kind must be one of {', '.join(KINDS)} (e.g. tuned:PATH)",
            option="lens",
        )
    if (kind == "logit") != (not path):
        need = "takes no path" if kind == "logit" else "needs a path (KIND:PATH)"
        raise InvalidInputError(f"lens {text!r}: {kind} {need}", option="lens")
    return name or None, kind, path or None


def parse_lens_specs(texts: list[str]) -> list[LensSpec]:
    """Parse ``--lens`` values into uniquely named specs, in the order given.

    Raises:
        InvalidInputError: An unknown kind, a missing or extra path, or a repeated name.
    """
    parsed = [_parse_one(t) for t in texts]
    kinds = Counter(kind for name, kind, _ in parsed if name is None)
    specs = []
    for name, kind, path in parsed:
        if name is None:
            name = kind if kinds[kind] == 1 or path is None else f"{kind}:{Path(path).name}"
        specs.append(LensSpec(name, kind, path))
    names = Counter(s.name for s in specs)
    repeated = sorted(n for n, c in names.items() if c > 1)
    if repeated:
        raise InvalidInputError(
            f"lens names {repeated} appear twice; name them with NAME=KIND:PATH", option="lens"
        )
    return specs


def load_lenses(specs: list[LensSpec], model: nn.Module) -> dict[str, Lens]:
    """Load every spec's lens for ``model`` (files are checked against the model)."""
    from tuned_lens.nn import JacobianLens, LinearShortcutLens, LogitLens, TunedLens

    lenses: dict[str, Lens] = {}
    for spec in specs:
        if spec.kind == "logit":
            lenses[spec.name] = LogitLens.from_model(model)
        elif spec.kind == "tuned":
            lenses[spec.name] = TunedLens.from_model_and_pretrained(model, spec.path)
        elif spec.kind == "jacobian":
            lenses[spec.name] = JacobianLens.from_pretrained(str(spec.path), model=model)
        else:
            lenses[spec.name] = LinearShortcutLens.from_pretrained(str(spec.path), model=model)
    return lenses
