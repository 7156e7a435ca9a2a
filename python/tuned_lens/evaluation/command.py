"""``tuned-lens eval --lens SPEC …``: several lenses over the same documents, the model run once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens.errors import InvalidInputError, NotEnoughDataError

if TYPE_CHECKING:  # pragma: no cover
    from tuned_lens.evaluation.compare import ComparisonResult
    from tuned_lens.training.commands import DistSpec
    from tuned_lens.training.ingredients import DataSpec, ModelSpec

__all__ = ["run_compare"]

logger = logging.getLogger(__name__)


def _token_documents(
    docs: list[str], tokenizer: object, max_seq_len: int, tokens: int | None
) -> list[list[int]]:
    """Each document's ids (at most ``max_seq_len``), in order, until ``tokens`` are reached."""
    out: list[list[int]] = []
    total = 0
    for doc in docs:
        ids = list(tokenizer(doc)["input_ids"])[:max_seq_len]  # type: ignore[operator]
        if len(ids) < 2:
            continue
        out.append(ids)
        total += len(ids) - 1
        if tokens is not None and total >= tokens:
            break
    if not out:
        raise NotEnoughDataError("no document has the 2 tokens a scored position needs")
    if tokens is not None and total < tokens:
        raise NotEnoughDataError(
            f"Requested to evaluate on {tokens} tokens, but the documents give only {total}"
        )
    return out


def run_compare(
    *,
    model_spec: ModelSpec,
    data_spec: DataSpec,
    lens_specs: list[str],
    output: Path,
    tokens: int | None = None,
    batch_size: int = 8,
    top_k: int = 10,
    bootstrap: int = 1000,
    seed: int = 0,
    dist_spec: DistSpec | None = None,
) -> ComparisonResult:
    """Evaluate every ``--lens`` on the same documents; write ``comparison.{json,md,html}``.

    Raises:
        InvalidInputError: A bad lens spec, FSDP (one process evaluates), or an unwritable
            ``output`` (checked before the model loads).
        NotEnoughDataError: Fewer than ``tokens`` scored tokens in the data.
    """
    from tuned_lens.evaluation.compare import evaluate
    from tuned_lens.evaluation.lens_specs import load_lenses, parse_lens_specs
    from tuned_lens.evaluation.report import write_comparison
    from tuned_lens.lens_stats import MAX_K
    from tuned_lens.training.commands import (
        DistSpec,
        _lens_folder_to_annotate,
        _load,
        check_writable_folder,
    )
    from tuned_lens.training.ingredients import init_distributed

    if not 1 <= top_k <= MAX_K:
        raise InvalidInputError(f"top_k must be in 1..{MAX_K}, got {top_k}", option="top_k")
    if bootstrap < 1:
        raise InvalidInputError(f"bootstrap must be >= 1, got {bootstrap}", option="bootstrap")
    specs = parse_lens_specs(lens_specs)
    dist_spec = dist_spec or DistSpec()
    if dist_spec.fsdp:
        raise InvalidInputError("comparing lenses runs in one process, without FSDP", option="fsdp")
    ctx = init_distributed(device=dist_spec.device, timeout_s=dist_spec.nccl_timeout)
    try:
        if ctx.distributed:
            raise InvalidInputError("comparing lenses runs in one process", option="lens")
        check_writable_folder(output, "output")
        # Tuned-lens folders whose card gets these metrics (a corrupt provenance fails here).
        annotate = {s.name: _lens_folder_to_annotate(s.path) for s in specs if s.kind == "tuned"}
        docs = data_spec.read()
        model, tokenizer = _load(model_spec, dist_spec, ctx)
        documents = _token_documents(docs, tokenizer, data_spec.max_seq_len, tokens)
        ratio = data_spec.pack(docs, tokenizer).nats_to_bpb
        lenses = load_lenses(specs, model)
        result = evaluate(
            model,
            lenses,
            documents,
            k=top_k,
            batch_size=batch_size,
            n_boot=bootstrap,
            seed=seed,
            nats_to_bpb=ratio,
            device=ctx.device,
        )
        written = write_comparison(result, output)
        logger.info("wrote %s", ", ".join(str(p) for p in written.values()))
        for name, folder in annotate.items():
            if folder is not None:
                _record_comparison(folder, name, result, data_spec)
        return result
    finally:
        ctx.close()


def _record_comparison(
    folder: Path, name: str, result: ComparisonResult, data_spec: DataSpec
) -> None:
    """Add lens ``name``'s per-layer means (and the logit lens's KL) to its folder's card."""
    from tuned_lens.model_card import evaluation_record, record_evaluation
    from tuned_lens.training.commands import _corpus

    def tree(lens: str) -> dict[str, dict[str, float]]:
        layers = result.lenses.get(lens, {})
        return {
            m: {f"layer_{j}": v[m].mean for j, v in sorted(layers.items()) if m in v}
            for m in ("kl", "ce", "entropy")
        }

    aggregate = {name: tree(name), "logit": tree("logit")}
    if "ce" in result.model:
        aggregate["baseline"] = {"ce": {"final": result.model["ce"].mean}}
    evaluation = evaluation_record(
        aggregate, lens_key=name, corpus=_corpus(data_spec), tokens=result.tokens
    )
    record_evaluation(
        folder, {**evaluation, "source": "eval --lens (intervals in comparison.json)"}
    )
    logger.info("added the held-out metrics of %s to %s", name, folder)
