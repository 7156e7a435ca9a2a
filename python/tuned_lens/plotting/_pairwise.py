"""What each ``definition=`` of the pairwise trajectory statistics means.

The trajectory's ``js_divergence`` and ``total_variation`` default to the true definitions;
``definition="original"`` selects the quantities the original library computed under those
names. Each entry names the per-cell kernel (a :data:`PairwiseKind`) and the statistic's title.
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

from ..errors import InvalidInputError

__all__ = [
    "JS_DEFINITIONS",
    "TV_DEFINITIONS",
    "JSDefinition",
    "PairwiseKind",
    "TVDefinition",
    "choose_definition",
]

JSDefinition = Literal["jensen-shannon", "original"]
TVDefinition = Literal["half-l1", "original"]
PairwiseKind = Literal["kl", "js", "symmetric_kl", "tv", "max_abs_diff"]

JS_DEFINITIONS: dict[str, tuple[PairwiseKind, str, float | None]] = {
    "jensen-shannon": ("js", "JS(Self | Other)", math.log(2.0)),
    "original": ("symmetric_kl", "Symmetrised KL(Self | Other)", None),
}
TV_DEFINITIONS: dict[str, tuple[PairwiseKind, str]] = {
    "half-l1": ("tv", "TV(Self | Other)"),
    "original": ("max_abs_diff", "Max |Δp|(Self | Other)"),
}

_Choice = TypeVar("_Choice")


def choose_definition(table: dict[str, _Choice], definition: str) -> _Choice:
    """The entry of ``table`` for a ``definition=`` argument, or a clear error."""
    if definition not in table:
        raise InvalidInputError(
            f"definition must be one of {sorted(table)}, got {definition!r}", option="definition"
        )
    return table[definition]
