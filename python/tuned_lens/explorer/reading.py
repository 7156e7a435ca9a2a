"""Reading an explorer document from disk, in this project's format or logitlenskit's V2.

It sits above :mod:`.schema` and :mod:`.logitlenskit` (each of which knows one format), so
neither of them imports the other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .logitlenskit import from_logitlenskit, is_logitlenskit
from .schema import fail, validate

__all__ = ["load_data"]


def load_data(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """Read a document from a file (or take a parsed one) and validate it.

    A logitlenskit V2 document is converted (see :mod:`.logitlenskit`).

    Args:
        source: A path to a JSON file, or the parsed JSON.

    Returns:
        The version-1 document.
    """
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise fail(f"{source} is not JSON: {err}") from None
    if is_logitlenskit(data):
        data = from_logitlenskit(data)
    return validate(data)
