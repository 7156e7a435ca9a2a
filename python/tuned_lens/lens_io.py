"""Reading and writing lens files safely.

A lens folder holds ``config.json`` (a :class:`TunedLensConfig`, defined here) and the
translators' parameters with keys ``"{i}.weight"`` (shape ``(d, d)``) and ``"{i}.bias"`` (shape
``(d,)``) for ``i`` in ``0 .. L-1``. We write ``params.safetensors``; we read that and the
original library's ``params.pt``.

``params.pt`` is a PyTorch zip archive: ``<folder>/data.pkl`` (a pickle whose persistent ids name
storages), ``<folder>/data/<key>`` (raw little-endian storage bytes) and ``<folder>/byteorder``.
It is read by :class:`_TensorOnlyUnpickler`, which resolves only an allow-list of globals (an
``OrderedDict`` and the tensor rebuild functions, re-implemented here) and rebuilds tensors from
the raw blobs itself. Anything else the pickle names (``os.system``, ``builtins.eval``, ...) is
refused with :class:`UnsafeLensFileError` before it could be called: no pickled code runs.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import pickle
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuned_lens._atomic import atomic_path
from tuned_lens.errors import InvalidInputError, LensFileError, UnsafeLensFileError

__all__ = [
    "LensFileError",
    "UnsafeLensFileError",
    "TunedLensConfig",
    "read_lens_config",
    "write_lens_config",
    "read_lens_params",
    "write_lens_params",
    "validate_lens_params",
    "check_params_size",
    "read_torch_zip_state_dict",
]

# A lens config is a handful of keys; refuse anything absurd before parsing it.
_MAX_CONFIG_BYTES = 1 << 20
_SAFE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


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
    """

    base_model_name_or_path: str
    d_model: int
    num_hidden_layers: int
    bias: bool = True
    base_model_revision: str | None = None
    unembed_hash: str | None = None
    lens_type: str = "linear_tuned_lens"

    def __post_init__(self) -> None:
        for name in ("d_model", "num_hidden_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InvalidInputError(
                    f"{name} must be a positive integer, got {value!r}", option=name
                )
        if not isinstance(self.bias, bool):
            raise TypeError(f"bias must be a bool, got {self.bias!r}")
        if self.lens_type != "linear_tuned_lens":
            raise InvalidInputError(f"unsupported lens_type {self.lens_type!r}", option="lens_type")

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-serialisable dict (field order = JSON key order)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> TunedLensConfig:
        """Build a config from a dict, dropping unknown keys with a warning.

        The misspelt ``unemebd_hash`` of configs written by early versions of the original is
        read as ``unembed_hash``; a missing hash is fine.

        Raises:
            TypeError: If ``config_dict`` is not a dict or a required key is missing.
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


# -- config.json ---------------------------------------------------------------------------------


def read_lens_config(path: str | Path) -> TunedLensConfig:
    """Read and validate a lens ``config.json``.

    Unknown keys are dropped with a warning, the legacy key ``unemebd_hash`` is accepted and a
    missing hash is fine (see ``TunedLensConfig.from_dict``).

    Raises:
        LensFileError: If the file is missing, too large, not JSON, or not a valid config.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise LensFileError(f"cannot read lens config {path}: {err}") from err
    if size > _MAX_CONFIG_BYTES:
        raise LensFileError(f"lens config {path} is {size} bytes; refusing to parse (> 1 MiB)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise LensFileError(f"lens config {path} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise LensFileError(f"lens config {path} must be a JSON object, got {type(data).__name__}")
    try:
        return TunedLensConfig.from_dict(data)
    except (TypeError, ValueError) as err:
        raise LensFileError(f"invalid lens config {path}: {err}") from err


def write_lens_config(path: str | Path, config: TunedLensConfig) -> None:
    """Write ``config`` as single-line JSON (the original's layout), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config.to_dict()), encoding="utf-8")


# -- parameters ----------------------------------------------------------------------------------


def write_lens_params(path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Write translator parameters as safetensors (contiguous CPU copies, dtype kept).

    Raises:
        InvalidInputError: If ``path`` does not end in ``.safetensors`` (we never write
            pickles).
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidInputError(
            f"lens parameters are written as safetensors; use a '.safetensors' file name, "
            f"not {path.name!r}"
        )
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "tuned-lens-rs"})


def read_lens_params(
    path: str | Path,
    map_location: str | torch.device | None = None,
    weights_only: bool = True,
) -> dict[str, torch.Tensor]:
    """Read translator parameters from ``params.safetensors`` or a PyTorch ``params.pt``.

    The format is detected from the file's first bytes, not its name. Pickle archives are read
    with a restricted unpickler that never calls anything but the tensor rebuild steps.

    Args:
        path: The parameter file.
        map_location: Device to move the tensors to (they are read on the CPU; a ``cuda:0``
            location stored in the pickle is ignored).
        weights_only: Accepted for compatibility with ``torch.load``; reading is always
            weights-only, and ``False`` does not enable arbitrary pickles.

    Returns:
        A dict of tensor name -> tensor.

    Raises:
        LensFileError: If the file is missing, truncated or corrupt, or of an unknown format.
        UnsafeLensFileError: If a pickle references anything outside the allow-list.
    """
    del weights_only  # always weights-only
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(9)
    except OSError as err:
        raise LensFileError(f"cannot read lens parameters {path}: {err}") from err
    if head.startswith(b"PK"):
        tensors = read_torch_zip_state_dict(path)
    elif len(head) == 9 and head[8:9] == b"{":  # u64 header length, then the JSON header
        tensors = _read_safetensors(path)
    elif head[:1] == b"\x80":  # a bare pickle (protocol >= 2), e.g. torch's legacy format
        raise UnsafeLensFileError(
            f"refusing to load {path}: it is a bare (non-zip) pickle, which cannot be read "
            "without executing it; re-save it as safetensors or a torch zip archive"
        )
    elif len(head) < 9:
        raise LensFileError(f"lens parameters {path} are truncated ({len(head)} bytes)")
    else:
        raise LensFileError(
            f"lens parameters {path} are neither safetensors nor a torch zip archive"
        )
    if map_location is not None:
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    return tensors


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise LensFileError(
            f"lens parameters {path} are not a valid safetensors file (truncated or corrupt?): "
            f"{err}"
        ) from err


def validate_lens_params(
    state: Mapping[str, torch.Tensor], config: TunedLensConfig, *, source: str = "lens"
) -> None:
    """Check that ``state`` is exactly the translators described by ``config``.

    Raises:
        LensFileError: On missing or unexpected keys, wrong shapes, non-floating dtypes, or
            non-finite values.
    """
    d, n = config.d_model, config.num_hidden_layers
    expected: dict[str, tuple[int, ...]] = {}
    for i in range(n):
        expected[f"{i}.weight"] = (d, d)
        if config.bias:
            expected[f"{i}.bias"] = (d,)
    missing = sorted(set(expected) - set(state), key=_natural_key)
    unexpected = sorted(set(state) - set(expected), key=_natural_key)
    if missing or unexpected:
        raise LensFileError(
            f"{source}: parameters do not match the config (num_hidden_layers={n}, "
            f"bias={config.bias}); missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        )
    for key, shape in expected.items():
        tensor = state[key]
        if not isinstance(tensor, torch.Tensor):
            raise LensFileError(f"{source}: {key} is a {type(tensor).__name__}, not a tensor")
        if tuple(tensor.shape) != shape:
            raise LensFileError(
                f"{source}: {key} has shape {tuple(tensor.shape)}, expected {shape} (d_model={d})"
            )
        if tensor.dtype not in _SAFE_DTYPES:
            raise LensFileError(f"{source}: {key} has dtype {tensor.dtype}, expected a float type")
        if not bool(torch.isfinite(tensor).all()):
            raise LensFileError(f"{source}: {key} contains NaN or infinite values")


def check_params_size(path: str | Path, config: TunedLensConfig) -> None:
    """Refuse a parameter file that declares far more data than ``config`` needs.

    Runs before the tensors are read, so a hostile or mismatched file (a zip entry that claims
    gigabytes, a lens for a much larger model) is rejected without allocating its contents. The
    limit allows float64 storage of every expected element plus 1 MiB of headers.

    Raises:
        LensFileError: If the declared size exceeds the limit.
    """
    path = Path(path)
    d, n = config.d_model, config.num_hidden_layers
    elements = n * (d * d + (d if config.bias else 0))
    limit = elements * 8 + (1 << 20)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        else:
            declared = path.stat().st_size
    except (OSError, zipfile.BadZipFile) as err:
        raise LensFileError(f"cannot read lens parameters {path}: {err}") from err
    if declared > limit:
        raise LensFileError(
            f"lens parameters {path} declare {declared} bytes, but a lens with d_model={d} and "
            f"num_hidden_layers={n} needs at most {limit}; refusing to read them"
        )


def _natural_key(key: str) -> tuple[int, str]:
    head, _, tail = key.partition(".")
    return (int(head), tail) if head.isdigit() else (math.inf, key)  # type: ignore[return-value]


# -- restricted reading of torch zip archives -----------------------------------------------------


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only carries the element dtype."""

    dtype: torch.dtype


_STORAGE_TYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
}


