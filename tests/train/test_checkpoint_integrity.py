"""Resuming from damaged, incomplete, out-of-range or foreign checkpoints (issue 16).

Real training runs write real snapshots; the tests damage the files on disk, then resume.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as load_bytes
from safetensors.torch import save as save_bytes
from tuned_lens.data import PackedChunks
from tuned_lens.nn import TunedLens
from tuned_lens.training import checkpoint
from tuned_lens.training.checkpoint import list_checkpoints, read_checkpoint, save_checkpoint
from tuned_lens.training.ingredients import DataSpec, ModelSpec
from tuned_lens.training.train_loop import TrainConfig, train_lens

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return ModelSpec(name=str(tiny_model_dir)).load(torch.device("cpu"))


@pytest.fixture(scope="module")
def chunks(tiny, text_jsonl) -> PackedChunks:
    return DataSpec(name=[str(text_jsonl)], max_seq_len=32).load(tiny[1])


def _config(folder: Path, steps: int = 4) -> TrainConfig:
    return TrainConfig(
        num_steps=steps,
        tokens_per_step=64,
        checkpoint_freq=1,
        checkpoint_dir=folder,
        progress=False,
        optimizer=checkpoint_optimizer(),
    )


def checkpoint_optimizer():
    from tuned_lens.training.optim import OptimizerConfig

    return OptimizerConfig(optimizer="ADAM")


def _train(model, chunks, folder, steps=4):
    return train_lens(model, TunedLens.from_model(model), chunks, _config(folder, steps))


@pytest.fixture
def finished_run(tmp_path, tiny, chunks):
    """A finished 4-step run: snapshots 3 and 4 on disk."""
    folder = tmp_path / "ckpt"
    _train(tiny[0], chunks, folder)
    assert [s for s, _ in list_checkpoints(folder)] == [3, 4]
    return folder


def _newest(folder: Path) -> Path:
    return list_checkpoints(folder)[-1][1]


def _rewrite(path: Path, edit) -> None:
    """Rewrite a snapshot with ``edit(tensors, metadata)`` applied, as a buggy tool would."""
    data = path.read_bytes()
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    tensors, metadata = load_bytes(data), dict(header["__metadata__"])
    edit(tensors, metadata)
    path.write_bytes(save_bytes(tensors, metadata=metadata))


def _resume_start(model, chunks, folder, caplog) -> int:
    with caplog.at_level(logging.WARNING):
        return _train(model, chunks, folder).start_step


def test_flipped_bits_fall_back_to_the_previous_checkpoint(finished_run, tiny, chunks, caplog):
    path = _newest(finished_run)
    raw = bytearray(path.read_bytes())
    header_end = 8 + int.from_bytes(raw[:8], "little")
    rng = random.Random(0)
    for _ in range(50):  # 50 flipped bits in the tensor data
        raw[rng.randrange(header_end, len(raw))] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum"):
        read_checkpoint(path)
    assert _resume_start(tiny[0], chunks, finished_run, caplog) == 3
    assert "checksum" in caplog.text and "skipping" in caplog.text


def test_deleted_optimizer_state_is_refused(finished_run, tiny, chunks, caplog):
    def drop_optimizer(tensors, _metadata):
        for name in [n for n in tensors if n.startswith("optim.")]:
            del tensors[name]

    _rewrite(_newest(finished_run), drop_optimizer)
    assert _resume_start(tiny[0], chunks, finished_run, caplog) == 3
    assert "incomplete state" in caplog.text


def test_optimizer_state_missing_from_an_intact_file_is_refused(finished_run, tiny, chunks, caplog):
    """Even with a consistent tensor list and checksum, momentum-less state is not resumed."""

    def forge_without_optimizer(tensors, metadata):
        for name in [n for n in tensors if n.startswith("optim.")]:
            del tensors[name]
        document = json.loads(metadata["tuned_lens"])
        document["optimizer"]["state"] = {}
        document["tensors"] = checkpoint._tensor_manifest(tensors)
        metadata["tuned_lens"] = json.dumps(document)
        metadata["sha256"] = checkpoint._digest(document, tensors)

    _rewrite(_newest(finished_run), forge_without_optimizer)
    assert _resume_start(tiny[0], chunks, finished_run, caplog) == 3
    assert "incomplete optimiser state" in caplog.text


def _forge(path: Path, **changes) -> None:
    """Change the document and recompute the checksum: a file that is intact but wrong."""

    def edit(tensors, metadata):
        document = json.loads(metadata["tuned_lens"])
        document.update(changes)
        metadata["tuned_lens"] = json.dumps(document)
        metadata["sha256"] = checkpoint._digest(document, tensors)

    _rewrite(path, edit)


@pytest.mark.parametrize("step", [99, 5, -9])
def test_steps_out_of_range_are_refused(finished_run, tiny, chunks, caplog, step):
    newest = _newest(finished_run)
    name = newest.with_name(f"checkpoint_{abs(step):08d}.safetensors")
    newest.rename(name)
    _forge(name, step=step)  # intact file, name and document agree (but for the sign)
    assert _resume_start(tiny[0], chunks, finished_run, caplog) == 3
    assert f"step {step}" in caplog.text
    assert ("out of range" in caplog.text) == (step > 0)


def test_a_checkpoint_of_another_model_is_refused(finished_run, tiny, chunks):
    other = copy.deepcopy(tiny[0])
    with torch.no_grad():
        other.lm_head.weight.mul_(1.01)  # same shapes and name, other weights
    with pytest.raises(ValueError, match="unembedding_hash"):
        _train(other, chunks, finished_run)


def test_a_checkpoint_of_other_data_is_refused(finished_run, tiny, chunks):
    shifted = PackedChunks(
        input_ids=chunks.input_ids.roll(1),
        nats_to_bpb=chunks.nats_to_bpb,
        num_documents=chunks.num_documents,
        total_tokens=chunks.total_tokens,
        total_bytes=chunks.total_bytes,
    )
    with pytest.raises(ValueError, match="data_hash"):
        _train(tiny[0], shifted, finished_run)


def test_an_intact_checkpoint_resumes(finished_run, tiny, chunks, caplog):
    assert _resume_start(tiny[0], chunks, finished_run, caplog) == 4
    assert "refusing" not in caplog.text and "skipping" not in caplog.text


def test_every_checkpoint_refused_starts_over_with_a_warning(finished_run, tiny, chunks, caplog):
    for _, path in list_checkpoints(finished_run):
        path.write_bytes(path.read_bytes()[:-7])
    assert _resume_start(tiny[0], chunks, finished_run, caplog) == 0
    assert "no usable checkpoint" in caplog.text


# -- 7: temporaries of a writer killed with SIGKILL -----------------------------------------------

_WRITER = """
    import sys, torch
    from tuned_lens.training.checkpoint import save_checkpoint
    big = {"w": torch.randn(4096, 4096)}  # 64 MiB: each write takes a while
    while True:
        save_checkpoint(sys.argv[1], step=1, lens_state=big, optimizer_state={"state": {},
                        "param_groups": []}, extra={})
