"""Lenses as Hugging Face model repositories: find a lens folder, and push one.

A published lens is a model repository (or a folder of one) holding what
``TunedLens.save_pretrained`` writes: ``config.json``, ``params.safetensors``, ``README.md`` (the
model card of :mod:`tuned_lens.model_card`), ``provenance.json`` and ``lens_manifest.json``.

:func:`resolve_lens_folder` turns a local folder or a repository id into a folder on disk
through :func:`huggingface_hub.snapshot_download`, which reuses the Hugging Face cache and reads
only the cache when :func:`tuned_lens.hub.hub_offline` says so. :func:`push_lens_folder` sends a
folder as one commit with :meth:`huggingface_hub.HfApi.create_commit`. The original library's
Space of lenses is still read by :func:`tuned_lens.load_artifacts.load_lens_artifacts`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from tuned_lens.errors import InvalidInputError, LensFileError
from tuned_lens.hub import hub_offline
from tuned_lens.lens_folder import LOCK_NAME

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi

__all__ = ["lens_commit_operations", "push_lens_folder", "resolve_lens_folder"]

_DOWNLOADED = ("config.json", "*.safetensors", "params.pt", "*.md", "*.json")


def _check_subfolder(subfolder: str | None) -> str | None:
    if not subfolder:
        return None
    path = PurePosixPath(subfolder.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise InvalidInputError(
            f"subfolder {subfolder!r} must be a relative folder of the repository",
            option="subfolder",
        )
    return path.as_posix()


def _snapshot_errors() -> tuple[type[Exception], ...]:
    """What ``snapshot_download`` raises for a repository or revision that is not available."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    return (LocalEntryNotFoundError, HfHubHTTPError, HFValidationError, OSError)


def resolve_lens_folder(
    repo_id_or_dir: str | os.PathLike[str],
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    repo_type: str = "model",
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder holding a lens: ``repo_id_or_dir`` itself, or a Hub snapshot of it.

    Args:
        repo_id_or_dir: An existing local folder, or a Hub repository id (``"org/name"``).
        revision: Branch, tag or commit of the repository (default ``main``).
        subfolder: Folder of the repository (or of the local folder) that holds the lens.
        repo_type: ``"model"`` (default), ``"dataset"`` or ``"space"``.
        cache_dir: Hugging Face cache folder (default: the standard hub cache).
        token: Hub token (``None``: the saved login, if any).
        local_files_only: Read only the cache (also when ``HF_HUB_OFFLINE`` is set).

    Returns:
        The folder (inside the cache for a repository: a ``snapshots/<commit>`` folder).

    Raises:
        LensFileError: The repository, revision or folder is not available (offline: not in
            the cache); the message names the repository and revision.
        InvalidInputError: An empty id or a subfolder that leaves the repository.
    """
    name = os.fspath(repo_id_or_dir)
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(
            f"repo_id_or_dir must be a non-empty string, got {name!r}", option="repo_id_or_dir"
        )
    sub = _check_subfolder(subfolder)
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        folder = local / sub if sub else local
    else:
        folder = _snapshot(name, revision, sub, repo_type, cache_dir, token, local_files_only)
    if not folder.is_dir():
        raise LensFileError(f"lens folder {str(folder)!r} does not exist")
    return folder


def _snapshot(
    repo_id: str,
    revision: str | None,
    sub: str | None,
    repo_type: str,
    cache_dir: str | os.PathLike[str] | None,
    token: str | bool | None,
    local_files_only: bool,
) -> Path:
    from huggingface_hub import snapshot_download

    offline = local_files_only or hub_offline()
    patterns = [f"{sub}/{p}" if sub else p for p in _DOWNLOADED]
    try:
        root = snapshot_download(
            repo_id,
            repo_type=repo_type,
            revision=revision,
            cache_dir=None if cache_dir is None else os.fspath(cache_dir),
            token=token,
            local_files_only=offline,
            allow_patterns=patterns,
        )
    except _snapshot_errors() as err:
        where = "in the local Hugging Face cache (offline)" if offline else "on the Hub"
        raise LensFileError(
            f"lens {repo_id!r} (a {repo_type} repository, revision {revision or 'main'!r}) is "
            f"not a local folder and was not found {where}: {type(err).__name__}: {err!s:.300}"
        ) from err
    folder = Path(str(root))
    return folder / sub if sub else folder


def _lens_files(folder: Path) -> Iterable[Path]:
    """The files of a saved lens folder to publish (no lock, temporaries or sub-folders)."""
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name != LOCK_NAME:
            yield path


def lens_commit_operations(
    folder: str | Path, *, path_in_repo: str | None = None
) -> list[CommitOperationAdd]:
    """One :class:`huggingface_hub.CommitOperationAdd` per file of a lens folder.

    The bytes are read now, so the operations stay valid after ``folder`` is removed.

    Args:
        folder: A folder written by ``save_pretrained``.
        path_in_repo: Folder of the repository to put the files in (default: its root).
    """
    from huggingface_hub import CommitOperationAdd

    prefix = _check_subfolder(path_in_repo)
    return [
        CommitOperationAdd(
            path_in_repo=f"{prefix}/{path.name}" if prefix else path.name,
            path_or_fileobj=path.read_bytes(),
        )
        for path in _lens_files(Path(folder))
    ]


def push_lens_folder(
    folder: str | Path,
    repo_id: str,
    *,
    api: HfApi | None = None,
    revision: str | None = None,
    commit_message: str = "Upload tuned lens",
    commit_description: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    create_pr: bool = False,
    path_in_repo: str | None = None,
) -> CommitInfo:
    """Create the model repository if needed and commit a lens folder to it.

    Calls, in order, ``api.create_repo(exist_ok=True)``, ``api.create_branch`` (for a
    ``revision`` other than ``main``, unless ``create_pr``) and ``api.create_commit`` with the
    operations of :func:`lens_commit_operations`.

    Returns:
        The commit, as ``create_commit`` returns it (with the PR's URL when ``create_pr``).

    Raises:
        InvalidInputError: Offline (``HF_HUB_OFFLINE``), or an empty ``repo_id``.
    """
    from huggingface_hub import HfApi

    if not isinstance(repo_id, str) or not repo_id.strip():
        raise InvalidInputError(f"repo_id must be a Hub id, got {repo_id!r}", option="repo_id")
    if hub_offline():
        raise InvalidInputError(
            f"cannot push to {repo_id!r}: the Hub is offline (HF_HUB_OFFLINE is set)",
            option="repo_id",
        )
    api = api or HfApi()
    operations = lens_commit_operations(folder, path_in_repo=path_in_repo)
    api.create_repo(repo_id, repo_type="model", private=private, token=token, exist_ok=True)
    if revision not in (None, "main") and not create_pr:
        api.create_branch(repo_id, branch=revision, repo_type="model", token=token, exist_ok=True)
    return api.create_commit(
        repo_id,
        operations=operations,
        commit_message=commit_message,
        commit_description=commit_description,
        revision=revision,
        create_pr=create_pr,
        repo_type="model",
        token=token,
    )
