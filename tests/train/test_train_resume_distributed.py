"""A run killed with SIGKILL resumes to the same lens; 2-process gloo training (with the model
replicated, or sharded with FSDP2) matches 1 process.

Both run the real CLI in subprocesses (``python -m tuned_lens`` and ``torchrun``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed.fsdp
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "python"), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = "1"  # two cores, shared: keep each process on one thread
    return env


def _train_cmd(model_dir, data, out, *extra) -> list[str]:
    return [
        "train",
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


def _params(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "params.safetensors")


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_lens(tmp_path, tiny_model_dir, text_jsonl):
    common = (
        "--tokens_per_step",
        256,
        "--num_steps",
        36,
        "--checkpoint_freq",
        3,
        "--optimizer",
        "ADAM",
    )  # Adam: the most optimiser state to restore
    reference = tmp_path / "reference"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tuned_lens",
            *_train_cmd(tiny_model_dir, text_jsonl, reference, *common),
        ],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )

    out = tmp_path / "interrupted"
    ckpt_dir = out / "checkpoints"
    cmd = [
        sys.executable,
        "-m",
        "tuned_lens",
        *_train_cmd(tiny_model_dir, text_jsonl, out, *common),
    ]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not (ckpt_dir.is_dir() and any(ckpt_dir.glob("checkpoint_*.safetensors"))):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.01)
    # Kill at an arbitrary moment after the first snapshot (maybe mid-write of a later one).
    time.sleep(random.Random(0).uniform(0.0, 0.1))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "params.safetensors").exists()

    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stderr
    want, got = _params(reference), _params(out)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key


_DIST_COMMON = ("--tokens_per_step", 128, "--num_steps", 5, "--per_gpu_batch_size", 1)


@pytest.fixture(scope="module")
def single_process_lens(tmp_path_factory, tiny_model_dir, text_jsonl) -> Path:
    single = tmp_path_factory.mktemp("single")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tuned_lens",
            *_train_cmd(tiny_model_dir, text_jsonl, single, *_DIST_COMMON),
        ],
        env=_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return single


#: FSDP2 runs on CPU (gloo) from torch 2.6, where it became torch.distributed.fsdp.fully_shard.
FSDP2_ON_CPU = hasattr(torch.distributed.fsdp, "fully_shard")


def test_fsdp_on_cpu_needs_a_launch_or_says_which_torch_it_needs():
    from tuned_lens.errors import InvalidInputError, MissingDependencyError
    from tuned_lens.testing import tiny_model
    from tuned_lens.training.ingredients import shard_model_fsdp

    if FSDP2_ON_CPU:
        with pytest.raises(InvalidInputError, match="needs a distributed launch"):
            shard_model_fsdp(tiny_model("llama"))
    else:
        with pytest.raises(MissingDependencyError, match=r"--fsdp on CPU \(gloo\) needs torch"):
            shard_model_fsdp(tiny_model("llama"))


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated-model", "fsdp2-model"])
def test_two_gloo_processes_match_one_process(
    tmp_path, tiny_model_dir, text_jsonl, fsdp, single_process_lens
):
    if fsdp and not FSDP2_ON_CPU:
        pytest.skip(f"FSDP2 on CPU needs torch >= 2.6 (installed: torch {torch.__version__})")
    double = tmp_path / "double"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "-m",
            "tuned_lens",
            *_train_cmd(
                tiny_model_dir,
                text_jsonl,
                double,
                *_DIST_COMMON,
                "--checkpoint_freq",
                5,
                *(["--fsdp"] if fsdp else []),
            ),
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "joined the gloo process group" in run.stderr
    want, got = _params(single_process_lens), _params(double)
    assert any(v.abs().max() > 0 for v in want.values())
    for key in want:
        # Same global batch, summed in another order: equal up to float rounding.
        torch.testing.assert_close(got[key], want[key], atol=1e-8, rtol=1e-4)
    assert (double / "checkpoints" / "checkpoint_00000005.safetensors").is_file()
