"""The one command-line error policy and the quiet terminal (tuned_lens.cli).

Unit tests of run_command / configure_logging, and real `python -m tuned_lens` processes: a
user error prints one line naming the flag as it was typed and exits 2, never a traceback.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from tuned_lens import cli
from tuned_lens.errors import InvalidInputError, LensFileError


def _raise(exc: BaseException) -> int:
    raise exc


def test_user_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    err = LensFileError("lens folder x: config.json is missing\n  (looked in x)")
    assert cli.run_command("eval", lambda: _raise(err)) == cli.EXIT_USER_ERROR
    out = capsys.readouterr().err.strip().splitlines()
    assert out == ["tuned-lens eval: error: lens folder x: config.json is missing (looked in x)"]


def test_missing_path_is_a_user_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    def body() -> int:
        open(tmp_path / "absent.txt", encoding="utf-8").close()
        return 0

    assert cli.run_command("train", body) == 2
    assert "absent.txt" in capsys.readouterr().err


def test_option_spelled_as_the_command_spells_it(capsys: pytest.CaptureFixture[str]) -> None:
    err = InvalidInputError("text_column 'body' is not a column of the data", option="text_column")
    cli.run_command("demo", lambda: _raise(err), flags={"text_column": "--text-column"})
    assert "error: --text-column 'body' is not a column" in capsys.readouterr().err


def test_internal_error_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        cli.run_command("train", lambda: 1 // 0)


def test_debug_reraises_user_errors() -> None:
    with pytest.raises(LensFileError):
        cli.run_command("eval", lambda: _raise(LensFileError("bad")), debug=True)


def test_ctrl_c_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run_command("train", lambda: _raise(KeyboardInterrupt())) == 130
    assert "interrupted" in capsys.readouterr().err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuned_lens", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )


def test_configure_logging_keeps_third_party_info_off_the_terminal() -> None:
    code = (
        "import logging\n"
        "from tuned_lens.cli import configure_logging\n"
        "configure_logging('INFO')\n"
        "logging.getLogger('kaleido').info('third-party chatter')\n"
        "logging.getLogger('choreographer.browser').info('more chatter')\n"
        "logging.getLogger('tuned_lens.training').info('our progress line')\n"
        "logging.getLogger('kaleido').warning('a real warning')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "our progress line" in proc.stderr
    assert "a real warning" in proc.stderr
    assert "chatter" not in proc.stderr


def test_configure_logging_is_idempotent() -> None:
    cli.configure_logging("INFO")
    cli.configure_logging("DEBUG")
    ours = logging.getLogger("tuned_lens")
    marked = [h for h in ours.handlers if getattr(h, "_tuned_lens_cli", False)]
    assert len(marked) == 1
    assert ours.level == logging.DEBUG


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["train", "--model.name", "x", "--data.name", "y", "--num_steps", "0"], "--num_steps"),
        (
            ["train", "--model.name", "x", "--data.name", "y", "--tokens_per_step", "-5"],
            "--tokens_per_step",
        ),
    ],
)
def test_train_rejects_bad_options_in_one_line(args: list[str], flag: str) -> None:
    proc = _run(*args, "-o", "unused-output")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tuned-lens train: error:")
    assert flag in lines[0]


def test_eval_missing_lens_folder_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-lens"
    proc = _run(
        "eval", "--model.name", "x", "--data.name", "y", "-l", str(missing), "-o", str(tmp_path)
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tuned-lens eval: error:"), proc.stderr
