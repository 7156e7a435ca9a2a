"""Find lens files in a local folder, the Hugging Face cache, or on the Hub.

A lens is a folder with ``config.json`` and a parameter file (``params.safetensors``, written by
this package, or ``params.pt``, written by the original library). Resolution order:

1. ``resource_id`` is a local folder holding both files;
2. the Hub repository (default: the Space ``AlignmentResearch/tuned-lens``, folder
   ``lens/<resource_id>/``; override with ``repo_id``/``repo_type`` or the environment
   variables ``TUNED_LENS_REPO_ID`` / ``TUNED_LENS_REPO_TYPE``) through ``hf_hub_download``,
   which reuses the Hugging Face cache and makes no network calls when ``HF_HUB_OFFLINE=1``.

A ``.safetensors`` parameter file is preferred to a pickle of the same stem when both exist.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tuned_lens.errors import InvalidInputError, LensFileError
from tuned_lens.hub import hub_offline

__all__ = [
    "DEFAULT_REPO_ID",
    "DEFAULT_REPO_TYPE",
    "available_lens_artifacts",
    "load_lens_artifacts",
]

DEFAULT_REPO_ID = "AlignmentResearch/tuned-lens"
DEFAULT_REPO_TYPE = "space"


def _params_candidates(ckpt_file: str) -> list[str]:
    """Parameter file names to try, safetensors first: ``params.pt`` -> [.safetensors, .pt]."""
    stem = PurePosixPath(ckpt_file)
    preferred = str(stem.with_suffix(".safetensors"))
    return [preferred, ckpt_file] if preferred != ckpt_file else [ckpt_file]


def _check_resource_id(resource_id: str) -> str:
    if not isinstance(resource_id, str) or not resource_id.strip():
        raise InvalidInputError(
            f"resource_id must be a non-empty string, got {resource_id!r}", option="resource_id"
        )
    path = PurePosixPath(resource_id.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or resource_id.startswith("~"):
        raise InvalidInputError(
            f"invalid lens resource id {resource_id!r}: Hub ids may not be absolute paths or "
            "contain '..' (use an existing local folder to load a lens from disk)",
            option="resource_id",
        )
    return str(path)


def _repo_defaults(repo_id: str | None, repo_type: str | None) -> tuple[str, str]:
    repo_id = repo_id or os.environ.get("TUNED_LENS_REPO_ID") or DEFAULT_REPO_ID
    repo_type = repo_type or os.environ.get("TUNED_LENS_REPO_TYPE") or DEFAULT_REPO_TYPE
    return repo_id, repo_type


def _local_artifacts(folder: Path, config_file: str, ckpt_file: str) -> tuple[Path, Path] | None:
    config_path = folder / config_file
    if not config_path.is_file():
        return None
    for name in _params_candidates(ckpt_file):
        if (folder / name).is_file():
            return config_path, folder / name
    return None


def _from_local_folder(folder: Path, config_file: str, ckpt_file: str) -> tuple[Path, Path]:
    """The lens files in an existing local ``folder``, or an error listing what it holds."""
    found = _local_artifacts(folder, config_file, ckpt_file)
    if found is not None:
        return found
    present = sorted(p.name for p in folder.iterdir())
    raise LensFileError(
        f"Could not find lens at the specified folder {str(folder)!r}: it must hold "
        f"{config_file!r} and one of {_params_candidates(ckpt_file)}; it holds {present}"
    )


@dataclass(frozen=True)
class _HubLocation:
    """Where on the Hub a lens is looked for."""

    repo_id: str
    repo_type: str
    revision: str
    subfolder: str
    cache_dir: str | None

    def folder(self, lens_id: str) -> str:
        return f"{self.subfolder}/{lens_id}" if self.subfolder else lens_id

    def download(self, lens_id: str, name: str) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(
            hf_hub_download(
                self.repo_id,
                name,
                subfolder=self.folder(lens_id),
                repo_type=self.repo_type,
                revision=self.revision,
                cache_dir=self.cache_dir,
                # huggingface_hub reads HF_HUB_OFFLINE at import; honour it if set later too.
                local_files_only=hub_offline(),
            )
        )


def _hub_not_found_errors() -> tuple[type[Exception], ...]:
    """The exceptions with which ``hf_hub_download`` says a file is not available."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    return (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        OfflineModeIsEnabled,
        HfHubHTTPError,
        FileNotFoundError,
    )


def _download_lens(
    hub: _HubLocation, lens_id: str, config_file: str, ckpt_file: str
) -> tuple[Path, Path]:
    """Download (or find in the cache) the config and the first parameter file that exists.

    Raises:
        One of :func:`_hub_not_found_errors`: a file is not available.
    """
    not_found = _hub_not_found_errors()
    config_path = hub.download(lens_id, config_file)
    errors: list[Exception] = []
    for name in _params_candidates(ckpt_file):
        try:
            return config_path, hub.download(lens_id, name)
        except not_found as err:
            errors.append(err)
    raise errors[-1]


def _not_found_on_hub(
    resource_id: str,
    hub: _HubLocation,
    lens_id: str,
    files: tuple[str, str],
    cause: Exception,
) -> LensFileError:
    """The error for a lens that is neither a local folder nor on the Hub (lists what is)."""
    config_file, ckpt_file = files
    available = _describe_available(
        hub.repo_id,
        hub.repo_type,
        hub.revision,
        config_file,
        ckpt_file,
        hub.subfolder,
        hub.cache_dir,
    )
    where = (
        f"{hub.repo_type} {hub.repo_id!r} (revision {hub.revision!r}, "
        f"folder {hub.folder(lens_id)!r})"
    )
    mode = " in the local cache (HF_HUB_OFFLINE is set)" if hub_offline() else ""
    return LensFileError(
        f"Could not find lens at the specified resource id {resource_id!r}: not a local "
        f"folder, and not found in {where}{mode}. {available} ({type(cause).__name__})"
    )


