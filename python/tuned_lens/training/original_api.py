"""The original's ``tuned_lens.scripts`` configuration dataclasses, running this engine.

Scripts written for the original build ``Train(model=Model(...), data=Data(...), ...)`` and
call ``.execute()``; here the same fields, names and defaults reach
:func:`tuned_lens.training.commands.run_train` / ``run_eval`` through
:mod:`tuned_lens.training.flags`, the mapping the command line uses, so ``Train.execute()``
writes what ``tuned-lens train`` writes with the same settings. The names are re-exported
where the original defined them: :mod:`tuned_lens.scripts.ingredients` (``Data``, ``Model``,
``OptimizerOption``, ``Optimizer``, ``Distributed``), :mod:`tuned_lens.scripts.train_loop`
(``LossChoice``, ``Train``) and :mod:`tuned_lens.scripts.eval_loop` (``Eval``).

Not provided: the original's ``State`` class and the helper methods of ``Train`` / ``Eval``
(``get_lens``, ``snapshot``, ``setup``, …) and ``Distributed.shard_model`` /
``distribute_lens`` / ``dataloader`` / ``send_to_device``; the engine does those jobs itself.
"""

from __future__ import annotations

import argparse
import enum
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuned_lens.training.eval_loop import EvalResult
    from tuned_lens.training.ingredients import DistContext
    from tuned_lens.training.optim import OptimizerConfig
    from tuned_lens.training.train_config import TrainResult

_E = TypeVar("_E", bound=enum.Enum)

# TrainConfig fields the original's Train has no field for; Train runs them at their defaults.
_NEWER_TRAIN_SETTINGS = ("rank", "init", "init_tokens", "recipe", "fused_loss", "loss_chunk_size")

__all__ = [
    "Data",
    "Distributed",
    "Eval",
    "LossChoice",
    "Model",
    "Optimizer",
    "OptimizerOption",
    "Train",
]


@dataclass
class Data:
    """Which documents, and how they are packed (the original's ``ingredients.Data``).

    Attributes:
        name: a local ``.jsonl`` / ``.json`` / ``.txt`` file or folder, ``"tinyshakespeare"``,
            or the positional arguments of ``datasets.load_dataset``.
        split: the data set split.
        text_column: the field holding the text.
        revision: the data set revision.
        max_seq_len: chunk length cap (also capped by the tokenizer's ``model_max_length``).
        dataset_shuffle: shuffle the documents before packing.
        dataset_shuffle_seed: seed of that shuffle.
    """

    name: list[str] = field(default_factory=lambda: ["the_pile", "all"])
    split: str = "validation"
    text_column: str = "text"
    revision: str | None = None
    max_seq_len: int = 2048
    dataset_shuffle: bool = False
    dataset_shuffle_seed: int = 42

    def load(self, tokenizer: PreTrainedTokenizerBase) -> tuple[Any, float]:
        """Read, optionally shuffle, tokenise and pack the documents, as the original.

        Args:
            tokenizer: the model's tokenizer.

        Returns:
            A ``datasets.Dataset`` whose ``input_ids`` column holds ``(chunk,)`` token
            tensors, and ``nats_to_bpb`` (multiply a loss in nats by it for bits per byte).

        Raises:
            InvalidInputError: the documents cannot be read.
            MissingDependencyError: ``datasets`` is not installed.
        """
        from tuned_lens.errors import MissingDependencyError
        from tuned_lens.integrations.hf_datasets import chunk_and_tokenize

        try:
            from datasets import Dataset
        except ImportError as err:
            raise MissingDependencyError(
                "Data.load needs `datasets`: pip install datasets"
            ) from err
        docs = _flags(self, Model(name="")).data_spec.read()
        dataset = Dataset.from_dict({"text": docs})
        return chunk_and_tokenize(dataset, tokenizer, max_seq_len=self.max_seq_len)