def _rebuild_tensor(
    storage: torch.Tensor,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_tensor_v2``: a bounds-checked strided view, copied."""
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, torch.Tensor):
        raise UnsafeLensFileError("tensor rebuild got something that is not a storage")
    for name, value in (("size", size), ("stride", stride)):
        if not isinstance(value, tuple) or not all(isinstance(v, int) and v >= 0 for v in value):
            raise LensFileError(f"corrupt tensor record: bad {name} {value!r}")
    if len(size) != len(stride) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise LensFileError("corrupt tensor record: size/stride/offset do not agree")
    if any(s == 0 for s in size):
        return torch.empty(size, dtype=storage.dtype)
    last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= storage.numel():
        raise LensFileError(
            f"corrupt tensor record: a tensor of size {size} reads past its storage "
            f"({storage.numel()} elements)"
        )
    return storage.as_strided(size, stride, storage_offset).clone()


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, *_: Any) -> torch.Tensor:
    return data


def _allowed_global(module: str, name: str) -> Any:
    """A *fresh* object for an allow-listed global, or ``None``.

    Fresh objects per lookup mean a hostile pickle's BUILD opcode (which sets attributes on
    whatever it is given) can never alter state shared between loads.
    """
    if (module, name) == ("collections", "OrderedDict"):
        return OrderedDict  # a C type: its attributes cannot be set
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return lambda *args, **kwargs: _rebuild_tensor(*args, **kwargs)
    if (module, name) == ("torch._utils", "_rebuild_parameter"):
        return lambda *args, **kwargs: _rebuild_parameter(*args, **kwargs)
    if module == "torch" and name in _STORAGE_TYPES:
        return _StorageType(_STORAGE_TYPES[name])
    return None


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a state dict of tensors; refuses every other global."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._path = path
        self._big_endian = False
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        found = _allowed_global(module, name)
        if found is None:
            raise UnsafeLensFileError(
                f"refusing to load {self._path}: the pickle references {module}.{name}, which "
                "is not part of a plain tensor state dict (pickled code is never executed)"
            )
        return found

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise UnsafeLensFileError(
                f"refusing to load {self._path}: unexpected persistent id {pid!r:.80}"
            )
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or storage_type.dtype not in _SAFE_DTYPES:
            raise UnsafeLensFileError(
                f"refusing to load {self._path}: storage of type {storage_type!r:.80}"
            )
        if not isinstance(key, str) or not key.isalnum():
            raise LensFileError(f"corrupt archive {self._path}: bad storage key {key!r:.80}")
        if key not in self._storages:
            self._storages[key] = self._load_storage(key, storage_type.dtype, numel)
        return self._storages[key]

    def _load_storage(self, key: str, dtype: torch.dtype, numel: Any) -> torch.Tensor:
        name = f"{self._prefix}data/{key}"
        try:
            blob = self._archive.read(name)
        except KeyError:
            raise LensFileError(f"corrupt archive {self._path}: missing {name}") from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if len(blob) % itemsize or (isinstance(numel, int) and len(blob) < numel * itemsize):
            raise LensFileError(
                f"corrupt archive {self._path}: storage {key} has {len(blob)} bytes, "
                f"expected {numel} elements of {itemsize} bytes"
            )
        if not blob:
            return torch.empty(0, dtype=dtype)
        storage = torch.frombuffer(bytearray(blob), dtype=dtype)
        if self._big_endian:
            storage = _byteswap(storage)
        return storage


def _byteswap(t: torch.Tensor) -> torch.Tensor:
    itemsize = t.element_size()
    raw = t.view(torch.uint8).view(-1, itemsize).flip(-1).contiguous()
    return raw.view(-1).view(t.dtype)


def read_torch_zip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``-d dict of tensors without executing pickled code.

    Args:
        path: A PyTorch zip archive (``torch.save`` with the default zip serialisation).

    Returns:
        The dict of tensor name -> CPU tensor (storage locations such as ``cuda:0`` ignored).

    Raises:
        UnsafeLensFileError: If the pickle references anything but tensors and an OrderedDict.
        LensFileError: If the archive is corrupt or does not hold a dict of tensors.
    """
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except Exception as err:  # BadZipFile, OSError, ValueError, ... on damaged input
        raise LensFileError(f"lens parameters {path} are not a valid zip archive: {err}") from err
    with archive:
        pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise LensFileError(
                f"{path} is not a torch archive: expected one data.pkl, found {len(pickles)}"
            )
        prefix = pickles[0][: -len("data.pkl")]
        try:
            data = archive.read(pickles[0])
            byteorder = (
                archive.read(prefix + "byteorder").decode().strip()
                if prefix + "byteorder" in archive.namelist()
                else "little"
            )
        except Exception as err:  # zipfile raises many types on damaged input
            raise LensFileError(f"corrupt archive {path}: {type(err).__name__}: {err}") from err
        unpickler = _TensorOnlyUnpickler(data, archive, prefix, path)
        unpickler._big_endian = byteorder == "big"
        try:
            obj = unpickler.load()
        except LensFileError:
            raise
        except Exception as err:  # any other failure of a damaged archive is a file error
            raise LensFileError(f"corrupt archive {path}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise LensFileError(f"{path} does not hold a dict of named tensors")
    return dict(obj)
