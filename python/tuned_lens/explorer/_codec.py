"""Typed arrays inside the explorer's JSON: little-endian bytes, base64-encoded.

An encoded array is ``{"dtype": "f16", "shape": [R, T, k], "data": "<base64>"}``. Base64 of
float16 / uint16 values costs 2.67 bytes per number, against 6-10 for decimal text, and the
page decodes it into a typed array without parsing numbers one by one.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidInputError

__all__ = ["DTYPES", "decode_array", "encode_array", "index_dtype"]

#: Short dtype names of the schema -> numpy little-endian dtypes.
DTYPES: dict[str, str] = {
    "f16": "<f2",
    "f32": "<f4",
    "u8": "<u1",
    "u16": "<u2",
    "u32": "<u4",
    "i32": "<i4",
}


def index_dtype(count: int) -> str:
    """The smallest unsigned dtype name that holds indices ``0 .. count - 1``."""
    return "u16" if count <= 0xFFFF else "u32"


def encode_array(values: NDArray[Any], dtype: str) -> dict[str, Any]:
    """Encode an array as ``{"dtype", "shape", "data"}``.

    Args:
        values: Any numeric array; it is cast to ``dtype`` (float16 rounds to nearest,
            keeping NaN and ±inf).
        dtype: A key of :data:`DTYPES`.

    Returns:
        The JSON-ready dict.
    """
    if dtype not in DTYPES:
        raise InvalidInputError(f"unknown array dtype {dtype!r}", option="dtype")
    array = np.asarray(values)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.ascontiguousarray(array.astype(DTYPES[dtype]))
    return {
        "dtype": dtype,
        "shape": [int(n) for n in array.shape],
        "data": base64.b64encode(cast.tobytes()).decode("ascii"),
    }


def decode_array(encoded: Any, *, name: str = "array") -> NDArray[Any]:
    """Decode what :func:`encode_array` wrote (float arrays come back as float32).

    Args:
        encoded: The ``{"dtype", "shape", "data"}`` dict.
        name: What the array is, for error messages.

    Returns:
        The array, shaped as recorded.

    Raises:
        InvalidInputError: The dict is malformed, or its byte count does not fit its shape.
    """
    if not isinstance(encoded, dict) or set(encoded) != {"dtype", "shape", "data"}:
        raise InvalidInputError(f"{name} must be a {{dtype, shape, data}} object", option="data")
    dtype = DTYPES.get(encoded["dtype"]) if isinstance(encoded["dtype"], str) else None
    shape = encoded["shape"]
    if dtype is None:
        raise InvalidInputError(f"{name} has unknown dtype {encoded['dtype']!r}", option="data")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise InvalidInputError(f"{name} has a malformed shape {shape!r}", option="data")
    try:
        raw = base64.b64decode(str(encoded["data"]), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InvalidInputError(f"{name} holds invalid base64: {err}", option="data") from None
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != count * np.dtype(dtype).itemsize:
        raise InvalidInputError(
            f"{name} has {len(raw)} bytes, its shape {shape} needs "
            f"{count * np.dtype(dtype).itemsize}",
            option="data",
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    return array.astype(np.int64)
