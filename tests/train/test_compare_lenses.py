"""Comparing lenses: ``tuned_lens.evaluate`` against float64 torch on the full distributions,
and ``tuned-lens eval --lens …`` as a real process on glassllm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tuned_lens import evaluate
from tuned_lens.errors import InvalidInputError
from tuned_lens.evaluation.lens_specs import parse_lens_specs
from tuned_lens.evaluation.report import markdown_table, write_comparison
from tuned_lens.nn import JacobianLens, LogitLens, TunedLens, Unembed
from tuned_lens.testing import tiny_model

K = 4


def _oracle_doc(model, lens, doc: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """Per-token metrics of one unpadded document, float64 on the full distributions."""
    ids = torch.tensor([doc])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        p = out.logits[0, :-1].double().log_softmax(-1)
        targets = ids[0, 1:]
        top_p = p.topk(K).indices
        per_layer = {}
        for layer in getattr(lens, "layers", range(len(out.hidden_states) - 1)):
            q = lens(out.hidden_states[layer][0, :-1], layer).double().log_softmax(-1)
            top_q = q.topk(K).indices
            best = top_p[:, 0]
            per_layer[layer] = {
                "kl": (p.exp() * (p - q)).sum(-1).numpy(),
                "ce": (-q.gather(-1, targets[:, None])[:, 0]).numpy(),
                "entropy": (-(q.exp() * q).sum(-1)).numpy(),
                "top1": (top_q[:, 0] == best).double().numpy(),
                "overlap": ((top_q[:, :, None] == top_p[:, None, :]).any(-1).sum(-1) / K).numpy(),
                "rank": (1 + (q > q.gather(-1, best[:, None])).sum(-1)).double().numpy(),
            }
    return per_layer


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_hidden_layers=3)


@pytest.fixture(scope="module")
def lenses(model):
    torch.manual_seed(1)
    tuned = TunedLens.from_model(model)
    low_rank = TunedLens.from_model(model, rank=2)
    with torch.no_grad():
        for translator in (*tuned, *low_rank):
            for param in translator.parameters():
                param.normal_(0.0, 0.2)
    d = Unembed(model).d_model
    jacobian = JacobianLens(
        Unembed(model), {1: torch.randn(d, d) / d**0.5, 2: torch.eye(d)}, num_layers=3
    )
    return {
        "logit": LogitLens.from_model(model),
        "tuned": tuned,
        "low-rank": low_rank,
        "jacobian": jacobian,
    }


def test_evaluate_equals_float64_oracle_with_seeded_bootstrap(model, lenses):
    gen = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, 100, (n,), generator=gen).tolist() for n in (9, 5, 12, 7, 3)]
    result = evaluate(model, lenses, docs, k=K, batch_size=2, n_boot=300, seed=7, nats_to_bpb=0.5)
    counts = np.array([len(d) - 1 for d in docs], dtype=float)
    assert result.tokens == counts.sum() and result.documents == 5
    assert sorted(result.lenses["jacobian"]) == [1, 2]  # only the layers it covers
    draws = np.random.default_rng(7).integers(0, 5, size=(300, 5))
    for name, lens in lenses.items():
        oracle = [_oracle_doc(model, lens, d) for d in docs]
        for layer, metrics in result.lenses[name].items():
            for metric in ("kl", "ce", "entropy", "top1", "overlap", "rank"):
                per_doc = np.array([o[layer][metric].sum() for o in oracle])
                value = metrics[metric]
                expected = per_doc.sum() / counts.sum()
                assert value.mean == pytest.approx(expected, rel=2e-4, abs=2e-5), (name, metric)
                boot = per_doc[draws].sum(1) / counts[draws].sum(1)
                low, high = np.quantile(boot, [0.025, 0.975])
                assert value.low == pytest.approx(low, rel=2e-3, abs=1e-4)
                assert value.high == pytest.approx(high, rel=2e-3, abs=1e-4)
            assert metrics["kl_bpb"].mean == pytest.approx(0.5 * metrics["kl"].mean)
            assert metrics["ce_bpb"].high == pytest.approx(0.5 * metrics["ce"].high)
    logit_last = result.lenses["logit"][2]
    assert logit_last["kl"].mean >= 0 and 1 <= logit_last["rank"].mean
    again = evaluate(model, lenses, docs, k=K, batch_size=3, n_boot=300, seed=7)
    same, first = again.lenses["tuned"][1]["kl"], result.lenses["tuned"][1]["kl"]
    assert same.to_dict() == pytest.approx(first.to_dict(), rel=1e-6)  # batching changes nothing
    assert "kl_bpb" not in again.lenses["tuned"][1]  # no ratio, no bits per byte


def test_table_and_files(model, lenses, tmp_path):
    docs = [list(range(1, 10)), list(range(20, 26))]
    result = evaluate(model, {"logit": lenses["logit"]}, docs, k=K, n_boot=50)
    table = markdown_table(result)
    assert table.count("| logit |") == 3 and "| model | output |" in table
    paths = write_comparison(result, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["lenses"]["logit"]["kind"] == "LogitLens"
    assert "plotly" in paths["figure"].read_text()[:5000].lower()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["comparison.json", "comparison.md", "comparison.html"]
    )


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match="kind"):
        parse_lens_specs(["tuneed:x"])
    with pytest.raises(InvalidInputError, match="needs a path"):
        parse_lens_specs(["tuned"])
    with pytest.raises(InvalidInputError, match="twice"):
        parse_lens_specs(["a=logit", "a=tuned:x"])
    specs = parse_lens_specs(["logit", "tuned:a/r4", "tuned:b/r8", "x=shortcut:s"])
    assert [s.name for s in specs] == ["logit", "tuned:r4", "tuned:r8", "x"]


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tuned_lens", *map(str, args)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNED_LENS_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)


def test_cli_compares_logit_shortcut_and_jacobian_on_glassllm(tmp_path):
    assets = pytest.importorskip("tuned_lens.assets")
    from tuned_lens.nn import LinearShortcutLens

    try:
        glass, tokenizer = assets.load_glassllm()
    except assets.AssetMissingError as err:
        pytest.skip(str(err))
    sys.path.insert(0, str(Path(__file__).parents[1] / "nn"))
    from jlens_helpers import FIT_TEXT, HELD_OUT_TEXT

    LinearShortcutLens.fit(glass, FIT_TEXT, tokenizer=tokenizer, ridge=0.1, progress=False).save(
        tmp_path / "shortcut"
    )
    jlens = JacobianLens.fit(glass, FIT_TEXT, tokenizer=tokenizer, max_seq_len=64, progress=False)
    jlens.save(tmp_path / "jacobian")
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in HELD_OUT_TEXT))
    out = tmp_path / "eval"
    proc = _run(
        "eval", "--model.name", "glassllm", "--data.name", data, "--max_seq_len", "64",
        "--lens", "logit", "--lens", f"shortcut:{tmp_path / 'shortcut'}",
        "--lens", f"jacobian:{tmp_path / 'jacobian'}", "--bootstrap", "200", "-o", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = json.loads((out / "comparison.json").read_text())
    assert list(table["lenses"]) == ["logit", "shortcut", "jacobian"]
    assert table["documents"] == len(HELD_OUT_TEXT) and table["nats_to_bpb"] > 0
    kl = {
        n: [v["layers"][str(j)]["kl"]["mean"] for j in range(4)] for n, v in table["lenses"].items()
    }
    assert all(s < lo for s, lo in zip(kl["shortcut"], kl["logit"])), kl
    print((out / "comparison.md").read_text())
