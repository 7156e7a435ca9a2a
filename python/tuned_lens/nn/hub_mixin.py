"""``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for lenses with a folder format.

The names and keywords follow ``huggingface_hub.ModelHubMixin``; the files are the package's
own lens folder (``config.json`` + ``params.safetensors``, unchanged, so every existing loader
reads them) plus a model card ``README.md`` and ``provenance.json``
(:mod:`tuned_lens.model_card`). Finding and pushing folders is :mod:`tuned_lens.hub_lens`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from ..errors import InvalidInputError, TunedLensError

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import CommitInfo, HfApi

    from ..lens_config import TunedLensConfig

__all__ = ["LensHubMixin"]

_L = TypeVar("_L", bound="LensHubMixin")


class LensHubMixin:
    """Hub-style persistence for a lens class with ``save(path)``, a ``config`` and
    ``from_model_and_pretrained(model, folder)`` (``TunedLens``, full or low-rank).

    Attributes:
        provenance: The lens's provenance record (``provenance.json``: how it was trained and
            evaluated), when it was loaded from or trained into a folder that has one.
    """

    provenance: dict[str, Any] | None = None
    config: TunedLensConfig

    def save(self, path: str | Path) -> None:  # pragma: no cover - implemented by the lens
        raise NotImplementedError

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        model_card: bool = True,
        provenance: dict[str, Any] | None = None,
        repo_id: str | None = None,
    ) -> Path:
        """Save the lens folder: ``config.json``, ``params.safetensors``, ``README.md`` and,
        when there is a provenance record, ``provenance.json``.

        Args:
            save_directory: Folder to create (parents too) or update; its other files are kept,
                and so is a ``README.md`` that tuned-lens did not write.
            model_card: Write the model card ``README.md``.
            provenance: The record to store (default: :attr:`provenance`, else the folder's
                existing ``provenance.json``).
            repo_id: The Hub id the lens will be published as (shown in the card's snippet).

        Returns:
            The folder.

        Raises:
            LensFileError: The folder's existing ``provenance.json`` is corrupt (checked before
                anything is written).
        """
        from ..model_card import read_provenance, write_card_and_provenance

        folder = Path(save_directory)
        record = provenance if provenance is not None else self.provenance
        if record is None and folder.is_dir():
            record = read_provenance(folder)
        self.save(folder)
        write_card_and_provenance(
            folder, self.config, record, repo_id=repo_id, model_card=model_card
        )
        if record is not None:
            self.provenance = record
        return folder

    @classmethod
    def from_pretrained(
        cls: type[_L],
        repo_id_or_dir: str | os.PathLike[str],
        *,
        model: nn.Module | None = None,
        revision: str | None = None,
        subfolder: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        repo_type: str = "model",
        token: str | bool | None = None,
        local_files_only: bool = False,
        map_location: Any = None,
    ) -> _L:
        """Load a lens from a local folder or a Hub repository (``huggingface_hub`` cache).

        Args:
            repo_id_or_dir: A folder written by :meth:`save_pretrained`, or a Hub id.
            model: The model the lens decodes; its layer count and hidden size are checked
                against the lens. ``None`` loads the base model the config names (at its
                recorded revision; cache-only when offline).
            revision: Branch, tag or commit of the repository.
            subfolder: Folder of the repository holding the lens.
            cache_dir: Hugging Face cache folder.
            repo_type: ``"model"`` (default), ``"dataset"`` or ``"space"``.
            token: Hub token.
            local_files_only: Read only the local cache (also with ``HF_HUB_OFFLINE=1``).
            map_location: Where to put the lens's tensors (default: with the unembedding).

        Returns:
            The lens, with :attr:`provenance` set from the folder's ``provenance.json``.

        Raises:
            LensFileError: Not found (the message names the repository and revision), or
                malformed lens files or provenance.
            InvalidInputError: ``model`` is ``None`` and the base model cannot be loaded.
        """
        from ..hub_lens import resolve_lens_folder
        from ..lens_config import read_lens_config
        from ..model_card import read_provenance

        folder = resolve_lens_folder(
            repo_id_or_dir,
            revision=revision,
            subfolder=subfolder,
            repo_type=repo_type,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
        )
        provenance = read_provenance(folder)
        if model is None:
            model = _load_base_model(read_lens_config(folder / "config.json"))
        kwargs = {} if map_location is None else {"map_location": map_location}
        lens = cls.from_model_and_pretrained(model, str(folder), **kwargs)  # type: ignore[attr-defined]
        lens.provenance = provenance
        return lens

    def push_to_hub(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        commit_message: str = "Upload tuned lens",
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        create_pr: bool = False,
        model_card: bool = True,
        api: HfApi | None = None,
    ) -> CommitInfo:
        """Publish the lens as a Hub model repository in one commit.

        The folder is built by :meth:`save_pretrained` in a temporary folder (model card with
        ``repo_id`` in its snippet), then :func:`tuned_lens.hub_lens.push_lens_folder` creates
        the repository if needed and commits ``config.json``, ``params.safetensors``,
        ``README.md``, ``lens_manifest.json`` and ``provenance.json``.

        Args:
            repo_id: ``"org/name"`` of the model repository.
            revision: Branch to commit to (created if missing); default ``main``.
            commit_message: The commit's title.
            commit_description: The commit's (or the PR's) description.
            private: Visibility of a repository that does not exist yet.
            token: Hub token (``None``: the saved login).
            create_pr: Open a pull request instead of committing to the branch.
            model_card: Include the generated ``README.md``.
            api: The :class:`huggingface_hub.HfApi` to use (default: a new one).

        Returns:
            The :class:`huggingface_hub.CommitInfo` of the commit.
        """
        from ..hub_lens import push_lens_folder

        with tempfile.TemporaryDirectory(prefix="tuned-lens-push-") as tmp:
            self.save_pretrained(tmp, model_card=model_card, repo_id=repo_id)
            return push_lens_folder(
                tmp,
                repo_id,
                api=api,
                revision=revision,
                commit_message=commit_message,
                commit_description=commit_description,
                private=private,
                token=token,
                create_pr=create_pr,
            )


def _load_base_model(config: TunedLensConfig) -> nn.Module:
    """The model a lens config names, on the CPU (cache-only when offline)."""
    from ..model_loading import load_model

    name = config.base_model_name_or_path
    if not name:
        raise InvalidInputError("the lens config names no base model; pass model=", option="model")
    try:
        return load_model(name, device="cpu", revision=config.base_model_revision)
    except TunedLensError:
        raise
    except (OSError, ValueError) as err:
        raise InvalidInputError(
            f"cannot load the lens's base model {name!r} (pass model= to use one you have "
            f"loaded): {err!s:.300}",
            option="model",
        ) from err
