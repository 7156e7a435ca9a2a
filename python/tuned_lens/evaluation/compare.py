"""Per-layer statistics of several lenses on the same tokens, with bootstrap intervals.

For every lens, layer and scored position (a position whose next token is in the same document)
the per-token numbers come from :mod:`tuned_lens.lens_stats`, with ``p`` the model's own
distribution and ``q`` the lens's:

* ``kl``: KL(p ‖ q) in nats; ``kl_bpb`` the same in bits per byte;
* ``ce``: −log q(next token) in nats; ``ce_bpb`` in bits per byte;
* ``entropy``: H(q) in nats;
* ``top1``: 1 when argmax q = argmax p;
* ``overlap``: |top-k(q) ∩ top-k(p)| / k;
* ``rank``: the rank of argmax p under q (1 = q's most likely token).

Each is a mean over all scored tokens (documents weighted by their token counts), with a 95%
percentile bootstrap interval over documents: the same seeded resamples of documents serve every
lens, layer and metric, so two lenses are compared on the same resampled corpora.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tuned_lens import lens_stats
from tuned_lens.decoding import LayerDecoder, LogSoftmaxBuffers, covered_layers, model_device
from tuned_lens.errors import InvalidInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from tuned_lens.nn.lenses import Lens
    from tuned_lens.types import CausalLM

__all__ = ["METRICS", "ComparisonResult", "Interval", "evaluate"]

#: The per-token metrics accumulated for every lens and layer (``*_bpb`` are derived).
_TOKEN_METRICS = ("kl", "ce", "entropy", "top1", "overlap", "rank")
#: Every metric reported, in table order.
METRICS = ("kl", "kl_bpb", "ce", "ce_bpb", "entropy", "top1", "overlap", "rank")


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap interval."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


@dataclass
class ComparisonResult:
    """What :func:`evaluate` measured.

    Attributes:
        lenses: lens name -> layer -> metric -> :class:`Interval` (layers a lens does not cover
            are absent).
        model: metric (``ce``, ``ce_bpb``, ``entropy``) -> the model's own value.
        tokens: scored tokens.
        documents: documents (bootstrap units).
        k: the ``k`` of ``overlap``.
        nats_to_bpb: bits per byte per nat (``None``: the ``*_bpb`` metrics are absent).
        bootstrap: samples, seed and confidence of the intervals.
        kinds: lens name -> its class name.
    """

    lenses: dict[str, dict[int, dict[str, Interval]]]
    model: dict[str, Interval]
    tokens: int
    documents: int
    k: int
    nats_to_bpb: float | None
    bootstrap: dict[str, Any]
    kinds: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready tree (layers as string keys)."""
        return {
            "tokens": self.tokens,
            "documents": self.documents,
            "k": self.k,
            "nats_to_bpb": self.nats_to_bpb,
            "bootstrap": self.bootstrap,
            "model": {m: v.to_dict() for m, v in self.model.items()},
            "lenses": {
                name: {
                    "kind": self.kinds.get(name, ""),
                    "layers": {
                        str(layer): {m: v.to_dict() for m, v in metrics.items()}
                        for layer, metrics in layers.items()
                    },
                }
                for name, layers in self.lenses.items()
            },
        }


class _Sums:
    """Per-document sums: ``lens[name][metric]`` ``(L, n_docs)``, ``model[metric]``, counts."""

    def __init__(self, names: Sequence[str], num_layers: int, num_docs: int) -> None:
        self.lens = {
            n: {m: np.zeros((num_layers, num_docs)) for m in _TOKEN_METRICS} for n in names
        }
        self.model = {m: np.zeros(num_docs) for m in ("ce", "entropy")}
        self.counts = np.zeros(num_docs)
        self.covered = {n: np.zeros(num_layers, dtype=bool) for n in names}


def _covers(lens: Lens, layer: int) -> bool:
    n = lens.num_layers  # a JacobianLens may cover only some layers
    return n is None or layer in covered_layers(lens, n)


def _as_numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)


def _token_stats(model_lp: Any, lens_lp: Any, targets: np.ndarray, ref: dict) -> dict:
    """The per-token metrics of one lens row ``(n, V)`` against the model's row."""
    ids, _ = lens_stats.top_k(lens_lp, ref["k"])
    ids = _as_numpy(ids)
    overlap = (ids[:, :, None] == ref["top_ids"][:, None, :]).any(-1).sum(-1) / ref["k"]
    return {
        "kl": _as_numpy(lens_stats.kl_divergence(model_lp, lens_lp)),
        "ce": _as_numpy(lens_stats.cross_entropy(lens_lp, targets)),
        "entropy": _as_numpy(lens_stats.entropy(lens_lp)),
        "top1": (ids[:, 0] == ref["top_ids"][:, 0]).astype(np.float64),
        "overlap": overlap,
        "rank": _as_numpy(lens_stats.target_rank(lens_lp, ref["top_ids"][:, 0])),
    }