"""


def test_temp_files_of_a_killed_checkpoint_writer_are_removed_at_the_next_start(
    tmp_path, tiny, chunks
):
    folder = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_WRITER), str(folder)], env=env
    )
    temp = folder / f".checkpoint_00000001.safetensors.tmp-{writer.pid}"
    deadline = time.monotonic() + 60
    while not temp.exists():
        assert writer.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert temp.exists()
    (folder / "checkpoint_00000001.safetensors").unlink(missing_ok=True)  # another run's
    _train(tiny[0], chunks, folder, steps=1)
    assert not temp.exists()
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


# -- 9: training_summary.json ---------------------------------------------------------------------


def test_training_summary_is_complete_json_and_leaves_no_temporaries(
    tmp_path, tiny_model_dir, text_jsonl
):
    from tuned_lens.__main__ import main

    out = tmp_path / "out"
    args = ["train", "--model.name", str(tiny_model_dir), "--data.name", str(text_jsonl)]
    args += ["--max_seq_len", "32", "--tokens_per_step", "64", "--num_steps", "1"]
    assert main([*args, "--noprogress", "-o", str(out)]) in (0, None)
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["num_steps"] == 1 and summary["start_step"] == 0
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


# -- 10: crafted checkpoint files ----------------------------------------------------------------


def _small_checkpoint(folder: Path) -> Path:
    return save_checkpoint(
        folder,
        step=2,
        lens_state={"0.weight": torch.ones(2, 2)},
        optimizer_state={"state": {}, "param_groups": []},
        extra={},
    )


def _metadata_file(path: Path, metadata) -> None:
    path.write_bytes(save_bytes({"lens.0.weight": torch.ones(2, 2)}, metadata=metadata))


CRAFTED_CHECKPOINTS = {
    "not-safetensors": lambda p: p.write_bytes(b"PK\x03\x04garbage"),
    "empty": lambda p: p.write_bytes(b""),
    "no-metadata": lambda p: _metadata_file(p, None),
    "metadata-not-json": lambda p: _metadata_file(p, {"tuned_lens": "{nope"}),
    "deep-nesting": lambda p: _metadata_file(p, {"tuned_lens": "[" * 100_000 + "]" * 100_000}),
    "5000-digit-step": lambda p: _metadata_file(p, {"tuned_lens": '{"step": ' + "9" * 5000 + "}"}),
    "document-is-a-list": lambda p: _forge_raw(p, []),
    "step-as-text": lambda p: _forge(p, step="2"),
    "step-as-bool": lambda p: _forge(p, step=True),
    "optimizer-as-number": lambda p: _forge(p, optimizer=5),
    "extra-as-list": lambda p: _forge(p, extra=[1]),
    "format-version-huge": lambda p: _forge(p, format_version=10**40),
    "tensor-list-missing": lambda p: _forge(p, tensors=None),
}


def _forge_raw(path: Path, document) -> None:
    def edit(tensors, metadata):
        metadata["tuned_lens"] = json.dumps(document)

    _rewrite(path, edit)


@pytest.mark.parametrize("name", sorted(CRAFTED_CHECKPOINTS))
def test_crafted_checkpoints_give_a_lens_file_error_naming_the_file(tmp_path, name):
    from tuned_lens.errors import LensFileError

    path = _small_checkpoint(tmp_path)
    CRAFTED_CHECKPOINTS[name](path)
    with pytest.raises(LensFileError) as caught:
        read_checkpoint(path)
    assert str(path) in str(caught.value)


def test_negative_steps_are_never_written(tmp_path):
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, step=-1, lens_state={}, optimizer_state={}, extra={})
