"""Training: the CLI end to end, data checks, losses, optimiser options, warm start."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from tuned_lens.__main__ import main
from tuned_lens.data import PackedChunks
from tuned_lens.training.ingredients import DataSpec, ModelSpec
from tuned_lens.training.optim import OptimizerConfig
from tuned_lens.training.train_loop import TrainConfig, layer_losses, train_lens


def _train_args(model_dir, data, out, *extra):
    return [
        "train",
        "--model.name",
        str(model_dir),
        "--data.name",
        str(data),
        "--max_seq_len",
        "32",
        "--tokens_per_step",
        "128",
        "--noprogress",
        "-o",
        str(out),
        *map(str, extra),
    ]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    model, tokenizer = ModelSpec(name=str(tiny_model_dir)).load(torch.device("cpu"))
    return model, tokenizer


@pytest.fixture(scope="module")
def chunks(tiny, text_jsonl) -> PackedChunks:
    return DataSpec(name=[str(text_jsonl)], max_seq_len=32).load(tiny[1])


def test_cli_train_writes_lens_and_checkpoints(tmp_path, tiny_model_dir, text_jsonl):
    out = tmp_path / "lens"
    assert (
        main(_train_args(tiny_model_dir, text_jsonl, out, "--num_steps", 4, "--checkpoint_freq", 2))
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["d_model"] == 32
    params = load_file(out / "params.safetensors")
    assert sorted(params) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    assert all(p.dtype == torch.float32 for p in params.values())
    assert any(p.abs().max() > 0 for p in params.values())  # it moved away from identity
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["checkpoint_00000002.safetensors", "checkpoint_00000004.safetensors"]


def test_cli_train_on_a_txt_file_with_adam_and_lowercase_enums(tmp_path, tiny_model_dir, text_txt):
    out = tmp_path / "lens"
    assert (
        main(
            _train_args(
                tiny_model_dir,
                text_txt,
                out,
                "--num_steps",
                3,
                "--optimizer",
                "adam",
                "--loss",
                "kl",
            )
        )
        == 0
    )
    assert (out / "params.safetensors").is_file()


def test_not_enough_data_fails_before_any_work(tmp_path, tiny_model_dir, text_jsonl, capsys):
    out = tmp_path / "lens"
    code = main(_train_args(tiny_model_dir, text_jsonl, out, "--num_steps", 100_000))
    assert code == 2
    assert "Can only take" in capsys.readouterr().err
    assert not (out / "params.safetensors").exists()
    code = main(_train_args(tiny_model_dir, text_jsonl, out, "--tokens_per_step", 100))
    assert code == 2 and "multiple of the chunk length" in capsys.readouterr().err


def test_kl_loss_is_the_forward_kl_and_ce_is_next_token():
    torch.manual_seed(0)
    model_logits = torch.randn(2, 5, 7)
    lens_logits = torch.randn(2, 5, 7, requires_grad=True)
    ids = torch.randint(0, 7, (2, 5))
    (kl,) = layer_losses(
        model_logits, ids, lambda _: lens_logits, 1, loss="KL", token_shift=0, scale=1.0
    )
    p = model_logits.log_softmax(-1)
    want = (p.exp() * (p - lens_logits.log_softmax(-1))).sum(-1).mean()
    assert kl.item() == pytest.approx(want.item(), rel=1e-5)
    assert lens_logits.grad is not None  # back-propagated as it went
    (ce,) = layer_losses(
        model_logits, ids, lambda _: lens_logits, 1, loss="CE", token_shift=1, scale=1.0
    )
    want = torch.nn.functional.cross_entropy(
        lens_logits[:, :4].reshape(-1, 7), ids[:, 1:].reshape(-1)
    )
    assert ce.item() == pytest.approx(want.item(), rel=1e-5)


def _fresh_lens(model):
    from tuned_lens.nn import TunedLens

    return TunedLens.from_model(model)


def test_ce_training_reduces_the_loss(tiny, chunks):
    model, _ = tiny
    lens = _fresh_lens(model)
    config = TrainConfig(
        num_steps=12,
        tokens_per_step=128,
        loss="ce",
        progress=False,
        optimizer=OptimizerConfig(lr_scale=2.0),
    )
    assert config.resolved_token_shift == 1
    result = train_lens(model, lens, chunks, config)
    first, last = result.losses[0], result.losses[-1]
    assert all(math.isfinite(v) for v in first + last)
    assert sum(last) < sum(first)


def test_adam_warmup_is_applied_to_the_optimizer(tiny, chunks):
    model, _ = tiny
    config = TrainConfig(
        num_steps=10,
        tokens_per_step=64,
        progress=False,
        optimizer=OptimizerConfig(optimizer="ADAM"),
    )
    result = train_lens(model, _fresh_lens(model), chunks, config)
    # warm-up min(1000, 10 // 5) = 2 steps, then linear decay to 0 at step 10
    want = [1e-3 * f for f in (1 / 3, 2 / 3, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8)]
    assert result.learning_rates == pytest.approx(want)


def test_bias_only_keeps_weights_at_zero(tiny, chunks):
    model, _ = tiny
    lens = _fresh_lens(model)
    config = TrainConfig(num_steps=3, tokens_per_step=64, bias_only=True, progress=False)
    train_lens(model, lens, chunks, config)
    for translator in lens.layer_translators:
        assert torch.count_nonzero(translator.weight) == 0
    assert any(torch.count_nonzero(t.bias) > 0 for t in lens.layer_translators)


def test_warm_start_continues_from_a_saved_lens(tmp_path, tiny_model_dir, text_jsonl):
    first = tmp_path / "first"
    assert main(_train_args(tiny_model_dir, text_jsonl, first, "--num_steps", 4)) == 0
    second = tmp_path / "second"
    assert (
        main(
            _train_args(
                tiny_model_dir,
                text_jsonl,
                second,
                "--num_steps",
                1,
                "--lens_name_or_path",
                first,
                "--lr_scale",
                1e-9,
            )
        )
        == 0
    )
    a, b = load_file(first / "params.safetensors"), load_file(second / "params.safetensors")
    assert any(v.abs().max() > 0 for v in a.values())
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-6, rtol=0)


def test_wandb_without_the_package_is_a_clear_error(tmp_path, tiny_model_dir, text_jsonl, capsys):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    code = main(_train_args(tiny_model_dir, text_jsonl, tmp_path / "o", "--wandb", "run"))
    assert code == 2 and "pip install" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused(tmp_path, tiny, chunks):
    model, _ = tiny
    ckpt = tmp_path / "ckpt"
    config = TrainConfig(
        num_steps=2, tokens_per_step=64, checkpoint_freq=1, checkpoint_dir=ckpt, progress=False
    )
    train_lens(model, _fresh_lens(model), chunks, config)
    again = train_lens(model, _fresh_lens(model), chunks, config)
    assert again.start_step == 2 and again.losses == []  # finished: nothing left to do
    other = TrainConfig(
        num_steps=2,
        tokens_per_step=64,
        checkpoint_freq=1,
        checkpoint_dir=ckpt,
        progress=False,
        optimizer=OptimizerConfig(lr_scale=0.5),
    )
    with pytest.raises(ValueError, match="other settings"):
        train_lens(model, _fresh_lens(model), chunks, other)


def test_bfloat16_model_trains_a_float32_lens(tmp_path, tiny_model_dir, text_jsonl):
    out = tmp_path / "lens"
    assert (
        main(
            _train_args(
                tiny_model_dir, text_jsonl, out, "--num_steps", 2, "--precision", "bfloat16"
            )
        )
        == 0
    )
    params = load_file(out / "params.safetensors")
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params.values())
