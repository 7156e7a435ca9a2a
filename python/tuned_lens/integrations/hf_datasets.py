"""The original library's ``datasets``-based packing, for code written against it.

:func:`chunk_and_tokenize` takes a ``datasets.Dataset`` (or ``DatasetDict``) and returns
``(chunked_dataset, nats_to_bpb)`` exactly as the original's ``tuned_lens.data`` did; the faster
list-of-strings packer of this package is :func:`tuned_lens.data.pack_documents`. The
``datasets`` package is imported only when a function here runs.
"""

from __future__ import annotations

import logging
import math
import warnings
from functools import partial
from multiprocessing import cpu_count
from typing import Any

from tuned_lens.errors import InvalidInputError, NotEnoughDataError

__all__ = [
    "chunk_and_tokenize",
    "compute_nats_to_bpb_ratio",
    "get_columns_all_equal",
    "silence_datasets_messages",
]

#: Documents per ``Dataset.map`` batch, as in the original (the last short chunk of every
#: batch is dropped, so bigger batches waste fewer tokens).
MAP_BATCH_SIZE = 2048
_FALLBACK_SEPARATOR = "<|endoftext|>"


def _require_dataset(data: Any, name: str = "data") -> None:
    """Refuse anything but a ``Dataset``/``DatasetDict`` (a list would be read as rows)."""
    try:
        from datasets import Dataset, DatasetDict
    except ImportError as err:  # pragma: no cover - depends on the environment
        from tuned_lens.errors import MissingDependencyError

        raise MissingDependencyError(
            "chunk_and_tokenize needs the `datasets` package: pip install "
            "'tuned-lens-rs[datasets]' (or pack a list of strings with "
            "tuned_lens.data.pack_documents)"
        ) from err
    if not isinstance(data, (Dataset, DatasetDict)):
        raise InvalidInputError(
            f"{name} must be a datasets.Dataset or DatasetDict, got {type(data).__name__}; "
            "for a list of strings use tuned_lens.data.pack_documents",
            option=name,
        )


def get_columns_all_equal(dataset: Any) -> list[str]:
    """The column names of a ``Dataset``, or of a ``DatasetDict`` whose splits all agree.

    Raises:
        InvalidInputError: The splits of a ``DatasetDict`` have different columns (a
            ``ValueError``, as in the original).
    """
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        by_split = list(dataset.column_names.values())
        if any(cols != by_split[0] for cols in by_split):
            raise InvalidInputError("All splits must have the same columns", option="data")
        return list(by_split[0]) if by_split else []
    return list(dataset.column_names)


def _spread(total: int, rows: int) -> list[int]:
    """``total`` as ``rows`` non-negative integers summing to it (the remainder on the last)."""
    div, rem = divmod(total, rows)
    out = [div] * rows
    out[-1] += rem
    return out


def _pack_batch(
    batch: dict[str, list[Any]],
    *,
    tokenizer: Any,
    text_key: str,
    chunk_len: int,
    return_final_batch: bool,
) -> dict[str, list[Any]]:
    """One ``map`` batch: join with EOS (the first text prefixed too), cut into chunks."""
    sep = getattr(tokenizer, "eos_token", None) or _FALLBACK_SEPARATOR
    joined = sep.join([""] + [str(text) for text in batch[text_key]])
    output = tokenizer(
        joined,
        max_length=chunk_len,
        return_attention_mask=False,
        return_overflowing_tokens=True,
        truncation=True,
    )
    chunks = output["input_ids"]
    overflow = output.get("overflowing_tokens")
    if overflow and chunks and isinstance(chunks[0], int):
        # Slow tokenizers return one chunk and a flat list of the rest.
        chunks = [chunks] + [
            overflow[i : i + chunk_len] for i in range(0, len(overflow), chunk_len)
        ]
    elif chunks and isinstance(chunks[0], int):
        chunks = [chunks]
    total_tokens = sum(len(ids) for ids in chunks)
    total_bytes = len(joined.encode("utf-8"))
    if not return_final_batch:
        chunks = chunks[:-1]  # almost always short; the original drops it rather than pad
    if not chunks:
        raise NotEnoughDataError(
            "Not enough data to create a single complete batch. Either allow the final batch "
            "to be returned, or supply more data."
        )
    return {
        "input_ids": chunks,
        "length": _spread(total_tokens, len(chunks)),
        "bytes": _spread(total_bytes, len(chunks)),
    }


