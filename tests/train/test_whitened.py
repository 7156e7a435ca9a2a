"""The input-whitened optimiser (``--optimizer whitened``, part of ``--recipe fast``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tuned_lens.errors import InvalidInputError
from tuned_lens.training.checkpoint import read_checkpoint, save_checkpoint
from tuned_lens.training.optim import OptimizerConfig
from tuned_lens.training.train_config import TrainConfig
from tuned_lens.training.whitened import WhitenedSGD, second_moment


def _pair(d: int, seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(d, d, generator=gen, dtype=torch.float64)),
        torch.nn.Parameter(torch.randn(d, generator=gen, dtype=torch.float64)),
    ]


def test_second_moment_is_the_inverse_of_the_damped_augmented_moment():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * np.array([10.0, 1.0, 0.1, 3.0, 1.0]) + 2.0
    inverse = second_moment(len(x), torch.from_numpy(x.sum(0)), torch.from_numpy(x.T @ x))
    aug = np.concatenate([x, np.ones((len(x), 1))], 1)
    moment = aug.T @ aug / len(x)
    moment += max(1e-3, 0.2 * 6 / 200) * np.trace(moment) / 6 * np.eye(6)
    np.testing.assert_allclose(inverse.numpy(), np.linalg.inv(moment), rtol=1e-9, atol=1e-12)


def test_two_steps_are_the_preconditioned_nesterov_formula():
    """Oracle: ``[W|b] -= lr/(d+1) · (u + m·buf)``, ``u = ([gW|gb] + wd·[W|b]) P``, in float64."""
    d, lr, m, wd = 4, 3.0, 0.9, 0.01
    params = _pair(d, 0) + _pair(d, 1)
    opt = WhitenedSGD(params, lr=lr, momentum=m, weight_decay=wd)
    gen = torch.Generator().manual_seed(2)
    inverses = []
    for _ in range(2):
        a = torch.randn(d + 1, d + 1, generator=gen, dtype=torch.float64)
        inverses.append(a @ a.T + torch.eye(d + 1, dtype=torch.float64))
    opt.set_preconditioners(inverses)
    pairs = zip(params[0::2], params[1::2])
    expected = [torch.cat([w.detach(), b.detach()[:, None]], 1) for w, b in pairs]
    buffers: list[torch.Tensor | None] = [None, None]
    for _ in range(2):
        grads = [torch.randn(p.shape, dtype=torch.float64, generator=gen) for p in params]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt.step()
        for i in range(2):
            joined = torch.cat([grads[2 * i], grads[2 * i + 1][:, None]], 1)
            u = (joined + wd * expected[i]) @ inverses[i]
            buf = u if buffers[i] is None else m * buffers[i] + u
            buffers[i] = buf
            expected[i] = expected[i] - lr / (d + 1) * (u + m * buf)
    for i in range(2):
        got = torch.cat([params[2 * i].detach(), params[2 * i + 1].detach()[:, None]], 1)
        torch.testing.assert_close(got, expected[i], rtol=1e-12, atol=1e-12)


def test_the_preconditioner_survives_a_checkpoint(tmp_path):
    params = _pair(3, 0)
    opt = OptimizerConfig(optimizer="whitened").build(params)
    opt.set_preconditioners([torch.eye(4, dtype=torch.float64) * 2])
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    path = save_checkpoint(
        tmp_path, step=1, lens_state={}, optimizer_state=opt.state_dict(), extra={}
    )
    fresh = OptimizerConfig(optimizer="whitened").build([p.detach().clone() for p in params])
    fresh.load_state_dict(read_checkpoint(path).optimizer_state)
    state = fresh.state_dict()["state"][0]
    assert torch.equal(state["precond"], torch.eye(4, dtype=torch.float64) * 2)
    for index in (0, 1):  # the weight's and the bias's momentum
        old = opt.state_dict()["state"][index]["momentum_buffer"]
        assert torch.equal(fresh.state_dict()["state"][index]["momentum_buffer"], old)


def test_what_it_refuses():
    with pytest.raises(InvalidInputError, match="needs init least_squares"):
        TrainConfig(optimizer=OptimizerConfig(optimizer="WHITENED"))
    TrainConfig(optimizer=OptimizerConfig(optimizer="WHITENED"), init="least_squares")
    biases_only = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))]
    low_rank = [torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(3))]
    for params in (biases_only, low_rank, _pair(3, 0)[:1]):
        with pytest.raises(InvalidInputError, match="full \\(d, d\\) translators"):
            OptimizerConfig(optimizer="WHITENED").build(params)
    opt = OptimizerConfig(optimizer="WHITENED").build(_pair(3, 0))
    with pytest.raises(InvalidInputError, match="3-wide"):
        opt.set_preconditioners([torch.eye(3)])
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.ones_like(p)
    with pytest.raises(InvalidInputError, match="no preconditioner"):
        opt.step()


def test_fast_recipe_resumes_to_the_same_lens(tmp_path, tiny_model_dir, text_jsonl):
    """Killed after step 2 of 3 (its last snapshot removed): the rerun gives the same bits."""
    from tuned_lens.nn import TunedLens
    from tuned_lens.training.ingredients import DataSpec, ModelSpec
    from tuned_lens.training.train_loop import train_lens

    model, tokenizer = ModelSpec(name=str(tiny_model_dir)).load(torch.device("cpu"))
    chunks = DataSpec(name=[str(text_jsonl)], max_seq_len=32).load(tokenizer)

    def run(folder):
        lens = TunedLens.from_model(model)
        config = TrainConfig(
            num_steps=4, tokens_per_step=128, per_gpu_batch_size=2, recipe="fast",
            checkpoint_freq=1, checkpoint_dir=folder, progress=False,
        )  # fmt: skip
        result = train_lens(model, lens, chunks, config)
        return lens.layer_translators.state_dict(), result

    whole, first = run(tmp_path / "a")
    assert not first.resumed and first.start_step == 1  # the fit took step 0
    snapshots = sorted((tmp_path / "a").glob("*.safetensors"))
    assert snapshots, list((tmp_path / "a").iterdir())
    (tmp_path / "b").mkdir()
    keep = snapshots[-2]  # the snapshot after step 3 of 4 (steps 1-3 are the fit + 2 steps)
    (tmp_path / "b" / keep.name).write_bytes(keep.read_bytes())
    resumed, second = run(tmp_path / "b")
    assert second.resumed and second.start_step == 3, second  # not silently started over
    for key, value in whole.items():
        assert torch.equal(resumed[key], value), key
    assert any(float(v.abs().max()) > 0 for v in whole.values())
