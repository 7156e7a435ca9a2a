"""Small pieces of the demo: settings, the command line, the data split, resume bookkeeping."""

from __future__ import annotations

import json

import pytest
from tuned_lens import demo


def test_quick_flag_selects_the_small_budget():
    args = demo.build_parser().parse_args(["--quick", "--output", "x"])
    settings = demo.settings_from_args(args)
    assert settings.steps == demo.QUICK_BUDGET.steps
    assert settings.tokens_per_step == demo.QUICK_BUDGET.tokens_per_step
    assert settings.seq_len == demo.QUICK_BUDGET.seq_len
    assert settings.model == "glassllm" and settings.data == "tinyshakespeare"


def test_explicit_flags_override_the_budget():
    args = demo.build_parser().parse_args(
        [
            "--quick",
            "--steps",
            "3",
            "--tokens-per-step",
            "256",
            "--seq-len",
            "32",
            "--seed",
            "7",
            "--sentence",
            "One.",
            "--sentence",
            "Two.",
            "--model",
            "smollm2",
            "--data",
            "notes.jsonl",
            "--force",
            "--no-png",
        ]
    )
    settings = demo.settings_from_args(args)
    assert (settings.steps, settings.tokens_per_step, settings.seq_len, settings.seed) == (
        3,
        256,
        32,
        7,
    )
    assert settings.sentences == ("One.", "Two.")
    assert settings.checkpoint_freq == 2  # min(quick frequency, steps)
    assert settings.force and not settings.png
    assert (settings.model, settings.data) == ("smollm2", "notes.jsonl")


def test_defaults_without_arguments():
    settings = demo.settings_from_args(demo.build_parser().parse_args([]))
    assert settings == demo.DemoSettings()
    assert str(settings.output) == "tuned-lens-demo"


