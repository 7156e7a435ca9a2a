"""Reading local data files as text, safely: the documents of ``tuned_lens.data``.

Only regular files are opened (a device such as ``/dev/zero`` never ends; opening a FIFO waits
for a writer), bytes must be UTF-8, and every error names the file and, for JSON lines, the
line (``docs.jsonl:7: not a JSON line ...``), as one :class:`~tuned_lens.errors.InvalidInputError`.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tuned_lens.errors import InvalidInputError

__all__ = ["read_json_texts", "read_text"]


def _json_records(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, record)`` of a JSON-lines file (``where``: ``path:line``), or of a ``.json``
    file holding a list (``where``: ``path: record N``).

    JSON lines are read one line at a time (a large file is never held whole).

    Raises:
        InvalidInputError: Bytes that are not UTF-8 or text that is not JSON, naming
            ``path:line``.
    """
    _require_regular_file(path)
    with path.open("rb") as handle:
        if path.suffix == ".json" and handle.read(1) == b"[":
            handle.seek(0)
            text = _decode(path, handle.read())
            try:
                records = json.loads(text)
            except json.JSONDecodeError as err:
                raise InvalidInputError(
                    f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})"
                ) from err
            if not isinstance(records, list):
                raise InvalidInputError(f"{path}: expected a JSON list of objects")
            for number, record in enumerate(records, start=1):
                yield f"{path}: record {number}", record
            return
        handle.seek(0)
        for lineno, raw in enumerate(handle, start=1):
            line = _decode(path, raw, lineno)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidInputError(
                    f"{path}:{lineno}: not a JSON line ({err.msg}, column {err.colno})"
                ) from err
            yield f"{path}:{lineno}", record


def read_json_texts(path: Path, text_column: str) -> list[str]:
    """The ``text_column`` field of every record of a ``.jsonl`` / ``.json`` file.

    Raises:
        InvalidInputError: Not a regular file, not UTF-8, not JSON, or a record without the
            field or with a field that is not text; the message names the file and the line.
    """
    docs: list[str] = []
    for where, record in _json_records(path):
        if not isinstance(record, dict) or text_column not in record:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise InvalidInputError(
                f"{where}: record has no text column {text_column!r} "
                f"(found {keys}); pass text_column",
                option="text_column",
            )
        text = record[text_column]
        if not isinstance(text, str):
            raise InvalidInputError(
                f"{where}: field {text_column!r} holds {type(text).__name__}, not text"
            )
        docs.append(text)
    return docs


def read_text(path: Path) -> str:
    """The UTF-8 text of a regular file (see :func:`_require_regular_file`, :func:`_decode`)."""
    _require_regular_file(path)
    return _decode(path, path.read_bytes())


def _decode(path: Path, data: bytes, first_line: int = 1) -> str:
    """``data`` (read from ``path`` starting at line ``first_line``) as UTF-8 text.

    Raises:
        InvalidInputError: The bytes are not UTF-8, naming ``path:line``.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        raise InvalidInputError(
            f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x}); data files must hold "
            "text"
        ) from err


def _require_regular_file(path: Path) -> None:
    """Refuse what is not a regular file before opening it.

    A device such as ``/dev/zero`` never ends, and opening a FIFO waits for a writer.

    Raises:
        InvalidInputError: ``path`` is a device, a FIFO, a socket or a folder.
    """
    kind = _file_kind(path)
    if kind != "file":
        raise InvalidInputError(
            f"data_name {path} is not a regular file ({kind}); pass a text or JSON file, or a "
            "folder of them",
            option="data_name",
        )


def _file_kind(path: Path) -> str:
    """``"file"`` for a regular file (after links), else what it is, without opening it."""
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return "file"
    kinds = (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")