@dataclass
class Model:
    """The model to inspect (the original's ``ingredients.Model``).

    Attributes:
        name: a model folder, a Hugging Face id, or ``"glassllm"`` / ``"smollm2"``.
        precision: ``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"`` or ``"int8"``.
        revision: the model's git revision (also the tokenizer's).
        slow_tokenizer: use a slow (Python) tokenizer.
        tokenizer: tokenizer name or folder, instead of the model's.
        tokenizer_type: accepted for compatibility; the class is picked automatically.
    """

    name: str
    precision: str = "auto"
    revision: str = "main"
    slow_tokenizer: bool = False
    tokenizer: str | None = None
    tokenizer_type: str | None = None

    def load_tokenizer(self, must_use_cache: bool = False) -> PreTrainedTokenizerBase:
        """The tokenizer (from the local cache only when ``must_use_cache`` or offline)."""
        from tuned_lens.model_loading import load_tokenizer

        spec = _flags(Data(), self).model_spec
        return load_tokenizer(
            spec.resolved_name(),
            revision=spec.revision,
            tokenizer=spec.tokenizer,
            slow_tokenizer=spec.slow_tokenizer,
            offline=True if must_use_cache else None,
        )

    def load(
        self, device: str | torch.device | None = None, must_use_cache: bool = False
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load the frozen model (eval mode) on ``device`` (default CPU) and its tokenizer.

        Raises:
            InvalidInputError: an unknown precision, or int8 without CUDA.
        """
        from tuned_lens.model_loading import load_model

        spec = _flags(Data(), self).model_spec
        model = load_model(
            spec.resolved_name(),
            device=device if device is not None else "cpu",
            precision=spec.precision,
            revision=spec.revision,
            offline=True if must_use_cache else None,
        )
        return model, self.load_tokenizer(must_use_cache)


class OptimizerOption(enum.Enum):
    """The original's optimiser choice."""

    ADAM = "adam"
    SGD = "sgd"


@dataclass
class Optimizer:
    """Optimiser settings (the original's ``ingredients.Optimizer``).

    Attributes:
        weight_decay: coupled L2 weight decay.
        lr_scale: multiplies the base learning rate (``1 − momentum`` for SGD, 1e-3 for Adam).
        momentum: SGD momentum or Adam's β1.
        zero: accepted for compatibility; has no effect (lens optimiser state is small).
        optimizer: SGD (Nesterov) or Adam (amsgrad).
        warmup_steps: linear warm-up steps; ``None``: ``min(1000, num_steps // 5)`` for Adam,
            0 for SGD.
    """

    weight_decay: float = 1e-3
    lr_scale: float = 1.0
    momentum: float = 0.9
    zero: bool = False
    optimizer: OptimizerOption = OptimizerOption.SGD
    warmup_steps: int | None = None

    def config(self) -> OptimizerConfig:
        """This engine's validated :class:`~tuned_lens.training.optim.OptimizerConfig`."""
        from tuned_lens.training.optim import OptimizerConfig

        return OptimizerConfig(
            optimizer=_member(OptimizerOption, self.optimizer, "optimizer").value,
            lr_scale=self.lr_scale,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
        )

    def create_optim(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The torch optimiser over ``params``, at the base learning rate."""
        return self.config().build(params)

    def create_scheduler(
        self, opt: torch.optim.Optimizer, num_steps: int
    ) -> torch.optim.lr_scheduler.LambdaLR:
        """Linear warm-up then linear decay to 0 over ``num_steps`` steps (``LinearWarmupDecay``)."""
        import torch

        from tuned_lens.training.optim import LinearWarmupDecay

        warmup = self.config().resolved_warmup(num_steps)
        return torch.optim.lr_scheduler.LambdaLR(
            opt, LinearWarmupDecay(num_steps, warmup=warmup).factor
        )

    def per_parameter_optim_state_size(self) -> int:
        """Optimiser state tensors per parameter: 2 for Adam, 1 for SGD."""
        return 2 if _member(OptimizerOption, self.optimizer, "optimizer").name == "ADAM" else 1


@dataclass
class Distributed:
    """Process and device settings (the original's ``ingredients.Distributed``).

    Attributes:
        fsdp: shard the model with FSDP (under ``torchrun``).
        cpu_offload: offload the FSDP shards to the CPU (needs ``fsdp``).
        nccl_timeout: process-group timeout, seconds.
        per_gpu_batch_size: chunks per micro-batch on each process.
        dataloader_shuffle: shuffle the packed chunks.
    """

    fsdp: bool = False
    cpu_offload: bool = False
    nccl_timeout: int = 1200
    per_gpu_batch_size: int = 1
    dataloader_shuffle: bool = True

    @property
    def rank(self) -> int:
        """This process's rank (0 without a process group)."""
        import torch.distributed as dist

        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine (``LOCAL_RANK``; 0 without a process group)."""
        import torch.distributed as dist

        initialized = dist.is_available() and dist.is_initialized()
        return int(os.environ.get("LOCAL_RANK", 0)) if initialized else 0

    @property
    def world_size(self) -> int:
        """The number of processes (1 without a process group)."""
        import torch.distributed as dist

        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    @property
    def primary(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
        import torch

        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def init(self) -> DistContext:
        """Join the process group when started by ``torchrun`` (else a one-process context)."""
        from tuned_lens.training.ingredients import init_distributed  # cycle-ok: re-exports us

        return init_distributed(timeout_s=self.nccl_timeout)

    def barrier(self) -> None:
        """Wait for every process (nothing to do without a process group)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


class LossChoice(enum.Enum):
    """The original's training loss."""

    CE = "ce"
    KL = "kl"


@dataclass
class Train:
    """Train a tuned lens (the original's ``train_loop.Train``; fields = ``train``'s flags).

    Attributes:
        model: the model.
        data: the training documents.
        optimizer: the optimiser settings.
        dist: process and batch settings.
        output: folder for ``config.json`` + ``params.safetensors``.
        seed: seed of the chunk order.
        lens_name_or_path: warm-start from this lens.
        bias_only: train only the translators' biases.
        num_steps: optimiser steps.
        tokens_per_step: tokens per step (a multiple of the chunk length).
        wandb: W&B run name (``None``: no W&B).
        token_shift: label shift (``None``: 0 for KL, 1 for CE).
        checkpoint_freq: steps between snapshots (``None``: none).
        checkpoint_dir: snapshot folder (``None``: ``<output>/checkpoints``).
        loss: KL(model ‖ lens) or next-token cross-entropy.
    """

    model: Model
    data: Data
    optimizer: Optimizer
    dist: Distributed
    output: Path
    seed: int = 42
    lens_name_or_path: str | None = None
    bias_only: bool = False
    num_steps: int = 250
    tokens_per_step: int = 2**18
    wandb: str | None = None
    token_shift: int | None = None
    checkpoint_freq: int | None = None
    checkpoint_dir: Path | None = None
    loss: LossChoice = LossChoice.KL

    def execute(self) -> TrainResult:
        """Train and save the lens, as ``tuned-lens train`` with these settings.

        Returns:
            The engine's :class:`~tuned_lens.training.train_config.TrainResult`.

        Raises:
            TunedLensError: bad settings, unreadable data, or too little of it.
        """
        from tuned_lens.training import flags  # cycle-ok: Train runs the engine re-exporting it
        from tuned_lens.training.commands import run_train  # cycle-ok: as above
        from tuned_lens.training.train_config import TrainConfig  # cycle-ok: as above

        args = _flags(self.data, self.model, self.dist, output=Path(self.output))
        opt = self.optimizer
        vars(args).update(
            seed=self.seed,
            bias_only=self.bias_only,
            num_steps=self.num_steps,
            tokens_per_step=self.tokens_per_step,
            wandb=self.wandb,
            token_shift=self.token_shift,
            checkpoint_freq=self.checkpoint_freq,
            checkpoint_dir=None if self.checkpoint_dir is None else Path(self.checkpoint_dir),
            loss=_member(LossChoice, self.loss, "loss").name,
            optimizer=_member(OptimizerOption, opt.optimizer, "optimizer").name,
            **{k: getattr(opt, k) for k in ("weight_decay", "lr_scale", "momentum", "zero")},
            warmup_steps=opt.warmup_steps,
            # Settings the original did not have: the engine's own defaults.
            **{f.name: f.default for f in fields(TrainConfig) if f.name in _NEWER_TRAIN_SETTINGS},
        )
        return run_train(
            model_spec=args.model_spec,
            data_spec=args.data_spec,
            config=flags.train_config(args),
            output=args.output,
            lens_name_or_path=self.lens_name_or_path,
            dist_spec=args.dist_spec,
        )


@dataclass
class Eval:
    """Evaluate lenses (the original's ``eval_loop.Eval``; fields = ``eval``'s flags).

    Attributes:
        data: the evaluation documents.
        model: the model.
        dist: process and batch settings (``dist.per_gpu_batch_size`` is the micro-batch).
        output: folder for the result files.
        lens_name: the tuned lens to evaluate (``None``: the logit lens only).
        logit: also evaluate the logit lens.
        seed: seed of the chunk order.
        tokens: tokens to evaluate (``None``: the whole data set).
        token_shift: CE compares position ``t`` with the token at ``t + token_shift``.
        per_gpu_batch_size: the same setting as ``dist.per_gpu_batch_size`` (the original used
            it only for the token limit); give one of them, or both equal.
        layer_transfer: apply every translator to every layer.
        record_logit_stats: write each layer's mean predicted distribution.
    """

    data: Data
    model: Model
    dist: Distributed
    output: Path
    lens_name: str | None = None
    logit: bool = True
    seed: int = 42
    tokens: int | None = None
    token_shift: int = 1
    per_gpu_batch_size: int = 1
    layer_transfer: bool = False
    record_logit_stats: bool = False

    def execute(self) -> EvalResult:
        """Evaluate and write the result files, as ``tuned-lens eval`` with these settings.

        Raises:
            TunedLensError: bad settings or unreadable data.
        """
        from tuned_lens.training import flags  # cycle-ok: Eval runs the engine re-exporting it
        from tuned_lens.training.commands import run_eval  # cycle-ok: as above

        args = _flags(self.data, self.model, self.dist, output=Path(self.output))
        vars(args).update(
            per_gpu_batch_size=_given(self.dist.per_gpu_batch_size),
            eval_batch_alias=_given(self.per_gpu_batch_size),
            **{k: getattr(self, k) for k in ("seed", "tokens", "token_shift", "layer_transfer")},
            record_logit_stats=self.record_logit_stats,
        )
        return run_eval(
            model_spec=args.model_spec,
            data_spec=args.data_spec,
            config=flags.eval_config(args),
            output=args.output,
            lens_name=self.lens_name,
            logit=self.logit,
            dist_spec=args.dist_spec,
        )


def _member(cls: type[_E], value: object, option: str) -> _E:
    """``value`` as a member of ``cls``: a member, its value or its name, in any case.

    Raises:
        InvalidInputError: ``value`` names no member.
    """
    from tuned_lens.errors import InvalidInputError

    if isinstance(value, cls):
        return value
    for member in cls:
        if str(value).lower() in (member.value, member.name.lower()):
            return member
    names = ", ".join(m.name for m in cls)
    raise InvalidInputError(f"{option} must be one of {names}, got {value!r}", option=option)


def _given(batch: int) -> int | None:
    """A micro-batch other than the default 1 counts as given (``None`` otherwise)."""
    return None if batch == 1 else batch


def _flags(
    data: Data, model: Model, dist: Distributed | None = None, **extra: Any
) -> argparse.Namespace:
    """The command line's namespace for these settings, with its specs attached.

    ``model_spec``, ``data_spec`` and ``dist_spec`` come from :func:`flags.specs`, the
    mapping ``tuned-lens`` itself uses. The revision ``"main"`` is the default branch, which
    the engine spells ``None``.
    """
    from tuned_lens.training import flags  # cycle-ok: the dataclasses run the engine

    dist = dist or Distributed()
    args = argparse.Namespace(
        model_name=model.name,
        precision=model.precision,
        model_revision=None if model.revision == "main" else model.revision,
        tokenizer=model.tokenizer,
        slow_tokenizer=model.slow_tokenizer,
        data_name=list(data.name),
        split=data.split,
        text_column=data.text_column,
        data_revision=data.revision,
        max_seq_len=data.max_seq_len,
        dataset_shuffle=data.dataset_shuffle,
        dataset_shuffle_seed=data.dataset_shuffle_seed,
        fsdp=dist.fsdp,
        cpu_offload=dist.cpu_offload,
        nccl_timeout=dist.nccl_timeout,
        device=None,
        per_gpu_batch_size=dist.per_gpu_batch_size,
        dataloader_shuffle=dist.dataloader_shuffle,
        progress=True,
        **extra,
    )
    args.model_spec, args.data_spec, args.dist_spec = flags.specs(args)
    return args
