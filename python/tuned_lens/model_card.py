"""A lens folder's provenance (``provenance.json``) and its Hugging Face model card (``README.md``).

``tuned-lens train`` records where a lens came from when it saves it: the base model (the name
asked for, the path it resolved to, the revision and, when the model came from the Hub cache, its
commit), the corpus (name, split, revision, size; the SHA-256 of a local data file), the tokens
seen, the training recipe, the command line, the final per-layer training loss and the versions
of the packages involved. ``tuned-lens eval -l FOLDER`` appends its held-out per-layer metrics
to ``evaluations``. Both rewrite the folder's model card from the provenance, atomically.

The model card is a :class:`huggingface_hub.ModelCard`: YAML metadata (``library_name:
tuned-lens``, ``base_model`` when the model is a Hub id, ``tags``, ``datasets``, a
``model-index`` with the latest held-out KL of every layer, and a ``tuned_lens`` key with the
same numbers as lists) and a body with how to load the lens, the provenance and the per-layer
table. A ``README.md`` that this package did not write (it lacks :data:`CARD_MARKER`) is never
overwritten.

A corrupt or hostile ``provenance.json`` (not JSON, too large, nested too deeply, fields of the
wrong type) is a :class:`~tuned_lens.errors.LensFileError` naming the file, raised before
anything is written, so nothing is lost.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuned_lens._atomic import write_json_atomically, write_text_atomically
from tuned_lens.errors import LensFileError
from tuned_lens.lens_config import TunedLensConfig, read_file_once

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import ModelCard, ModelCardData

__all__ = [
    "CARD_MARKER",
    "CARD_NAME",
    "PROVENANCE_FORMAT",
    "PROVENANCE_NAME",
    "add_evaluation",
    "build_model_card",
    "corpus_record",
    "evaluation_record",
    "hub_model_id",
    "new_provenance",
    "package_versions",
    "read_provenance",
    "record_evaluation",
    "write_card_and_provenance",
]

logger = logging.getLogger(__name__)

PROVENANCE_NAME = "provenance.json"
CARD_NAME = "README.md"
PROVENANCE_FORMAT = "tuned-lens-provenance"
PROVENANCE_VERSION = 1
CARD_MARKER = "<!-- model card written by tuned-lens; it is regenerated from provenance.json -->"
MAX_PROVENANCE_BYTES = 8 << 20
# Recorded name -> distribution name.
_PACKAGES = {"tuned-lens": "tuned-lens-rs", "torch": "torch", "transformers": "transformers",
             "numpy": "numpy", "huggingface_hub": "huggingface_hub", "safetensors": "safetensors"}  # fmt: skip
_HASHED_FILE_LIMIT = 1 << 30


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    """The installed versions of the packages a lens's numbers depend on (``None``: absent;
    tuned-lens imported from a source tree is ``tuned_lens.__version__``, ``"0.0.0+local"``)."""
    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name, distribution in _PACKAGES.items():
        try:
            versions[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    if versions["tuned-lens"] is None:  # imported from a source tree (PYTHONPATH), not installed
        versions["tuned-lens"] = importlib.import_module("tuned_lens").__version__
    return versions


def hub_model_id(name: str | None) -> str | None:
    """``name`` if it is a valid Hub repository id and not a local path, else ``None``."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or os.path.exists(os.path.expanduser(name)):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def _file_digest(path: Path) -> dict[str, Any] | None:
    if not path.is_file() or path.stat().st_size > _HASHED_FILE_LIMIT:
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def corpus_record(
    name: Sequence[str],
    *,
    split: str | None,
    revision: str | None,
    text_column: str,
    max_seq_len: int,
    **sizes: int,
) -> dict[str, Any]:
    """What a run read (``--data.name`` as given, split, revision, ``sizes`` such as
    ``documents=…``); a single local file also gets its size and SHA-256 under ``"file"``."""
    names = [str(n) for n in name]
    record: dict[str, Any] = {
        "name": names,
        "split": split,
        "revision": revision,
        "text_column": text_column,
        "max_seq_len": max_seq_len,
        **sizes,
    }
    if len(names) == 1:
        record["file"] = _file_digest(Path(names[0]).expanduser())
    return record