def _pad(documents: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    width = max(len(d) for d in documents)
    ids = np.zeros((len(documents), width), dtype=np.int64)
    mask = np.zeros((len(documents), width), dtype=bool)
    for row, doc in enumerate(documents):
        ids[row, : len(doc)] = np.asarray(doc, dtype=np.int64)
        mask[row, : len(doc)] = True
    return ids, mask


def _scored_positions(mask: np.ndarray) -> np.ndarray:
    """Flat positions ``b * T`` whose next position is a token of the same document."""
    scored = np.zeros_like(mask)
    scored[:, :-1] = mask[:, :-1] & mask[:, 1:]
    return np.flatnonzero(scored.reshape(-1))


def _accumulate_batch(
    decoder: LayerDecoder,
    lenses: Mapping[str, Lens],
    ids: np.ndarray,
    mask: np.ndarray,
    doc0: int,
    sums: _Sums,
    k: int,
    chunk_rows: int,
) -> None:
    t = ids.shape[1]
    positions = _scored_positions(mask)
    if not len(positions):
        return
    flat_targets = ids.reshape(-1)
    ref: dict[str, Any] = {"k": k}
    for row in decoder.rows(positions, chunk_rows=chunk_rows):
        docs = doc0 + row.positions // t
        targets = flat_targets[row.positions + 1]
        if row.is_output:
            model_lp = row.log_probs[0]
            ref["top_ids"] = _as_numpy(lens_stats.top_k(model_lp, k)[0])
            np.add.at(sums.counts, docs, 1.0)
            np.add.at(
                sums.model["ce"], docs, _as_numpy(lens_stats.cross_entropy(model_lp, targets))
            )
            np.add.at(sums.model["entropy"], docs, _as_numpy(lens_stats.entropy(model_lp)))
            continue
        for (name, lens), lens_lp in zip(lenses.items(), row.log_probs):
            if not _covers(lens, row.layer):
                continue
            sums.covered[name][row.layer] = True
            for metric, values in _token_stats(model_lp, lens_lp, targets, ref).items():
                np.add.at(sums.lens[name][metric][row.layer], docs, values)


def _covered(lens: Lens) -> Lens:
    """``lens``, or for a lens covering only some layers a wrapper that decodes the others to
    zeros cheaply (their rows are skipped by :func:`_accumulate_batch`)."""
    from tuned_lens.nn.lenses import Lens as LensBase

    class Covered(LensBase):
        def __init__(self) -> None:
            super().__init__(lens.unembed)
            self.inner = lens

        @property
        def num_layers(self) -> int | None:
            return lens.num_layers

        def __len__(self) -> int:
            return len(lens)  # type: ignore[arg-type]

        def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
            return lens.transform_hidden(h, idx)

        def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
            if _covers(lens, idx):
                return lens(h, idx)
            vocab = int(lens.unembed.unembedding.weight.shape[0])
            return h.new_zeros(*h.shape[:-1], vocab)

    return lens if getattr(lens, "layers", None) is None else Covered()


def _bootstrap(sums: _Sums, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(n_boot, n_docs)`` document multiplicities of the resamples, and the token totals."""
    n = len(sums.counts)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    weights = np.zeros((n_boot, n))
    np.add.at(weights, (np.arange(n_boot)[:, None], draws), 1.0)
    return weights, weights @ sums.counts


def _interval(
    per_doc: np.ndarray, counts: np.ndarray, weights: np.ndarray, totals: np.ndarray, alpha: float
) -> Interval:
    mean = float(per_doc.sum() / counts.sum())
    resampled = (weights @ per_doc) / np.maximum(totals, 1e-300)
    low, high = np.quantile(resampled, [alpha / 2, 1 - alpha / 2])
    return Interval(mean, float(low), float(high))


def _summarise(
    sums: _Sums, nats_to_bpb: float | None, n_boot: int, seed: int, confidence: float
) -> tuple[dict[str, dict[int, dict[str, Interval]]], dict[str, Interval]]:
    weights, totals = _bootstrap(sums, n_boot, seed)
    alpha = 1.0 - confidence
    scale = {"kl_bpb": "kl", "ce_bpb": "ce"} if nats_to_bpb is not None else {}

    def summary(per_metric: Mapping[str, np.ndarray]) -> dict[str, Interval]:
        out = {m: _interval(v, sums.counts, weights, totals, alpha) for m, v in per_metric.items()}
        for derived, base in scale.items():
            if base in out:
                b, r = out[base], float(nats_to_bpb or 0.0)
                out[derived] = Interval(b.mean * r, b.low * r, b.high * r)
        return {m: out[m] for m in METRICS if m in out}

    lenses = {
        name: {
            layer: summary({m: v[layer] for m, v in per_metric.items()})
            for layer in np.flatnonzero(sums.covered[name]).tolist()
        }
        for name, per_metric in sums.lens.items()
    }
    return lenses, summary(sums.model)


def _documents(
    documents: Any, tokenizer: Any, max_seq_len: int | None
) -> tuple[list[list[int]], float | None]:
    """Token-id documents (cut to ``max_seq_len``) and, for text, bits per byte per nat."""
    if hasattr(documents, "tolist") and not isinstance(documents, (list, tuple)):
        documents = documents.tolist()
    docs = list(documents)
    if not docs:
        raise InvalidInputError("no documents to evaluate", option="documents")
    ratio = None
    if all(isinstance(d, str) for d in docs):
        if tokenizer is None:
            raise InvalidInputError("text documents need a tokenizer", option="tokenizer")
        ids = [list(tokenizer(d)["input_ids"]) for d in docs]
        ids = [d[:max_seq_len] if max_seq_len else d for d in ids]
        kept_text = [
            tokenizer.decode(d) if max_seq_len and len(d) == max_seq_len else t
            for d, t in zip(ids, docs)
        ]
        n_bytes = sum(len(t.encode("utf-8")) for t in kept_text)
        ratio = sum(len(d) for d in ids) / (n_bytes * np.log(2))
        docs = ids
    else:
        docs = [
            [int(t) for t in d][:max_seq_len] if max_seq_len else [int(t) for t in d] for d in docs
        ]
    if any(len(d) < 2 for d in docs):
        raise InvalidInputError("every document needs at least 2 tokens", option="documents")
    return docs, ratio


def evaluate(
    model: CausalLM,
    lenses: Mapping[str, Lens],
    documents: Any,
    *,
    tokenizer: Any = None,
    k: int = 10,
    batch_size: int = 8,
    max_seq_len: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    nats_to_bpb: float | None = None,
    device: torch.device | str | None = None,
    chunk_rows: int = 2048,
) -> ComparisonResult:
    """Compare lenses on the same tokens: the model runs once per batch for all of them.

    Args:
        model: A Hugging Face causal LM.
        lenses: name -> lens (any :class:`~tuned_lens.nn.lenses.Lens`), in table order.
        documents: Strings (with ``tokenizer``), or token-id sequences, or a ``(n, T)`` array;
            each document is one bootstrap unit.
        tokenizer: Tokenises text documents (and then gives ``nats_to_bpb``).
        k: The ``k`` of overlap@k (``1 <= k <= 64``).
        batch_size: Documents per model run (shorter ones are right-padded and masked).
        max_seq_len: Cut documents to this many tokens.
        n_boot: Bootstrap resamples of the documents.
        seed: Seed of the resamples.
        confidence: Level of the percentile intervals.
        nats_to_bpb: Bits per byte per nat (default: measured on text documents, else absent).
        device: Where the model's inputs go (default: the model's device).
        chunk_rows: Positions decoded at once per layer (bounds the ``(n, V)`` buffers).

    Returns:
        A :class:`ComparisonResult`.

    Raises:
        InvalidInputError: No lens, no documents, a bad ``k``, ``n_boot`` or ``confidence``.
    """
    if not lenses:
        raise InvalidInputError("at least one lens is needed", option="lenses")
    if not 1 <= k <= lens_stats.MAX_K:
        raise InvalidInputError(f"k must be in 1..{lens_stats.MAX_K}, got {k}", option="k")
    if n_boot < 1 or not 0 < confidence < 1:
        raise InvalidInputError("n_boot must be >= 1 and 0 < confidence < 1", option="n_boot")
    docs, measured = _documents(documents, tokenizer, max_seq_len)
    names = list(lenses)
    wrapped = [_covered(lenses[n]) for n in names]
    target = model_device(model, device)
    buffers = LogSoftmaxBuffers()
    sums: _Sums | None = None
    for lo in range(0, len(docs), batch_size):
        ids, mask = _pad(docs[lo : lo + batch_size])
        decoder = LayerDecoder.from_model(wrapped, model, ids, mask, target, buffers=buffers)
        if sums is None:
            sums = _Sums(names, decoder.num_layers, len(docs))
        _accumulate_batch(decoder, lenses, ids, mask, lo, sums, k, chunk_rows)
    assert sums is not None
    ratio = nats_to_bpb if nats_to_bpb is not None else measured
    per_lens, model_row = _summarise(sums, ratio, n_boot, seed, confidence)
    return ComparisonResult(
        lenses=per_lens,
        model=model_row,
        tokens=int(sums.counts.sum()),
        documents=len(docs),
        k=k,
        nats_to_bpb=ratio,
        bootstrap={"samples": n_boot, "seed": seed, "confidence": confidence, "unit": "document"},
        kinds={n: type(lenses[n]).__name__ for n in names},
    )