def load_lens_artifacts(
    resource_id: str | os.PathLike[str],
    repo_id: str | None = None,
    repo_type: str | None = None,
    revision: str = "main",
    config_file: str = "config.json",
    ckpt_file: str = "params.pt",
    subfolder: str = "lens",
    cache_dir: str | None = None,
) -> tuple[Path, Path]:
    """Find a lens's config and parameter files, locally first, then on the Hub.

    Args:
        resource_id: A local folder, or the lens id on the Hub (usually the model's name, e.g.
            ``"gpt2"`` or ``"EleutherAI/pythia-160m-deduped"``).
        repo_id: Hub repository holding lenses; default ``TUNED_LENS_REPO_ID`` or
            ``"AlignmentResearch/tuned-lens"``.
        repo_type: ``"space"``, ``"model"`` or ``"dataset"``; default ``TUNED_LENS_REPO_TYPE``
            or ``"space"``.
        revision: Git revision of the Hub repository.
        config_file: Name of the config file inside the lens folder.
        ckpt_file: Name of the parameter file; a ``.safetensors`` file of the same stem is
            preferred when present.
        subfolder: Folder of the repository that holds the lenses (``<subfolder>/<id>/``).
        cache_dir: Hugging Face cache directory (default: the standard hub cache).

    Returns:
        ``(config_path, params_path)``.

    Raises:
        LensFileError: If the lens cannot be found (the message lists what exists).
        InvalidInputError: If the id is not a safe relative path.
    """
    resource_id = os.fspath(resource_id)
    if not isinstance(resource_id, str) or not resource_id.strip():
        # Path("") is the current folder: an empty id must never load whatever lies there.
        _check_resource_id(resource_id)  # raises
    local = Path(os.path.expanduser(resource_id))
    if local.is_dir():
        return _from_local_folder(local, config_file, ckpt_file)
    lens_id = _check_resource_id(resource_id)
    hub = _HubLocation(*_repo_defaults(repo_id, repo_type), revision, subfolder, cache_dir)
    try:
        return _download_lens(hub, lens_id, config_file, ckpt_file)
    except _hub_not_found_errors() as err:
        files = (config_file, ckpt_file)
        raise _not_found_on_hub(resource_id, hub, lens_id, files, err) from err


def _describe_available(*args: object) -> str:
    try:
        lenses = available_lens_artifacts(*args)  # type: ignore[arg-type]
    except Exception as err:  # listing is best effort: it only decorates the error message
        return f"Could not list the available lenses ({type(err).__name__})."
    if not lenses:
        return "No lenses are available there."
    shown = sorted(lenses)
    more = f" and {len(shown) - 30} more" if len(shown) > 30 else ""
    return f"Available lenses: {', '.join(shown[:30])}{more}."


def _has_lens_files(names: set[str], config_file: str, ckpt_file: str) -> bool:
    return config_file in names and any(c in names for c in _params_candidates(ckpt_file))


def _cached_lenses(
    repo_id: str,
    repo_type: str,
    revision: str,
    config_file: str,
    ckpt_file: str,
    subfolder: str,
    cache_dir: str | None,
) -> set[str]:
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    repo_folder = cache / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    ref = repo_folder / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    root = repo_folder / "snapshots" / commit / subfolder
    if not root.is_dir():
        raise FileNotFoundError(f"no cached snapshot of {repo_id} at revision {revision!r}")
    found = set()
    for config in root.rglob(config_file):
        folder = config.parent
        names = {p.name for p in folder.iterdir()}
        if _has_lens_files(names, config_file, ckpt_file):
            found.add(folder.relative_to(root).as_posix())
    return found


def available_lens_artifacts(
    repo_id: str,
    repo_type: str,
    revision: str = "main",
    config_file: str = "config.json",
    ckpt_file: str = "params.pt",
    subfolder: str = "lens",
    cache_dir: str | None = None,
) -> set[str]:
    """List the lens ids in a Hub repository (or, offline, in its cached snapshot).

    Args:
        repo_id: Hub repository, e.g. ``"AlignmentResearch/tuned-lens"``.
        repo_type: ``"space"``, ``"model"`` or ``"dataset"``.
        revision: Git revision.
        config_file: Config file name a lens folder must hold.
        ckpt_file: Parameter file name (its ``.safetensors`` sibling also counts).
        subfolder: Folder of the repository holding the lenses.
        cache_dir: Hugging Face cache directory, used when ``HF_HUB_OFFLINE`` is set.

    Returns:
        Lens ids relative to ``subfolder``, e.g. ``{"gpt2", "EleutherAI/pythia-160m-deduped"}``.

    Raises:
        FileNotFoundError: If the revision (or, offline, its cached snapshot) does not exist.
    """
    if hub_offline():
        return _cached_lenses(
            repo_id, repo_type, revision, config_file, ckpt_file, subfolder, cache_dir
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        files = HfApi().list_repo_files(repo_id, repo_type=repo_type, revision=revision)
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"{repo_id} has no revision {revision!r}") from err
    by_folder: dict[str, set[str]] = {}
    prefix = f"{subfolder}/" if subfolder else ""
    for file in files:
        if not file.startswith(prefix):
            continue
        folder, _, name = file[len(prefix) :].rpartition("/")
        if folder:
            by_folder.setdefault(folder, set()).add(name)
    return {f for f, names in by_folder.items() if _has_lens_files(names, config_file, ckpt_file)}
