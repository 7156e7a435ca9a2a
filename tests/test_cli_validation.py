"""Command-line options and data files a user can get wrong: one line, exit 2, no traceback.

Every case runs a real ``python -m tuned_lens`` process against the bundled tiny model
(``--model.name glassllm``, offline) and small data files written here. A bad option is refused
before the model loads; an unwritable ``-o`` before anything is trained; a data file that cannot
be read names the file (and the line, for JSON lines).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Enough for torch, transformers and the tiny model (about 3.7 GB of address space); reading
# /dev/zero without a bound would run into it within seconds instead of filling the machine.
_ADDRESS_SPACE_LIMIT = 6 * 2**30

TRAIN = ["train", "--model.name", "glassllm", "--num_steps", "2", "--tokens_per_step", "64"]
TRAIN += ["--max_seq_len", "32", "--noprogress"]
EVAL = ["eval", "--model.name", "glassllm", "--tokens", "64", "--max_seq_len", "32"]
EVAL += ["--noprogress"]


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE_LIMIT, _ADDRESS_SPACE_LIMIT))


def _run(*args: str | Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "tuned_lens", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        preexec_fn=_limit_memory,
    )


def _error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The one error line of a refused command (asserting exit 2 and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    prefix = f"tuned-lens {command}: error: "
    lines = [line for line in proc.stderr.splitlines() if line.startswith("tuned-lens")]
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr
    return lines[0][len(prefix) :]


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "docs.jsonl"
    lines = [json.dumps({"text": f"Line {i} of a short story about a lens."}) for i in range(60)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ numeric options


@pytest.mark.parametrize(
    ("command", "flag"),
    [
        ("train", "--per_gpu_batch_size"),
        ("eval", "--per_gpu_batch_size"),
        ("eval", "--dist.per_gpu_batch_size"),
    ],
)
def test_zero_batch_size_is_refused_not_rounded_up(
    tmp_path: Path, docs: Path, command: str, flag: str
) -> None:
    base = TRAIN if command == "train" else EVAL
    proc = _run(*base, "--data.name", docs, "-o", tmp_path / "out", flag, "0")
    line = _error_line(proc, command)
    assert line.startswith(f"{flag} must be >= 1, got 0"), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--per_gpu_batch_size", "--dist.per_gpu_batch_size"])
def test_zero_batch_size_is_refused_when_comparing_lenses(
    tmp_path: Path, docs: Path, flag: str
) -> None:
    """`eval --lens ...` takes the same batch-size checks (it used to turn 0 into 8)."""
    proc = _run(*EVAL, "--lens", "logit", "--data.name", docs, "-o", tmp_path / "out", flag, "0")
    line = _error_line(proc, "eval")
    assert line.startswith(f"{flag} must be >= 1, got 0"), line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--lr_scale", "nan"),
        ("--lr_scale", "inf"),
        ("--lr_scale", "-inf"),
        ("--lr_scale", "0"),
        ("--weight_decay", "nan"),
        ("--weight_decay", "inf"),
        ("--weight_decay", "-0.5"),
        ("--momentum", "nan"),
    ],
)
def test_non_finite_optimiser_settings_are_refused(
    tmp_path: Path, docs: Path, flag: str, value: str
) -> None:
    proc = _run(*TRAIN, "--data.name", docs, "-o", tmp_path / "out", f"{flag}={value}")
    line = _error_line(proc, "train")
    assert line.startswith(f"{flag} must be "), line
    assert value in line
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the output folder


def _unwritable_outputs(tmp_path: Path) -> list[Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder\n", encoding="utf-8")
    outputs = [a_file, a_file / "below-a-file"]
    if Path("/sys").is_dir():  # sysfs refuses new entries, even to root
        outputs.append(Path("/sys/tuned-lens-output"))
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        read_only.chmod(0o555)
        outputs.append(read_only / "out")
    return outputs


@pytest.mark.parametrize("command", ["train", "eval"])
def test_unwritable_output_is_refused_before_the_model_loads(tmp_path: Path, command: str) -> None:
    # The model does not exist: an output check that ran after loading would report the model.
    missing_model = tmp_path / "no-such-model"
    for output in _unwritable_outputs(tmp_path):
        proc = _run(command, "--model.name", missing_model, "-o", output, "--noprogress")
        line = _error_line(proc, command)
        assert line.startswith("--output "), (output, line)
        assert str(output) in line and "no-such-model" not in line, line


def test_checkpoint_dir_is_checked_with_the_output(tmp_path: Path, docs: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x", encoding="utf-8")
    out = tmp_path / "out"
    proc = _run(*TRAIN, "--data.name", docs, "-o", out, "--checkpoint_freq", "1",
                "--checkpoint_dir", a_file)  # fmt: skip
    line = _error_line(proc, "train")
    assert line.startswith("--checkpoint_dir ") and str(a_file) in line, line
    assert not out.exists()


def test_a_writable_output_still_trains(tmp_path: Path, docs: Path) -> None:
    out = tmp_path / "new" / "nested" / "lens"
    proc = _run(*TRAIN, "--data.name", docs, "-o", out, "--per_gpu_batch_size", "2")
    assert proc.returncode == 0, proc.stderr
    assert (out / "config.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name != "lens"], "a probe file was left"


# ------------------------------------------------------------------ the device


@pytest.mark.parametrize("device", ["garbage", "cuda:x", "cuda:999", "cudagarbage", "meta"])
def test_a_bad_device_is_one_line(tmp_path: Path, docs: Path, device: str) -> None:
    proc = _run(*TRAIN, "--data.name", docs, "-o", tmp_path / "out", "--device", device)
    line = _error_line(proc, "train")
    assert line.startswith(f"--device {device!r}"), line


# ------------------------------------------------------------------ data files


def test_binary_data_names_the_file(tmp_path: Path) -> None:
    data = tmp_path / "random.bin"
    data.write_bytes(bytes(range(256)) * 8)
    proc = _run(*TRAIN, "--data.name", data, "-o", tmp_path / "out")
    line = _error_line(proc, "train")
    assert str(data) in line and "UTF-8" in line, line


def test_binary_json_lines_name_the_file_and_line(tmp_path: Path) -> None:
    data = tmp_path / "docs.jsonl"
    data.write_bytes(b'{"text": "fine"}\n{"text": "\xff\xfe broken"}\n')
    proc = _run(*TRAIN, "--data.name", data, "-o", tmp_path / "out")
    line = _error_line(proc, "train")
    assert f"{data}:2" in line and "UTF-8" in line, line


def test_dev_zero_is_refused_without_reading_it(tmp_path: Path) -> None:
    proc = _run(*TRAIN, "--data.name", "/dev/zero", "-o", tmp_path / "out", timeout=60)
    line = _error_line(proc, "train")
    assert line.startswith("--data.name /dev/zero is not a regular file"), line


def test_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "docs.txt"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    proc = _run(*TRAIN, "--data.name", fifo, "-o", tmp_path / "out", timeout=60)
    line = _error_line(proc, "train")
    assert line.startswith(f"--data.name {fifo} is not a regular file"), line


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("broken.jsonl", '{"text": "one"}\n\n{"text": "two"}\n{"text": broken\n', ":4"),
        ("list.json", '[\n  {"text": "one"},\n  {"text": "two",}\n]\n', ":3"),
        ("number.jsonl", '{"text": "one"}\n{"text": 5}\n', ":2"),
    ],
)
def test_broken_json_names_the_file_and_the_line(
    tmp_path: Path, name: str, content: str, where: str
) -> None:
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    proc = _run(*TRAIN, "--data.name", data, "-o", tmp_path / "out")
    line = _error_line(proc, "train")
    assert f"{data}{where}" in line, line
