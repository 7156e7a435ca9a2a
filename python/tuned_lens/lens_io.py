"""Reading and writing lens files safely.

A lens folder holds ``config.json`` (a :class:`TunedLensConfig`, from ``lens_config``) and the
translators' parameters with keys ``"{i}.weight"`` (shape ``(d, d)``) and ``"{i}.bias"`` (shape
``(d,)``) for ``i`` in ``0 .. L-1``. We write ``params.safetensors``; we read that and the
original library's ``params.pt``.

``params.pt`` is a PyTorch zip archive (``<folder>/data.pkl``, a pickle whose persistent ids name
the storages ``<folder>/data/<key>``, and ``<folder>/byteorder``). It is read by :class:`_TensorOnlyUnpickler`, which resolves only an allow-list of globals (an
``OrderedDict`` and the tensor rebuild functions, re-implemented here) and rebuilds tensors from
the raw blobs itself. Anything else the pickle names (``os.system``, ``builtins.eval``, ...) is
refused with :class:`UnsafeLensFileError` before it could be called: no pickled code runs.

Files are read with one open and one read and parsed from those bytes (a writer renaming a new
version into place cannot mix two). With the config known, a file may be no larger than it
justifies, and nothing is materialised beyond that: views may not overlap (nor have stride 0),
tensors must have an expected shape, and all copies stay within the expected size.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuned_lens._atomic import write_bytes_atomically
from tuned_lens.errors import InvalidInputError, LensFileError, UnsafeLensFileError
from tuned_lens.lens_config import (
    TunedLensConfig,
    expected_param_shapes,
    parse_lens_config,
    read_file_once,
    read_lens_config,
    write_lens_config,
)

__all__ = [
    "LensFileError",
    "UnsafeLensFileError",
    "TunedLensConfig",
    "read_lens_config",
    "write_lens_config",
    "parse_lens_config",
    "parse_lens_params",
    "params_byte_limit",
    "read_lens_params",
    "write_lens_params",
    "validate_lens_params",
    "check_params_size",
    "encode_lens_params",
    "expected_param_shapes",
    "read_torch_zip_state_dict",
]

_SAFE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# -- parameters ----------------------------------------------------------------------------------


def write_lens_params(path: str | Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Write translator parameters as safetensors (contiguous CPU copies, dtype kept).

    Raises:
        InvalidInputError: If ``path`` does not end in ``.safetensors`` (we never write
            pickles).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidInputError(
            f"lens parameters are written as safetensors; use a '.safetensors' file name, "
            f"not {path.name!r}"
        )
    write_bytes_atomically(path, encode_lens_params(state_dict))


def encode_lens_params(state_dict: Mapping[str, torch.Tensor]) -> bytes:
    """The safetensors bytes of ``state_dict`` (contiguous CPU copies, dtype kept)."""
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    return save(tensors, metadata={"format": "pt", "producer": "tuned-lens-rs"})


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
    tensors = parse_lens_params(read_file_once(path, "lens parameters"), path)
    if map_location is not None:
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    return tensors


def params_byte_limit(config: TunedLensConfig) -> int:
    """The largest parameter file ``config`` justifies, in bytes: every expected element in
    float64 plus 1 MiB of headers. A larger file is refused unread."""
    d, n = config.d_model, config.num_hidden_layers
    per_layer = d * d if config.rank is None else 2 * d * config.rank
    return n * (per_layer + (d if config.bias else 0)) * 8 + (1 << 20)


def parse_lens_params(
    data: bytes, path: str | Path, config: TunedLensConfig | None = None
) -> dict[str, torch.Tensor]:
    """Parse the bytes of a parameter file (safetensors or a torch zip archive).

    The format is detected from the first bytes, not the name. With ``config``, the size of
    ``data`` is checked against :func:`params_byte_limit` first, and a torch archive may only
    rebuild tensors of the expected shapes within the expected total size.

    Raises:
        LensFileError: If the bytes are truncated or corrupt, of an unknown format, or of a
            size or shape ``config`` rules out.
        UnsafeLensFileError: If a pickle references anything outside the allow-list.
    """
    path = Path(path)
    if config is not None and len(data) > params_byte_limit(config):
        raise LensFileError(
            f"lens parameters {path} are {len(data)} bytes, but a lens with "
            f"d_model={config.d_model} and num_hidden_layers={config.num_hidden_layers} needs "
            f"at most {params_byte_limit(config)}; refusing to read them"
        )
    if data.startswith(b"PK"):
        return _read_torch_zip(data, path, config)
    if len(data) >= 9 and data[8:9] == b"{":  # u64 header length, then the JSON header
        return _read_safetensors(data, path)
    if data[:1] == b"\x80":  # a bare pickle (protocol >= 2), e.g. torch's legacy format
        raise UnsafeLensFileError(
            f"refusing to load {path}: it is a bare (non-zip) pickle, which cannot be read "
            "without executing it; re-save it as safetensors or a torch zip archive"
        )
    if len(data) < 9:
        raise LensFileError(f"lens parameters {path} are truncated ({len(data)} bytes)")
    raise LensFileError(f"lens parameters {path} are neither safetensors nor a torch zip archive")


def _read_safetensors(data: bytes, path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as err:  # SafetensorError, ValueError, ... on damaged input
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
    if n > len(state) + 1000:  # refuse before listing n expected keys (n may be huge)
        raise LensFileError(
            f"{source}: {len(state)} parameters do not match the config (num_hidden_layers={n}, "
            f"bias={config.bias}); keys {sorted(state, key=_natural_key)[:8]}"
        )
    expected: dict[str, tuple[int, ...]] = {}
    for i in range(n):
        expected.update(expected_param_shapes(config, i))
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
    """Refuse a file that declares more than :func:`params_byte_limit` allows, unread.

    (:func:`parse_lens_params` with a config checks the same on the bytes it parses.)

    Raises:
        LensFileError: If the declared size exceeds the limit.
    """
    path = Path(path)
    d, n = config.d_model, config.num_hidden_layers
    limit = params_byte_limit(config)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                declared = sum(info.file_size for info in archive.infolist())
        else:
            declared = path.stat().st_size
    except Exception as err:  # OSError, BadZipFile, UnicodeDecodeError, ... on damaged input
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


@dataclass
class _Budget:
    """What a torch archive may still materialise: bytes, and the shapes it may rebuild."""

    bytes_left: int
    shapes: frozenset[tuple[int, ...]] | None = None

    @classmethod
    def for_archive(cls, data: bytes, config: TunedLensConfig | None) -> _Budget:
        if config is None:  # no config: copies may not exceed the file's own size
            return cls(len(data))
        shapes = set(expected_param_shapes(config, 0).values())
        return cls(params_byte_limit(config), frozenset(shapes))


def _check_view(size: tuple[int, ...], stride: tuple[int, ...], offset: int, numel: int) -> None:
    """Refuse a strided view that reads past its storage or whose elements overlap."""
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= numel:
        raise LensFileError(
            f"corrupt tensor record: a tensor of size {size} reads past its storage "
            f"({numel} elements)"
        )
    extent = 1  # elements spanned by the dimensions checked so far, smallest stride first
    for st, n in sorted((st, n) for n, st in zip(size, stride) if n > 1):
        if st < extent:
            raise LensFileError(
                f"corrupt tensor record: a view of size {size} with stride {stride} would "
                "overlap itself (stride 0 or overlapping rows); refusing to expand it"
            )
        extent += (n - 1) * st


def _rebuild_tensor(
    storage: torch.Tensor,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
    *,
    budget: _Budget | None = None,
) -> torch.Tensor:
    """Our own ``torch._utils._rebuild_tensor_v2``: a strided view inside its storage, not
    overlapping itself, of an allowed shape and within ``budget`` -- checked, then copied."""
    del requires_grad, backward_hooks, metadata
    if not isinstance(storage, torch.Tensor):
        raise UnsafeLensFileError("tensor rebuild got something that is not a storage")
    for name, value in (("size", size), ("stride", stride)):
        if not isinstance(value, tuple) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
        ):
            raise LensFileError(f"corrupt tensor record: bad {name} {value!r:.80}")
    if len(size) != len(stride) or not isinstance(storage_offset, int) or storage_offset < 0:
        raise LensFileError("corrupt tensor record: size/stride/offset do not agree")
    if budget is not None and budget.shapes is not None and size not in budget.shapes:
        raise LensFileError(
            f"a tensor of shape {size} is not one of the lens's shapes {sorted(budget.shapes)}"
        )
    if any(s == 0 for s in size):
        return torch.empty(size, dtype=storage.dtype)
    _check_view(size, stride, storage_offset, storage.numel())
    if budget is not None:
        nbytes = math.prod(size) * storage.element_size()
        if nbytes > budget.bytes_left:
            raise LensFileError(
                f"the archive's tensors need more than the {budget.bytes_left} bytes left of "
                "what the file and the config justify; refusing to copy them"
            )
        budget.bytes_left -= nbytes
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

    def __init__(
        self,
        data: bytes,
        archive: zipfile.ZipFile,
        prefix: str,
        path: Path,
        *,
        budget: _Budget | None = None,
    ):
        super().__init__(io.BytesIO(data))
        self._budget = budget
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
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            budget = self._budget  # a fresh function that charges this archive's budget
            return lambda *args, **kwargs: _rebuild_tensor(*args, **kwargs, budget=budget)
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

    The file is read once; the tensors it rebuilds may not overlap their storage and together
    take no more memory than the file's own size.

    Args:
        path: A PyTorch zip archive (``torch.save`` with the default zip serialisation).

    Returns:
        The dict of tensor name -> CPU tensor (storage locations such as ``cuda:0`` ignored).

    Raises:
        UnsafeLensFileError: If the pickle references anything but tensors and an OrderedDict.
        LensFileError: If the archive is corrupt or does not hold a dict of tensors.
    """
    path = Path(path)
    return _read_torch_zip(read_file_once(path, "lens parameters"), path, None)


