"""A lens's ``config.json``: :class:`TunedLensConfig`, read and written safely.

Every malformed config (not UTF-8, not JSON, nested too deeply, integers of thousands of digits,
fields of the wrong type) is a :class:`~tuned_lens.errors.LensFileError` naming the file and,
where there is one, the field. ``tuned_lens.lens_io`` re-exports everything here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuned_lens._atomic import atomic_path
from tuned_lens.errors import InvalidInputError, LensFileError

__all__ = [
    "TunedLensConfig",
    "expected_param_shapes",
    "parse_lens_config",
    "read_file_once",
    "read_lens_config",
    "write_lens_config",
]

# A lens config is a handful of keys; refuse anything absurd before parsing it.
MAX_CONFIG_BYTES = 1 << 20
# No field of a lens config needs an integer this long (the d_model of any model is < 10**7).
_MAX_INT_DIGITS = 30
_TEXT_FIELDS = ("base_model_name_or_path", "lens_type")
_OPTIONAL_TEXT_FIELDS = ("base_model_revision", "unembed_hash")


@dataclass
class TunedLensConfig:
    """Metadata of a tuned lens, stored as ``config.json`` next to its parameters.

    Attributes:
        base_model_name_or_path: Name or path of the model the lens was trained on.
        d_model: Width of the residual stream.
        num_hidden_layers: Number of translators (= the model's number of blocks).
        bias: Whether the translators have a bias.
        base_model_revision: Git revision of the base model, if known.
        unembed_hash: Fingerprint of the unembedding (see ``Unembed.unembedding_hash``).
        lens_type: Kind of lens; only ``"linear_tuned_lens"`` exists.
        rank: ``None`` for full ``(d, d)`` translators (the original format); ``r`` for
            low-rank translators ``h + U V^T h + b`` with ``U, V`` of shape ``(d, r)``.
            Written to ``config.json`` only when set, so full-rank files keep their format.
    """

    base_model_name_or_path: str
    d_model: int
    num_hidden_layers: int
    bias: bool = True
    base_model_revision: str | None = None
    unembed_hash: str | None = None
    lens_type: str = "linear_tuned_lens"
    rank: int | None = None

    def __post_init__(self) -> None:
        for name in ("d_model", "num_hidden_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(
                    f"{name} must be a positive integer, got {value!r:.60}", option=name
                )
        if not isinstance(self.bias, bool):
            raise InvalidInputError(f"bias must be a bool, got {self.bias!r:.60}", option="bias")
        for name in _TEXT_FIELDS + _OPTIONAL_TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) and not (value is None and name in _OPTIONAL_TEXT_FIELDS):
                raise InvalidInputError(
                    f"{name} must be a string, got {type(value).__name__} {value!r:.60}",
                    option=name,
                )
        rank = self.rank
        if rank is not None and (
            isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= self.d_model
        ):
            raise InvalidInputError(
                f"rank must be an integer in 1..d_model={self.d_model} or None, got {rank!r:.60}",
                option="rank",
            )
        if self.lens_type != "linear_tuned_lens":
            raise InvalidInputError(
                f"unsupported lens_type {self.lens_type!r:.60}", option="lens_type"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict (field order = JSON key order).

        ``rank`` appears only for a low-rank lens: a full-rank config is the original's.
        """
        data = dataclasses.asdict(self)
        if data["rank"] is None:
            del data["rank"]
        return data

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TunedLensConfig:
        """Build a config from a dict, dropping unknown keys with a warning.

        The misspelt ``unemebd_hash`` of configs written by early versions of the original is
        read as ``unembed_hash``; a missing hash is fine.

        Raises:
            TypeError: If ``config_dict`` is not a dict or a required key is missing.
            InvalidInputError: If a field has the wrong type or value (``option`` names it).
        """
        if not isinstance(config_dict, dict):
            raise TypeError(
                f"a lens config must be a JSON object, got {type(config_dict).__name__}"
            )
        data = copy.deepcopy(config_dict)
        if "unemebd_hash" in data:
            legacy = data.pop("unemebd_hash")
            data.setdefault("unembed_hash", legacy)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            warnings.warn(
                f"ignoring unknown keys in lens config: {unknown}", UserWarning, stacklevel=2
            )
            for key in unknown:
                del data[key]
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in data
        ]
        if required:
            raise TypeError(f"lens config is missing required keys: {required}")
        return cls(**data)


def expected_param_shapes(config: TunedLensConfig, layer: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of translator ``layer``'s parameters: ``"{i}.weight"`` ``(d, d)`` for
    a full lens, ``"{i}.u"`` and ``"{i}.v"`` ``(d, rank)`` for a low-rank one, plus
    ``"{i}.bias"`` ``(d,)`` when the lens has biases."""
    d, i = config.d_model, layer
    if config.rank is None:
        shapes: dict[str, tuple[int, ...]] = {f"{i}.weight": (d, d)}
    else:
        shapes = {f"{i}.u": (d, config.rank), f"{i}.v": (d, config.rank)}
    if config.bias:
        shapes[f"{i}.bias"] = (d,)
    return shapes


def read_file_once(path: Path, what: str, limit: int | None = None) -> bytes:
    """The bytes of ``path`` from one open and one read (a concurrent rename cannot mix two
    versions), refused before reading when the file is larger than ``limit``.

    Raises:
        LensFileError: If the file cannot be read or is larger than ``limit``.
    """
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if limit is not None and size > limit:
                raise LensFileError(
                    f"{what} {path} is {size} bytes, more than the {limit} it may hold; "
                    "refusing to read it"
                )
            data = handle.read() if limit is None else handle.read(limit + 1)
    except OSError as err:
        raise LensFileError(f"cannot read {what} {path}: {err}") from err
    if limit is not None and len(data) > limit:
        raise LensFileError(f"{what} {path} grew past {limit} bytes while being read")
    return data


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def parse_lens_config(data: bytes, path: str | Path) -> TunedLensConfig:
    """Parse and validate the bytes of a lens config read from ``path``.

    Raises:
        LensFileError: If the bytes are not UTF-8 JSON holding a valid config; the message
            names ``path`` and, for a bad field, the field.
    """
    try:
        document = json.loads(data.decode("utf-8"), parse_int=_bounded_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        message = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise LensFileError(f"lens config {path} is not valid JSON: {message:.200}") from err
    if not isinstance(document, dict):
        raise LensFileError(
            f"lens config {path} must be a JSON object, got {type(document).__name__}"
        )
    try:
        return TunedLensConfig.from_dict(document)
    except InvalidInputError as err:
        raise LensFileError(f"invalid lens config {path}: field {err.option}: {err}") from err
    except (TypeError, ValueError) as err:
        raise LensFileError(f"invalid lens config {path}: {err}") from err


def read_lens_config(path: str | Path) -> TunedLensConfig:
    """Read and validate a lens ``config.json`` (at most 1 MiB, read once).

    Unknown keys are dropped with a warning, the legacy key ``unemebd_hash`` is accepted and a
    missing hash is fine (see ``TunedLensConfig.from_dict``).

    Raises:
        LensFileError: If the file is missing, too large, not JSON, or not a valid config.
    """
    path = Path(path)
    return parse_lens_config(read_file_once(path, "lens config", MAX_CONFIG_BYTES), path)


def write_lens_config(path: str | Path, config: TunedLensConfig) -> None:
    """Write ``config`` as single-line JSON (the original's layout), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config.to_dict()), encoding="utf-8")
