"""A small PNG reader (8-bit grey/RGB/RGBA, not interlaced) for checking screenshots.

Pillow is not a dependency of the project, and a screenshot check only needs the pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type → samples per pixel


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path: str | Path) -> tuple[int, int, int, list[bytes]]:
    """Return ``(width, height, channels, rows)``; each row holds ``width * channels`` bytes."""
    data = Path(path).read_bytes()
    if not data.startswith(_SIGNATURE):
        raise ValueError(f"{path} is not a PNG file")
    pos, idat, header = len(_SIGNATURE), bytearray(), None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    if header is None:
        raise ValueError(f"{path} has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace:
        raise ValueError(
            f"unsupported PNG: depth {depth}, colour type {colour}, interlace {interlace}"
        )
    channels = _CHANNELS[colour]
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            up_left = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(left, up, up_left)) & 0xFF
            elif kind != 0:
                raise ValueError(f"bad PNG filter type {kind} in row {y}")
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def colour_summary(path: str | Path, *, step: int = 4) -> tuple[int, float]:
    """Distinct RGB colours and the fraction of non-white pixels, sampling every ``step`` pixel."""
    width, height, channels, rows = read_png(path)
    colours: set[tuple[int, ...]] = set()
    non_white = total = 0
    for row in rows[::step]:
        for x in range(0, width, step):
            pixel = tuple(row[x * channels : x * channels + min(channels, 3)])
            colours.add(pixel)
            total += 1
            non_white += any(value < 245 for value in pixel)
    return len(colours), non_white / max(total, 1)
