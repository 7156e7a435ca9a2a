"""CLI plumbing: help, flag compatibility, demo dispatch, clear errors for missing extras, and
Hugging Face ``datasets`` inputs read offline."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from tuned_lens.__main__ import build_parser, main
from tuned_lens.data import load_documents

REPO = Path(__file__).resolve().parents[2]


def test_original_flag_names_and_case_insensitive_enums_parse():
    args = build_parser().parse_args(
        [
            "train",
            "--model.name",
            "m",
            "--data.name",
            "the_pile",
            "all",
            "-o",
            "out",
            "--per_gpu_batch_size=2",
            "--precision",
            "BFloat16",
            "--loss",
            "ce",
            "--optimizer",
            "Adam",
            "--token_shift",
            "2",
            "--checkpoint_freq",
            "5",
            "--bias_only",
            "--fsdp",
            "true",
            "--cpu_offload",
            "--split",
            "train",
            "--text_column",
            "body",
            "--dataset_shuffle",
            "--seed",
            "7",
            "--noprogress",
            "--dataloader_shuffle",
            "false",
        ]
    )
    assert args.data_name == ["the_pile", "all"] and args.per_gpu_batch_size == 2
    assert args.precision == "bfloat16" and args.loss == "CE" and args.optimizer == "ADAM"
    assert args.bias_only and args.fsdp and args.cpu_offload and args.dataset_shuffle
    assert not args.progress and not args.dataloader_shuffle
    assert args.num_steps == 250 and args.tokens_per_step == 2**18
    ev = build_parser().parse_args(
        [
            "eval",
            "--model.name",
            "m",
            "-o",
            "o",
            "-l",
            "lens",
            "--nologit",
            "--tokens",
            "9",
            "--dist.per_gpu_batch_size",
            "3",
            "--layer_transfer",
            "--record_logit_stats",
        ]
    )
    assert ev.lens_name == "lens" and not ev.logit and ev.per_gpu_batch_size == 3
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--model.name", "m", "-o", "o", "--loss", "mse"])


def test_help_runs_as_a_module():
    run = subprocess.run(
        [sys.executable, "-m", "tuned_lens", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode == 0 and "--tokens_per_step" in run.stdout


def test_demo_is_dispatched(capsys):
    if importlib.util.find_spec("tuned_lens.demo") is None:
        pytest.skip("tuned_lens.demo not present")
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    assert "demo" in capsys.readouterr().out.lower()


def test_int8_without_bitsandbytes_is_a_clear_error(tmp_path, tiny_model_dir, text_jsonl, capsys):
    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed")
    code = main(
        [
            "train",
            "--model.name",
            str(tiny_model_dir),
            "--data.name",
            str(text_jsonl),
            "--precision",
            "int8",
            "-o",
            str(tmp_path / "o"),
            "--noprogress",
        ]
    )
    assert code == 2 and "bitsandbytes" in capsys.readouterr().err


def test_datasets_builders_read_local_files_offline(tmp_path):
    pytest.importorskip("datasets")
    csv = tmp_path / "docs.csv"
    csv.write_text("text,label\nhello there,1\ngeneral kenobi,2\n", encoding="utf-8")
    assert load_documents(str(csv)) == ["hello there", "general kenobi"]


def test_unknown_hub_dataset_offline_is_a_clear_error(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE"):
        load_documents(["no-such-org/no-such-dataset-xyz"], split="train")


def test_user_errors_name_the_flag_as_typed_without_a_traceback(tmp_path, capsys):
    code = main(["train", "--model.name", "m", "-o", str(tmp_path / "o"), "--num_steps", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "tuned-lens train: error: --num_steps must be >= 1, got 0" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_an_unloadable_model_is_a_user_error(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    missing.mkdir()
    code = main(["eval", "--model.name", str(missing), "-o", str(tmp_path / "o"), "--noprogress"])
    err = capsys.readouterr().err
    assert code == 2 and "--model.name" in err and "Traceback" not in err


def test_flag_spellings_map_python_names_to_the_flags():
    parser = build_parser()
    train = parser.parse_args(["train", "--model.name", "m", "-o", "o"]).flags
    assert train["model_name"] == "--model.name" and train["num_steps"] == "--num_steps"
    assert train["text_column"] == "--text_column" and train["progress"] == "--progress"
    ev = parser.parse_args(["eval", "--model.name", "m", "-o", "o"]).flags
    assert ev["per_gpu_batch_size"].startswith("--dist.per_gpu_batch_size")


def test_fused_loss_flags_reach_the_config(tmp_path, capsys):
    """``--nofused_loss`` / ``--loss_chunk_size`` become the TrainConfig fields, and a chunk
    below 1 is refused naming the flag."""
    from tuned_lens.training.flags import train_config

    parser = build_parser()
    base = ["train", "--model.name", "m", "-o", "o"]
    default = train_config(parser.parse_args(base))
    assert default.fused_loss is True and default.loss_chunk_size is None
    chosen = train_config(parser.parse_args([*base, "--nofused_loss", "--loss_chunk_size", "512"]))
    assert chosen.fused_loss is False and chosen.loss_chunk_size == 512
    code = main(["train", "--model.name", "m", "-o", str(tmp_path / "o"), "--loss_chunk_size", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--loss_chunk_size must be >= 1, got 0" in err