def _column_sum(data: Any, column: str) -> int:
    from datasets import DatasetDict

    if isinstance(data, DatasetDict):
        return sum(int(sum(split[column])) for split in data.values())
    return int(sum(data[column]))


def chunk_and_tokenize(
    data: Any,
    tokenizer: Any,
    *,
    format: str = "torch",
    num_proc: int = min(cpu_count() // 2, 8),
    text_key: str = "text",
    max_seq_len: int = 2048,
    return_final_batch: bool = False,
    load_from_cache_file: bool = True,
) -> tuple[Any, float]:
    """GPT-style chunking and tokenisation of a ``datasets`` data set, as in the original.

    Each map batch of :data:`MAP_BATCH_SIZE` documents is joined with the EOS token (also in
    front of the first document), tokenised and cut into chunks of
    ``min(tokenizer.model_max_length, max_seq_len)`` tokens; the last (usually short) chunk
    of every batch is dropped unless ``return_final_batch``.

    Args:
        data: A ``datasets.Dataset`` or ``DatasetDict`` with a text column.
        tokenizer: A Hugging Face tokenizer (fast or slow).
        format: Passed to ``Dataset.with_format``.
        num_proc: Worker processes for ``Dataset.map`` (``None`` or 1: in this process).
        text_key: The text column.
        max_seq_len: Upper bound on the chunk length.
        return_final_batch: Keep the last chunk of every map batch.
        load_from_cache_file: Passed to ``Dataset.map``.

    Returns:
        ``(chunked, nats_to_bpb)``: the data set of ``input_ids`` chunks (in ``format``) and
        the ratio ``(tokens / bytes) / ln 2`` that turns nats per token into bits per byte.

    Raises:
        InvalidInputError: ``data`` is not a ``Dataset``/``DatasetDict`` (a ``ValueError``).
        NotEnoughDataError: A map batch yields no complete chunk.
    """
    _require_dataset(data)
    model_max = getattr(tokenizer, "model_max_length", None)
    chunk_len = min(model_max, max_seq_len) if isinstance(model_max, int) else max_seq_len
    columns = get_columns_all_equal(data)
    if text_key not in columns:
        raise InvalidInputError(
            f"the data set has no column {text_key!r} (columns: {columns})", option="text_key"
        )
    chunked = data.map(
        partial(
            _pack_batch,
            tokenizer=tokenizer,
            text_key=text_key,
            chunk_len=chunk_len,
            return_final_batch=return_final_batch,
        ),
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        remove_columns=columns,
        load_from_cache_file=load_from_cache_file,
    )
    ratio = (_column_sum(chunked, "length") / _column_sum(chunked, "bytes")) / math.log(2)
    return chunked.with_format(format, columns=["input_ids"]), ratio


def compute_nats_to_bpb_ratio(raw: Any, tokenized: Any) -> float:
    """``(tokens / bytes) / ln 2`` of a raw data set (``"text"`` column) and its tokenisation.

    Args:
        raw: The raw data set, with a ``"text"`` column.
        tokenized: The tokenised data set, with an ``"input_ids"`` column.

    Returns:
        The factor that turns a loss in nats per token into bits per byte.
    """
    _require_dataset(raw, "raw")
    _require_dataset(tokenized, "tokenized")
    byte_counts = raw.map(
        lambda x: {"length": [len(str(text).encode("utf-8")) for text in x["text"]]},
        batched=True,
        remove_columns=get_columns_all_equal(raw),
    )
    token_counts = tokenized.map(
        lambda x: {"length": [len(ids) for ids in x["input_ids"]]},
        batched=True,
        remove_columns=get_columns_all_equal(tokenized),
    )
    total_bytes = _column_sum(byte_counts, "length")
    if total_bytes == 0:
        raise NotEnoughDataError("the raw data set holds no text")
    return (_column_sum(token_counts, "length") / total_bytes) / math.log(2)


def silence_datasets_messages() -> None:
    """Hide ``datasets``'s "Found cached dataset" / "Loading cached" messages and warnings."""

    def keep(record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(
            part in msg
            for part in ("Found cached dataset", "Loading cached", "Using custom data config")
        )

    handler = logging.StreamHandler()
    handler.addFilter(keep)
    logging.getLogger("datasets").addHandler(handler)
    warnings.filterwarnings("ignore", category=FutureWarning, module="datasets")
