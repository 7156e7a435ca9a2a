"""Evaluation: the CLI end to end, output files and units, token limits, layer transfer,
logit statistics, and the quality bar on the real glassllm model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tuned_lens.__main__ import main
from tuned_lens.training.eval_loop import EvalConfig, count_batches, evaluate_lenses


def _eval_args(model_dir, data, out, *extra):
    return [
        "eval",
        "--model.name",
        str(model_dir),
        "--data.name",
        str(data),
        "--max_seq_len",
        "32",
        "--noprogress",
        "-o",
        str(out),
        *map(str, extra),
    ]


@pytest.fixture(scope="module")
def trained_lens(tmp_path_factory, tiny_model_dir, text_jsonl):
    out = tmp_path_factory.mktemp("lens")
    assert (
        main(
            [
                "train",
                "--model.name",
                str(tiny_model_dir),
                "--data.name",
                str(text_jsonl),
                "--max_seq_len",
                "32",
                "--tokens_per_step",
                "128",
                "--num_steps",
                "4",
                "--noprogress",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_cli_train_then_eval_writes_all_outputs(tmp_path, tiny_model_dir, text_txt, trained_lens):
    out = tmp_path / "eval"
    assert (
        main(
            _eval_args(
                tiny_model_dir,
                text_txt,
                out,
                "-l",
                trained_lens,
                "--tokens",
                1024,
                "--dist.per_gpu_batch_size",
                2,
                "--record_logit_stats",
                "--layer_transfer",
            )
        )
        == 0
    )
    agg = json.loads((out / "aggregate_metrics.json").read_text())
    ratio = agg["nats_to_bpb"]
    assert 0 < ratio < 10 and agg["tokens"] == 1024 and agg["num_batches"] == 16
    for lens in ("logit", "tuned"):
        for metric in ("ce", "entropy", "kl"):
            layers = agg[lens][metric]
            assert sorted(layers) == ["layer_0", "layer_1"]
            assert all(math.isfinite(v) for v in layers.values())
            for key, value in layers.items():
                assert agg["bits_per_byte"][lens][metric][key] == pytest.approx(value * ratio)
        assert all(v >= -1e-6 for v in agg[lens]["kl"].values())
    assert set(agg["baseline"]) == {"ce", "entropy"}
    assert 0 < agg["baseline"]["ce"]["final"] < 2 * math.log(256)
    transfer = agg["tuned"]["layer_transfer"]
    assert transfer["ce"]["layer_1"]["layer_1"] == pytest.approx(agg["tuned"]["ce"]["layer_1"])
    assert transfer["kl"]["layer_0"]["layer_0"] == pytest.approx(0.0, abs=1e-6)
    assert transfer["kl"]["layer_1"]["layer_0"] >= 0.0

    # A real JSON-lines file: one object per line, each with the same nesting, in nats.
    lines = (out / "batches.jsonl").read_text().splitlines()
    assert len(lines) == 16
    records = [json.loads(line) for line in lines]
    assert records[0]["units"] == "nats" and records[3]["batch"] == 3
    mean_kl = np.mean([r["tuned"]["kl"]["layer_1"] for r in records])
    assert mean_kl == pytest.approx(agg["tuned"]["kl"]["layer_1"], rel=1e-9)

    stats = json.loads((out / "logit_stats.json").read_text())
    for row in (
        stats["logit"]["logit_stats"]["layer_0"],
        stats["baseline"]["logit_stats"]["final"],
    ):
        assert len(row) == 256 and sum(row) == pytest.approx(1.0, abs=1e-4)
    html = (out / "per_layer_metrics.html").read_text()
    assert "plotly" in html.lower() and "tuned lens" in html


def test_eval_logit_only_and_the_token_limit(tmp_path, tiny_model_dir, text_txt, capsys):
    out = tmp_path / "eval"
    assert main(_eval_args(tiny_model_dir, text_txt, out, "--tokens", 256)) == 0
    agg = json.loads((out / "aggregate_metrics.json").read_text())
    assert "tuned" not in agg and agg["tokens"] == 256
    code = main(_eval_args(tiny_model_dir, text_txt, tmp_path / "e2", "--tokens", 10**8))
    assert code == 2 and "Requested to evaluate on" in capsys.readouterr().err
    assert not (tmp_path / "e2" / "aggregate_metrics.json").exists()
    code = main(_eval_args(tiny_model_dir, text_txt, tmp_path / "e3", "--nologit"))
    assert code == 2 and "nothing to evaluate" in capsys.readouterr().err
    code = main(
        _eval_args(
            tiny_model_dir,
            text_txt,
            tmp_path / "e4",
            "--per_gpu_batch_size",
            2,
            "--dist.per_gpu_batch_size",
            4,
        )
    )
    assert code == 2 and "disagree" in capsys.readouterr().err


def test_batch_count_follows_the_token_budget():
    cfg = EvalConfig(tokens=1000, per_gpu_batch_size=2)
    assert count_batches(100, 32, cfg, world_size=2) == 1000 // (2 * 2 * 32)
    assert count_batches(100, 32, EvalConfig(), world_size=3) == 33


@pytest.mark.slow
def test_tuned_lens_beats_the_logit_lens_at_every_layer_on_glassllm():
    """Quality bar: a short run on tinyshakespeare gives lower held-out KL at EVERY layer."""
    from tuned_lens.assets import load_glassllm, tinyshakespeare_text
    from tuned_lens.data import pack_documents
    from tuned_lens.nn import LogitLens, TunedLens
    from tuned_lens.training.train_loop import TrainConfig, train_lens

    model, tokenizer = load_glassllm()
    text = tinyshakespeare_text()
    cut = text.index("\n\n", int(len(text) * 0.9)) + 2  # hold out the last tenth
    train = pack_documents([text[:cut]], tokenizer, max_seq_len=128)
    held_out = pack_documents([text[cut:]], tokenizer, max_seq_len=128)
    lens = TunedLens.from_model(model)
    # 24k tokens: a few seconds on an idle 2-core machine; the margins are wide (e.g. layer 3:
    # 0.22 vs 0.32 nats, layer 0: 4.8 vs 13.7).
    config = TrainConfig(num_steps=12, tokens_per_step=2048, per_gpu_batch_size=8, progress=False)
    result = train_lens(model, lens, train, config)
    assert sum(result.losses[-1]) < sum(result.losses[0])
    lenses = {"logit": LogitLens.from_model(model), "tuned": lens}
    evaluation = evaluate_lenses(
        model, lenses, held_out, EvalConfig(tokens=8192, per_gpu_batch_size=8, progress=False)
    )
    logit_kl = evaluation.aggregate["logit"]["kl"]
    tuned_kl = evaluation.aggregate["tuned"]["kl"]
    assert len(tuned_kl) == model.config.num_hidden_layers == 4
    for layer in logit_kl:
        assert tuned_kl[layer] < logit_kl[layer], (layer, tuned_kl, logit_kl)
    # Direct check of the KL in nats with torch for one batch, independent of lens_stats.
    ids = held_out.input_ids[:2]
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        p = out.logits.log_softmax(-1)
        q = lens(out.hidden_states[3], idx=3).log_softmax(-1)
        kl = (p.exp() * (p - q)).sum(-1).mean().item()
    assert 0 <= kl < logit_kl["layer_3"] * 2