def _read_torch_zip(
    data: bytes, path: Path, config: TunedLensConfig | None
) -> dict[str, torch.Tensor]:
    budget = _Budget.for_archive(data, config)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        declared = sum(info.file_size for info in archive.infolist())
        pickles = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
    except Exception as err:  # BadZipFile, UnicodeDecodeError, ValueError, ... on damaged input
        raise LensFileError(f"lens parameters {path} are not a valid zip archive: {err}") from err
    with archive:
        if declared > max(budget.bytes_left, len(data)) + (1 << 20):
            raise LensFileError(
                f"lens parameters {path}: the archive declares {declared} bytes of contents, "
                f"far more than its {len(data)} bytes; refusing to unpack it"
            )
        if len(pickles) != 1:
            raise LensFileError(
                f"{path} is not a torch archive: expected one data.pkl, found {len(pickles)}"
            )
        prefix = pickles[0][: -len("data.pkl")]
        try:
            pickled = archive.read(pickles[0])
            byteorder = (
                archive.read(prefix + "byteorder").decode().strip()
                if prefix + "byteorder" in archive.namelist()
                else "little"
            )
            unpickler = _TensorOnlyUnpickler(pickled, archive, prefix, path, budget=budget)
            unpickler._big_endian = byteorder == "big"
            obj = unpickler.load()
        except LensFileError as err:
            if str(path) in str(err):
                raise
            raise type(err)(f"lens parameters {path}: {err}") from err
        except Exception as err:  # any other failure of a damaged archive is a file error
            raise LensFileError(f"corrupt archive {path}: {type(err).__name__}: {err}") from err
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise LensFileError(f"{path} does not hold a dict of named tensors")
    return dict(obj)
