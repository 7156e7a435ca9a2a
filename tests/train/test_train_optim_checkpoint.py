"""The learning-rate schedule, optimiser choices and atomic safetensors checkpoints."""

from __future__ import annotations

import pytest
import torch
from tuned_lens.training.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    read_checkpoint,
    save_checkpoint,
)
from tuned_lens.training.optim import LinearWarmupDecay, OptimizerConfig


def test_sgd_defaults_match_the_original():
    cfg = OptimizerConfig()
    assert cfg.base_lr == pytest.approx(0.1)
    assert cfg.resolved_warmup(250) == 0
    opt = cfg.build([torch.nn.Parameter(torch.zeros(3))])
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 1e-3
    sched = LinearWarmupDecay(250, 0)
    assert [sched.factor(t) for t in (0, 125, 249)] == [1.0, 0.5, pytest.approx(1 / 250)]


def test_adam_gets_a_warmup_then_decays_to_zero_at_num_steps():
    cfg = OptimizerConfig(optimizer="adam")
    assert cfg.optimizer == "ADAM" and cfg.base_lr == pytest.approx(1e-3)
    assert cfg.resolved_warmup(100) == 20 and cfg.resolved_warmup(10_000) == 1000
    opt = cfg.build([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["amsgrad"]
    sched = LinearWarmupDecay(100, 20)
    factors = [sched.factor(t) for t in range(100)]
    assert factors[0] == pytest.approx(1 / 21) and factors[19] == pytest.approx(20 / 21)
    assert factors[20] == 1.0
    # Decays over the whole remaining run: still positive at the last step (the original hit 0
    # at step num_steps - warmup and idled afterwards).
    assert factors[99] == pytest.approx(1 / 80) and all(f > 0 for f in factors)
    assert all(a > b for a, b in zip(factors[20:], factors[21:]))
    lr = sched.apply(opt, step=0, base_lr=cfg.base_lr)
    assert opt.param_groups[0]["lr"] == lr == pytest.approx(1e-3 / 21)


def test_bad_settings_raise():
    # The library names the Python option; the CLI spells it as typed (test_train_cli).
    with pytest.raises(ValueError, match="optimizer must be one of") as info:
        OptimizerConfig(optimizer="rmsprop")
    assert info.value.option == "optimizer"
    with pytest.raises(ValueError, match="warm-up"):
        LinearWarmupDecay(5, 5)


def _optimizer_with_state(kind: str):
    params = [torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4))]
    opt = OptimizerConfig(optimizer=kind).build(params)
    sum(p.square().sum() for p in params).backward()
    opt.step()
    return params, opt


@pytest.mark.parametrize("kind", ["SGD", "ADAM"])
def test_checkpoint_round_trip_is_exact(tmp_path, kind):
    params, opt = _optimizer_with_state(kind)
    lens_state = {"0.weight": params[0].detach().clone(), "0.bias": params[1].detach().clone()}
    path = save_checkpoint(
        tmp_path,
        step=3,
        lens_state=lens_state,
        optimizer_state=opt.state_dict(),
        extra={"data_position": 12, "note": "x"},
    )
    snap = read_checkpoint(path)
    assert snap.step == 3 and snap.extra == {"data_position": 12, "note": "x"}
    assert all(torch.equal(snap.lens_state[k], v) for k, v in lens_state.items())
    fresh_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fresh = OptimizerConfig(optimizer=kind).build(fresh_params)
    fresh.load_state_dict(snap.optimizer_state)
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(
            torch.as_tensor(fresh.state_dict()["state"][0][key]), torch.as_tensor(value)
        )
    # The file is plain safetensors: no pickle anywhere.
    assert path.read_bytes()[8:9] == b"{"


def test_only_the_two_newest_checkpoints_are_kept_and_damage_is_skipped(tmp_path):
    params, opt = _optimizer_with_state("SGD")
    for step in (2, 4, 6):
        save_checkpoint(
            tmp_path,
            step=step,
            lens_state={"w": params[0]},
            optimizer_state=opt.state_dict(),
            extra={},
        )
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    assert not list(tmp_path.glob(".*tmp*"))
    # Simulate a damaged newest file: the previous snapshot is used.
    list_checkpoints(tmp_path)[-1][1].write_bytes(b"garbage")
    assert latest_checkpoint(tmp_path).step == 4
    assert latest_checkpoint(tmp_path / "nowhere") is None
