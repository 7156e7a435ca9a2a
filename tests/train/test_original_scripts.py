"""The original's ``tuned_lens.scripts`` configuration dataclasses (issue 12): their fields and
defaults are the original's, and ``execute()`` writes what the command line writes."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from tuned_lens.__main__ import main
from tuned_lens.errors import InvalidInputError
from tuned_lens.scripts.eval_loop import Eval
from tuned_lens.scripts.ingredients import Data, Distributed, Model, Optimizer, OptimizerOption
from tuned_lens.scripts.train_loop import LossChoice, Train

REQUIRED = dataclasses.MISSING

# The original's tables (reference-behaviour.md 1.10 / 1.11): field -> default, in order.
SPEC = {
    Data: {
        "name": ["the_pile", "all"],
        "split": "validation",
        "text_column": "text",
        "revision": None,
        "max_seq_len": 2048,
        "dataset_shuffle": False,
        "dataset_shuffle_seed": 42,
    },
    Model: {
        "name": REQUIRED,
        "precision": "auto",
        "revision": "main",
        "slow_tokenizer": False,
        "tokenizer": None,
        "tokenizer_type": None,
    },
    Optimizer: {
        "weight_decay": 1e-3,
        "lr_scale": 1.0,
        "momentum": 0.9,
        "zero": False,
        "optimizer": OptimizerOption.SGD,
        "warmup_steps": None,
    },
    Distributed: {
        "fsdp": False,
        "cpu_offload": False,
        "nccl_timeout": 1200,
        "per_gpu_batch_size": 1,
        "dataloader_shuffle": True,
    },
    Train: {
        "model": REQUIRED,
        "data": REQUIRED,
        "optimizer": REQUIRED,
        "dist": REQUIRED,
        "output": REQUIRED,
        "seed": 42,
        "lens_name_or_path": None,
        "bias_only": False,
        "num_steps": 250,
        "tokens_per_step": 2**18,
        "wandb": None,
        "token_shift": None,
        "checkpoint_freq": None,
        "checkpoint_dir": None,
        "loss": LossChoice.KL,
    },
    Eval: {
        "data": REQUIRED,
        "model": REQUIRED,
        "dist": REQUIRED,
        "output": REQUIRED,
        "lens_name": None,
        "logit": True,
        "seed": 42,
        "tokens": None,
        "token_shift": 1,
        "per_gpu_batch_size": 1,
        "layer_transfer": False,
        "record_logit_stats": False,
    },
}


@pytest.mark.parametrize("cls", list(SPEC), ids=lambda c: c.__name__)
def test_fields_and_defaults_are_the_originals(cls):
    got = {}
    for f in dataclasses.fields(cls):
        has_factory = f.default_factory is not dataclasses.MISSING
        got[f.name] = f.default_factory() if has_factory else f.default
    assert got == SPEC[cls]
    assert list(got) == list(SPEC[cls])  # same order, so positional calls keep working


def test_enums_are_the_originals():
    assert {m.name: m.value for m in OptimizerOption} == {"ADAM": "adam", "SGD": "sgd"}
    assert {m.name: m.value for m in LossChoice} == {"CE": "ce", "KL": "kl"}


def _budget(tmp_path, tiny_model_dir, text_jsonl, name):
    return dict(
        model=Model(name=str(tiny_model_dir)),
        data=Data(name=[str(text_jsonl)], max_seq_len=32),
        dist=Distributed(),
        output=tmp_path / name,
    )


def test_train_execute_equals_the_cli(tmp_path, tiny_model_dir, text_jsonl):
    parts = _budget(tmp_path, tiny_model_dir, text_jsonl, "api")
    opt = Optimizer(optimizer=OptimizerOption.ADAM, warmup_steps=1)
    Train(**parts, optimizer=opt, num_steps=2, tokens_per_step=128, loss=LossChoice.CE).execute()
    cli = tmp_path / "cli"
    argv = ["train", "--model.name", str(tiny_model_dir), "--data.name", str(text_jsonl)]
    argv += ["--max_seq_len", "32", "--tokens_per_step", "128", "--num_steps", "2", "-o", str(cli)]
    argv += ["--optimizer", "ADAM", "--warmup_steps", "1", "--loss", "CE", "--noprogress"]
    assert main(argv) == 0
    ours, theirs = (
        load_file(parts["output"] / "params.safetensors"),
        load_file(cli / "params.safetensors"),
    )
    assert sorted(ours) == sorted(theirs) == ["0.bias", "0.weight", "1.bias", "1.weight"]
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    assert any(p.abs().max() > 0 for p in ours.values())  # it trained
    config = json.loads((parts["output"] / "config.json").read_text())
    assert config == json.loads((cli / "config.json").read_text())


def test_eval_execute_writes_the_clis_metrics(tmp_path, tiny_model_dir, text_jsonl):
    parts = _budget(tmp_path, tiny_model_dir, text_jsonl, "api")
    Eval(**parts, tokens=256, per_gpu_batch_size=2).execute()
    cli = tmp_path / "cli"
    argv = ["eval", "--model.name", str(tiny_model_dir), "--data.name", str(text_jsonl)]
    argv += ["--max_seq_len", "32", "--tokens", "256", "--per_gpu_batch_size", "2"]
    assert main([*argv, "--noprogress", "-o", str(cli)]) == 0
    ours = json.loads((parts["output"] / "aggregate_metrics.json").read_text())
    assert ours == json.loads((cli / "aggregate_metrics.json").read_text())
    assert "logit" in json.dumps(ours)


def test_eval_refuses_two_different_batch_sizes(tmp_path, tiny_model_dir, text_jsonl):
    parts = _budget(tmp_path, tiny_model_dir, text_jsonl, "api")
    parts["dist"] = Distributed(per_gpu_batch_size=4)
    with pytest.raises(InvalidInputError, match="disagree"):
        Eval(**parts, per_gpu_batch_size=2).execute()


def test_data_load_returns_a_dataset_and_the_bits_per_byte_ratio(tiny_model_dir, text_jsonl):
    from datasets import Dataset

    tokenizer = Model(name=str(tiny_model_dir)).load_tokenizer()
    dataset, nats_to_bpb = Data(name=[str(text_jsonl)], max_seq_len=32).load(tokenizer)
    assert isinstance(dataset, Dataset) and "input_ids" in dataset.column_names
    ids = dataset[:]["input_ids"]  # torch format: one (chunks, 32) tensor
    assert ids.shape[1] == 32 and ids.shape[0] > 10
    docs = [json.loads(line)["text"] for line in text_jsonl.read_text().splitlines()]
    eos = tokenizer.eos_token
    stream = tokenizer(eos + eos.join(docs))["input_ids"]  # the original's packing, by hand
    assert ids[0].tolist() == stream[:32]
    # Ratio: (tokens / UTF-8 bytes of the joined text) / ln 2 for the whole packed stream.
    joined = (eos + eos.join(docs)).encode("utf-8")
    assert nats_to_bpb == pytest.approx(len(stream) / len(joined) / math.log(2), rel=0.02)


def test_model_load_returns_the_frozen_model_and_its_tokenizer(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model, tokenizer = Model(name=str(tiny_model_dir), precision="float32").load("cpu")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([tokenizer("To be, or not to be")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)


def test_optimizer_helpers_are_the_originals_recipe():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = Optimizer().create_optim(params)
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert group["nesterov"] and group["momentum"] == 0.9 and group["weight_decay"] == 1e-3
    assert group["lr"] == pytest.approx(0.1)  # lr_scale * (1 - momentum)
    scheduler = Optimizer().create_scheduler(sgd, 4)
    lrs = []
    for _ in range(4):
        lrs.append(sgd.param_groups[0]["lr"])
        sgd.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1 * (4 - t) / 4 for t in range(4)])
    adam = Optimizer(optimizer=OptimizerOption.ADAM, lr_scale=2.0).create_optim(params)
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["amsgrad"] and adam.param_groups[0]["betas"] == (0.9, 0.999)
    assert adam.param_groups[0]["lr"] == pytest.approx(2e-3)
    assert Optimizer(optimizer=OptimizerOption.ADAM).per_parameter_optim_state_size() == 2
    assert Optimizer().per_parameter_optim_state_size() == 1
    with pytest.raises(InvalidInputError, match="momentum"):
        Optimizer(momentum=1.5).create_optim(params)
    # Strings as the command line spells them are accepted too; unknown ones are refused.
    assert Optimizer(optimizer="ADAM").per_parameter_optim_state_size() == 2  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="optimizer must be one of ADAM, SGD"):
        Optimizer(optimizer="lion").create_optim(params)  # type: ignore[arg-type]


def test_distributed_without_a_process_group():
    dist = Distributed()
    assert (dist.rank, dist.local_rank, dist.world_size, dist.primary) == (0, 0, 1, True)
    dist.barrier()  # nothing to wait for