def new_provenance(training: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An empty provenance record (``training`` as given, no evaluations yet)."""
    return {
        "format": PROVENANCE_FORMAT,
        "version": PROVENANCE_VERSION,
        "training": None if training is None else {"date": _now(), **training},
        "evaluations": [],
    }


def _per_layer(tree: Mapping[str, Any], metric: str) -> list[float] | None:
    layers = tree.get(metric)
    if not isinstance(layers, Mapping):
        return None
    keys = sorted((k for k in layers if k.startswith("layer_")), key=lambda k: int(k[6:]))
    return [float(layers[k]) for k in keys]


def evaluation_record(
    aggregate: Mapping[str, Any],
    *,
    lens_key: str = "tuned",
    corpus: Mapping[str, Any] | None = None,
    tokens: int | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One held-out evaluation from ``EvalResult.aggregate`` (``{lens: {metric: {"layer_j": v}}}``,
    nats per token): the per-layer KL, CE and entropy of ``lens_key`` and the logit lens's KL,
    with ``corpus`` (:func:`corpus_record`), ``tokens``, ``command`` (default ``sys.argv``)."""
    lens = aggregate.get(lens_key, {})
    logit = aggregate.get("logit", {})
    baseline = aggregate.get("baseline", {}).get("ce", {})
    return {
        "date": _now(),
        "command": list(sys.argv if command is None else command),
        "corpus": None if corpus is None else dict(corpus),
        "tokens": tokens,
        "units": "nats per token; KL is KL(model || lens)",
        "kl_per_layer": _per_layer(lens, "kl"),
        "ce_per_layer": _per_layer(lens, "ce"),
        "entropy_per_layer": _per_layer(lens, "entropy"),
        "logit_lens_kl_per_layer": _per_layer(logit, "kl"),
        "model_ce": baseline.get("final"),
        "packages": package_versions(),
    }


def add_evaluation(provenance: Mapping[str, Any], evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``provenance`` with ``evaluation`` appended (the training record untouched)."""
    updated = json.loads(json.dumps(provenance))
    updated["evaluations"].append(dict(evaluation))
    return updated


# -- reading ---------------------------------------------------------------------------------


def _is_number_list(value: object) -> bool:
    return isinstance(value, list) and all(
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in value
    )


def _provenance_problem(data: object) -> str | None:
    """What is wrong with a parsed provenance record, or ``None``."""
    if not isinstance(data, dict):
        return f"it holds a JSON {type(data).__name__}, not an object"
    if data.get("format") != PROVENANCE_FORMAT:
        return f"'format' is {str(data.get('format'))[:60]!r}, not {PROVENANCE_FORMAT!r}"
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return f"'version' is {str(version)[:60]!r}, not a positive integer"
    if version > PROVENANCE_VERSION:
        return f"version {version} is newer than this tuned-lens reads ({PROVENANCE_VERSION})"
    training = data.get("training")
    if training is not None and not isinstance(training, dict):
        return "'training' is neither an object nor null"
    evaluations = data.get("evaluations")
    if not isinstance(evaluations, list) or not all(isinstance(e, dict) for e in evaluations):
        return "'evaluations' is not a list of objects"
    records = ([training] if training else []) + evaluations
    for record in records:
        for key, value in record.items():
            if key.endswith("_per_layer") and value is not None and not _is_number_list(value):
                return f"{key!r} is not a list of numbers"
    return None


def read_provenance(folder: str | Path) -> dict[str, Any] | None:
    """The provenance record of a lens folder, or ``None`` when it has none.

    Raises:
        LensFileError: ``provenance.json`` cannot be read, is larger than 8 MiB, is not JSON,
            or does not have the fields of a provenance record.
    """
    path = Path(folder) / PROVENANCE_NAME
    if not path.exists():
        return None
    data = read_file_once(path, "lens provenance", MAX_PROVENANCE_BYTES)
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise LensFileError(f"lens provenance {path} is not valid JSON: {err!s:.200}") from err
    problem = _provenance_problem(parsed)
    if problem is not None:
        raise LensFileError(f"lens provenance {path} is corrupt: {problem}")
    return parsed  # checked by _provenance_problem


# -- the card --------------------------------------------------------------------------------


def _cell(value: object, limit: int = 160) -> str:
    """``value`` as one Markdown table cell: no newlines or pipes, at most ``limit`` chars."""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    text = " ".join(str(value).split()).replace("|", "\\|").replace("<", "&lt;")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: object) -> str:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return f"{value:.4f}"
    return "–"


def _latest_kl(provenance: Mapping[str, Any] | None) -> dict[str, Any] | None:
    for evaluation in reversed((provenance or {}).get("evaluations", [])):
        if evaluation.get("kl_per_layer"):
            return dict(evaluation)
    return None


def _dataset_ids(provenance: Mapping[str, Any] | None) -> list[str]:
    corpora = [((provenance or {}).get("training") or {}).get("corpus")]
    corpora += [e.get("corpus") for e in (provenance or {}).get("evaluations", [])]
    ids: list[str] = []
    for corpus in corpora:
        names = corpus.get("name") if isinstance(corpus, dict) else None
        first = names[0] if isinstance(names, list) and names else None
        dataset = hub_model_id(first) if isinstance(first, str) else None
        if dataset and dataset not in ids:
            ids.append(dataset)
    return ids


def _card_metadata(
    config: TunedLensConfig, provenance: Mapping[str, Any] | None, repo_id: str | None
) -> ModelCardData:
    from huggingface_hub import EvalResult, ModelCardData

    lens_kind = "low-rank-tuned-lens" if config.rank is not None else "linear-tuned-lens"
    latest = _latest_kl(provenance)
    custom: dict[str, Any] = {
        "lens_type": config.lens_type,
        "num_layers": config.num_hidden_layers,
        "d_model": config.d_model,
        "rank": config.rank,
        "base_model_name_or_path": config.base_model_name_or_path,
        "base_model_revision": config.base_model_revision,
    }
    results = []
    if latest is not None:
        corpus = latest.get("corpus") or {}
        name = " ".join(str(n) for n in corpus.get("name") or ["unknown"])
        custom["held_out_kl_per_layer"] = latest["kl_per_layer"]
        custom["held_out_tokens"] = latest.get("tokens")
        for layer, value in enumerate(latest["kl_per_layer"]):
            if value is None:
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="tuned lens: KL(model || lens) per layer",
                    dataset_type=hub_model_id(name) or "local",
                    dataset_name=name[:200],
                    dataset_split=corpus.get("split"),
                    metric_type="kl_divergence",
                    metric_name=f"KL layer {layer} (nats/token)",
                    metric_value=float(value),
                )
            )
    data = ModelCardData(
        library_name="tuned-lens",
        base_model=hub_model_id(config.base_model_name_or_path),
        tags=["tuned-lens", "interpretability", lens_kind],
        datasets=_dataset_ids(provenance) or None,
        model_name=repo_id or f"tuned-lens-{Path(config.base_model_name_or_path).name}",
        eval_results=results or None,
        tuned_lens=custom,
    )
    return data


def _usage(config: TunedLensConfig, repo_id: str | None) -> list[str]:
    base = hub_model_id(config.base_model_name_or_path) or "path/to/the/base/model"
    where = repo_id or "path/to/this/folder"
    return [
        "## How to use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM",
        "from tuned_lens import TunedLens",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{base}")',
        f'lens = TunedLens.from_pretrained("{where}", model=model)',
        "# logits of layer i: lens(hidden_states[i], i)",
        "```",
        "",
    ]


def _provenance_rows(config: TunedLensConfig, training: Mapping[str, Any]) -> list[str]:
    model = training.get("base_model") or {}
    corpus = training.get("corpus") or {}
    recipe = training.get("recipe") or {}
    file = corpus.get("file") or {}
    rows = [
        ("base model", model.get("name") or config.base_model_name_or_path),
        ("base model revision", model.get("revision") or "–"),
        ("base model commit", model.get("commit") or "–"),
        ("corpus", corpus.get("name") or "–"),
        ("corpus split / revision", f"{corpus.get('split')} / {corpus.get('revision')}"),
        ("corpus file SHA-256", file.get("sha256") or "–"),
        ("tokens seen", training.get("tokens_seen")),
        ("steps", recipe.get("num_steps")),
        (
            "loss / optimizer",
            f"{recipe.get('loss')} / {recipe.get('optimizer', {}).get('optimizer')}",
        ),
        ("recipe / init", f"{recipe.get('recipe')} / {recipe.get('init')}"),
        ("trained on", training.get("date")),
        ("command", training.get("command") or "–"),
        ("packages", ", ".join(f"{k} {v}" for k, v in (training.get("packages") or {}).items())),
    ]
    return ["| | |", "| --- | --- |", *(f"| {a} | {_cell(b, 400)} |" for a, b in rows), ""]


def _metrics_rows(latest: Mapping[str, Any]) -> list[str]:
    kl = latest.get("kl_per_layer") or []
    columns = [latest.get(k) or [] for k in ("logit_lens_kl_per_layer", "ce_per_layer")]
    corpus = latest.get("corpus") or {}
    lines = [
        "## Held-out metrics per layer",
        "",
        f"Evaluated on {_cell(corpus.get('name') or 'unknown')} ({latest.get('tokens')} tokens, "
        f"{_cell(latest.get('date'))}); nats per token, KL is KL(model ‖ lens).",
        "",
        "| layer | KL tuned lens | KL logit lens | cross-entropy |",
        "| --- | --- | --- | --- |",
    ]
    for layer, value in enumerate(kl):
        others = [_number(c[layer]) if layer < len(c) else "–" for c in columns]
        lines.append(f"| {layer} | {_number(value)} | {' | '.join(others)} |")
    return [*lines, ""]


def build_model_card(
    config: TunedLensConfig,
    provenance: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
) -> ModelCard:
    """The model card of a lens: YAML metadata and a Markdown body (see the module docstring).

    Args:
        config: The lens's config.
        provenance: Its provenance record (:func:`read_provenance`), if any.
        repo_id: The Hub repository it is published as (used in the usage snippet).

    Returns:
        A :class:`huggingface_hub.ModelCard`; ``str(card)`` is the ``README.md``.
    """
    from huggingface_hub import ModelCard

    metadata = _card_metadata(config, provenance, repo_id)
    name = config.base_model_name_or_path or "a language model"
    rank = f"rank-{config.rank} " if config.rank is not None else ""
    body = [
        CARD_MARKER,
        "",
        f"# Tuned lens for {_cell(Path(name).name or name)}",
        "",
        f"A [tuned lens](https://arxiv.org/abs/2303.08112) for `{_cell(name)}`: "
        f"{config.num_hidden_layers} {rank}affine translators (d_model {config.d_model}), one "
        "per layer, that map the layer's hidden state to the final layer's before the model's "
        "own final norm and unembedding decode it. Saved by "
        "[tuned-lens](https://github.com/AlignmentResearch/tuned-lens) as `config.json` + "
        "`params.safetensors`.",
        "",
        *_usage(config, repo_id),
    ]
    training = (provenance or {}).get("training")
    if training:
        body += ["## Provenance", "", *_provenance_rows(config, training)]
        losses = training.get("final_train_loss_per_layer") or []
        if losses:
            body += ["Final training loss per layer (nats): " + ", ".join(map(_number, losses))]
            body += [""]
    latest = _latest_kl(provenance)
    if latest is not None:
        body += _metrics_rows(latest)
    else:
        body += ["No held-out evaluation yet: `tuned-lens eval -l <this folder> …` adds one.", ""]
    return ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(body))


def _card_is_ours(path: Path) -> bool:
    if not path.exists():
        return True
    try:
        with path.open("rb") as handle:  # the marker follows the metadata: 1 MiB is plenty
            return CARD_MARKER.encode() in handle.read(1 << 20)
    except OSError:
        return False


def write_card_and_provenance(
    folder: str | Path,
    config: TunedLensConfig,
    provenance: Mapping[str, Any] | None,
    *,
    repo_id: str | None = None,
    model_card: bool = True,
) -> None:
    """Write ``provenance.json`` (when given) and ``README.md`` into a lens folder, atomically.

    A ``README.md`` that tuned-lens did not write is kept (with a warning in the log).
    """
    folder = Path(folder)
    card = build_model_card(config, provenance, repo_id=repo_id) if model_card else None
    if provenance is not None:
        write_json_atomically(folder / PROVENANCE_NAME, provenance)
    if card is None:
        return
    if not _card_is_ours(folder / CARD_NAME):
        logger.warning("kept %s: it was not written by tuned-lens", folder / CARD_NAME)
        return
    write_text_atomically(folder / CARD_NAME, str(card))


def record_evaluation(folder: str | Path, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """Append an evaluation to a lens folder's provenance and regenerate its card.

    The folder's ``provenance.json`` is read (and checked) first, so a corrupt one raises before
    anything changes; a folder without one gets a record holding only this evaluation.

    Returns:
        The provenance now in the folder.

    Raises:
        LensFileError: A corrupt ``provenance.json`` or ``config.json``.
    """
    from tuned_lens.lens_config import read_lens_config

    folder = Path(folder)
    config = read_lens_config(folder / "config.json")
    provenance = add_evaluation(read_provenance(folder) or new_provenance(), evaluation)
    write_card_and_provenance(folder, config, provenance)
    return provenance