@pytest.mark.parametrize("flag", ["--steps", "--tokens-per-step", "--seq-len", "--eval-tokens"])
def test_non_positive_budgets_are_rejected(flag, capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main([flag, "0", "--output", "unused"])
    assert exc.value.code == 2
    # The option is named as this command spells it (--tokens-per-step, not tokens_per_step).
    assert f"{flag} must be a positive integer" in capsys.readouterr().err


def test_settings_validate_types():
    with pytest.raises(ValueError, match="steps"):
        demo.DemoSettings(steps=True)
    with pytest.raises(ValueError, match="sentences"):
        demo.DemoSettings(sentences=("ok", "  "))
    with pytest.raises(ValueError, match="seq_len"):
        demo.DemoSettings(seq_len=1)


def test_split_one_text_at_a_line_break():
    text = "".join(f"line {i}\n" for i in range(100))
    train, held_out = demo.split_documents([text])
    assert len(train) == len(held_out) == 1
    assert train[0] + held_out[0] == text
    assert train[0].endswith("\n")
    assert 0.05 < len(held_out[0]) / len(text) < 0.15


def test_split_many_documents_by_count():
    docs = [f"doc {i}" for i in range(25)]
    train, held_out = demo.split_documents(docs)
    assert train == docs[:22] and held_out == docs[22:]
    train, held_out = demo.split_documents(["a", "b"])
    assert (train, held_out) == (["a"], ["b"])


def test_split_rejects_nothing_to_split():
    with pytest.raises(ValueError, match="no non-empty"):
        demo.split_documents(["", ""])
    with pytest.raises(ValueError, match="held_out"):
        demo.split_documents(["abc"], held_out=1.0)


def test_changed_settings_clear_only_the_demos_own_results(tmp_path):
    settings = demo.DemoSettings(output=tmp_path, steps=5)
    paths = demo._layout(tmp_path)
    (paths["lens"]).mkdir()
    (paths["lens"] / "config.json").write_text("{}")
    (paths["checkpoints"]).mkdir()
    (tmp_path / "my_notes.txt").write_text("keep me")
    demo._write_state(paths["state"], settings, "/models/x", training={})

    same = demo._reset_if_settings_changed(tmp_path, settings, log=lambda _: None)
    assert not same and paths["lens"].exists()

    messages: list[str] = []
    other = demo.DemoSettings(output=tmp_path, steps=6)
    assert demo._reset_if_settings_changed(tmp_path, other, log=messages.append)
    assert not paths["lens"].exists() and not paths["checkpoints"].exists()
    assert not paths["state"].exists()
    assert (tmp_path / "my_notes.txt").read_text() == "keep me"
    assert any("starting over" in m for m in messages)


def test_state_file_is_json_with_the_fingerprint(tmp_path):
    settings = demo.DemoSettings(output=tmp_path)
    path = tmp_path / demo.STATE_FILE
    demo._write_state(path, settings, "/m", training={"steps": 1})
    state = json.loads(path.read_text())
    assert state["settings"] == settings.fingerprint()
    assert state["training"] == {"steps": 1}
    assert not list(tmp_path.glob(".*tmp*"))


def test_format_table_lists_every_layer_and_the_model():
    metrics = {
        "tokens": 1024,
        "layers": [
            {
                "layer": j,
                "kl_logit": 5.0 - j,
                "kl_tuned": 1.0 - 0.1 * j,
                "ce_logit": 7.0,
                "ce_tuned": 4.0,
            }
            for j in range(3)
        ],
        "baseline": {"ce": 3.5, "entropy": 3.0},
    }
    table = demo.format_table(metrics)
    lines = table.splitlines()
    assert "KL logit" in lines[0] and "1,024" in lines[0]
    assert len(lines) == 2 + 3 + 1
    assert lines[2].split()[:3] == ["0", "5.000", "1.000"]
    assert lines[-1].split()[0] == "model"
    named = demo.format_table(metrics, recipe="fast").splitlines()
    assert "fast recipe" in named[0] and named[1:] == lines


def test_the_demo_recipes_are_the_trainers_and_fast_is_the_default():
    from tuned_lens.demo.cli import build_parser
    from tuned_lens.demo.settings import DEMO_RECIPES
    from tuned_lens.errors import InvalidInputError
    from tuned_lens.training.train_config import RECIPES

    assert sorted(DEMO_RECIPES) == sorted(RECIPES)
    assert demo.DemoSettings().recipe == "fast"
    assert build_parser().parse_args(["--recipe", "original"]).recipe == "original"
    assert demo.DemoSettings(recipe="original").fingerprint()["recipe"] == "original"
    with pytest.raises(InvalidInputError, match="recipe must be one of"):
        demo.DemoSettings(recipe="faster")


def test_bigger_models_get_a_smaller_default_budget_on_the_cpu():
    assert demo.default_budget("glassllm", quick=False, device="cpu") == demo.FULL_BUDGET
    assert demo.default_budget("smollm2", quick=False, device="cpu") == (
        demo.LARGE_MODEL_CPU_BUDGET
    )
    assert demo.default_budget("smollm2", quick=False, device="cuda") == demo.FULL_BUDGET
    assert demo.default_budget("smollm2", quick=True, device="cpu") == demo.QUICK_BUDGET
    args = demo.build_parser().parse_args(
        ["--model", "./folder", "--device", "cpu", "--steps", "3"]
    )
    settings = demo.settings_from_args(args)
    assert settings.steps == 3
    assert settings.tokens_per_step == demo.LARGE_MODEL_CPU_BUDGET.tokens_per_step


def test_character_cap_keeps_whole_documents_in_order():
    docs = ["abcdef", "ghij", "klmnop"]
    assert demo._cap_characters(docs, 8) == ["abcdef", "gh"]
    assert demo._cap_characters(docs, 100) == docs
    assert demo._cap_characters(docs, 6) == ["abcdef"]


def test_threads_option_is_validated():
    args = demo.build_parser().parse_args(["--threads", "2"])
    assert demo.settings_from_args(args).threads == 2
    with pytest.raises(ValueError, match="threads"):
        demo.DemoSettings(threads=0)


def test_missing_data_file_is_a_clear_error(tmp_path, capsys):
    code = demo.main(
        ["--quick", "--output", str(tmp_path / "out"), "--data", str(tmp_path / "absent.jsonl")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "tuned-lens demo: error:" in err and "absent.jsonl" in err


def test_too_little_data_is_a_clear_error(tmp_path, capsys):
    data = tmp_path / "tiny.jsonl"
    data.write_text(
        "\n".join(json.dumps({"text": f"Line {i} of a tiny file."}) for i in range(30)) + "\n"
    )
    code = demo.main(["--quick", "--output", str(tmp_path / "out"), "--data", str(data)])
    assert code == 2
    err = capsys.readouterr().err
    assert "tuned-lens demo: error:" in err


def test_unusable_device_is_rejected_before_loading(capsys):
    import torch

    with pytest.raises(SystemExit) as exc:
        demo.main(["--device", "no-such-device", "--output", "unused"])
    assert exc.value.code == 2
    assert "--device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            demo.main(["--device", "cuda", "--output", "unused"])
        assert "no CUDA device" in capsys.readouterr().err


def test_drawn_figures_record_names_files_relative_to_the_output(tmp_path):
    from tuned_lens.demo.figures import DrawnFigures, TrajectoryPage

    pages = (
        TrajectoryPage("Hi.", tmp_path / "trajectories" / "sentence_1.html", ("entropy",)),
        TrajectoryPage(
            "Yo.",
            tmp_path / "trajectories" / "sentence_2.html",
            ("entropy", "forward_kl"),
            png=tmp_path / "trajectories" / "sentence_2_entropy.png",
        ),
    )
    drawn = DrawnFigures(tmp_path, tmp_path / "kl_per_layer.html", None, pages)
    assert drawn.to_json() == {
        "kl_per_layer_html": "kl_per_layer.html",
        "trajectories": [
            {"sentence": "Hi.", "html": "trajectories/sentence_1.html", "statistics": ["entropy"]},
            {
                "sentence": "Yo.",
                "html": "trajectories/sentence_2.html",
                "statistics": ["entropy", "forward_kl"],
                "png": "trajectories/sentence_2_entropy.png",
            },
        ],
    }


def test_library_errors_name_options_as_the_demo_spells_them():
    from tuned_lens.cli import user_message
    from tuned_lens.errors import InvalidInputError

    err = InvalidInputError("text_column 'body' is missing from record 3", option="text_column")
    assert user_message(err, demo.FLAGS) == "--text-column 'body' is missing from record 3"
    err = InvalidInputError("num_steps must be >= 1", option="num_steps")
    assert user_message(err, demo.FLAGS) == "--steps must be >= 1"


def test_main_leaves_the_process_logging_as_it_was(tmp_path, capsys):
    import logging

    ours = logging.getLogger("tuned_lens")
    before = (list(ours.handlers), ours.level, ours.propagate, logging.getLogger().level)
    code = demo.main(["--quick", "--output", str(tmp_path / "o"), "--data", str(tmp_path / "x")])
    assert code == 2
    after = (list(ours.handlers), ours.level, ours.propagate, logging.getLogger().level)
    assert after == before
    assert capsys.readouterr().err.count("error:") == 1
