"""The fused, chunked unembedding + loss: exact against the materialised loss (values and
gradients, float64 gradcheck), the same lens out of training, and the fall-back where the
lens's output path cannot be fused."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from tuned_lens.data import PackedChunks
from tuned_lens.errors import InvalidInputError
from tuned_lens.nn import TunedLens
from tuned_lens.training.fused_loss import (
    BLOCK_ELEMENTS,
    FusedHead,
    auto_chunk_size,
    ce_target,
    fused_lens_loss,
    kl_target,
    lens_state,
)
from tuned_lens.training.lens_loss import fused_head_for, layer_losses
from tuned_lens.training.train_loop import TrainConfig, train_lens

TRANSFORMS = [(), (("scale", 0.7),), (("softcap", 2.0), ("scale", 1.3))]
CPU = torch.device("cpu")


def _head(vocab=23, d=5, *, bias=True, transforms=(), seed=0) -> FusedHead:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(vocab, d, generator=gen, dtype=torch.float64)
    b = torch.randn(vocab, generator=gen, dtype=torch.float64) if bias else None
    return FusedHead(weight, b, tuple(transforms))


def _reference_logits(z: torch.Tensor, head: FusedHead) -> torch.Tensor:
    """The unfused expression ``T(z Wᵀ + b)``."""
    y = z @ head.weight.T
    if head.bias is not None:
        y = y + head.bias
    for kind, value in head.transforms:
        y = y * value if kind == "scale" else torch.tanh(y / value) * value
    return y


@pytest.mark.parametrize("transforms", TRANSFORMS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk", [1, 4, 23, 100])
def test_kl_values_and_gradients_equal_autograd_in_float64(transforms, bias, chunk):
    head = _head(bias=bias, transforms=transforms)
    gen = torch.Generator().manual_seed(1)
    model_logits = torch.randn(2, 9, 23, generator=gen, dtype=torch.float64)[:, 2:]  # a view
    before = model_logits.clone()
    z = torch.randn(14, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    target = kl_target(model_logits, head, chunk)
    got = fused_lens_loss(z, head, target)
    log_p = model_logits.reshape(-1, 23).log_softmax(-1)
    want = (log_p.exp() * (log_p - _reference_logits(z, head).log_softmax(-1))).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    weights = torch.randn(14, generator=gen, dtype=torch.float64)
    (grad_got,) = torch.autograd.grad(got, z, weights)
    (grad_want,) = torch.autograd.grad(want, z, weights)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-10, atol=1e-12)
    assert torch.equal(model_logits, before)  # the caller's logits are not touched


@pytest.mark.parametrize("transforms", TRANSFORMS)
def test_ce_with_ignored_rows_equals_nll_loss(transforms):
    head = _head(transforms=transforms)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(10, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 23, (10,), generator=gen)
    labels[[2, 7]] = -100
    target = ce_target(labels, head, 6, dtype=torch.float64)
    rows = fused_lens_loss(z, head, target)
    got = rows.sum() / target.mass.sum()
    want = F.cross_entropy(_reference_logits(z, head), labels)  # ignore_index=-100
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert rows[2] == 0 and rows[7] == 0
    (grad_got,) = torch.autograd.grad(got, z)
    (grad_want,) = torch.autograd.grad(want, z)
    torch.testing.assert_close(grad_got, grad_want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("transforms", TRANSFORMS)
@pytest.mark.parametrize("loss", ["KL", "CE"])
def test_gradcheck(transforms, loss):
    head = _head(vocab=11, d=3, transforms=transforms)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    if loss == "KL":
        target = kl_target(torch.randn(4, 11, generator=gen, dtype=torch.float64), head, 4)
    else:
        target = ce_target(torch.tensor([0, 10, 5, -100]), head, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: fused_lens_loss(x, head, target), (z,))


def test_no_gradient_is_computed_without_grad():
    head = _head()
    z = torch.randn(3, 5, dtype=torch.float64)
    target = kl_target(torch.randn(3, 23, dtype=torch.float64), head)
    with torch.no_grad():
        rows = fused_lens_loss(z, head, target)
    assert rows.shape == (3,) and not rows.requires_grad


def test_bad_inputs_raise_the_library_error():
    head = _head()
    with pytest.raises(InvalidInputError):
        kl_target(torch.randn(3, 23), head, chunk_size=0)
    with pytest.raises(InvalidInputError):
        kl_target(torch.randn(3, 24), head)
    with pytest.raises(InvalidInputError):
        ce_target(torch.tensor([0, 23]), head)
    target = kl_target(torch.randn(3, 23, dtype=torch.float64), head)
    with pytest.raises(InvalidInputError):
        fused_lens_loss(torch.randn(4, 5, dtype=torch.float64), head, target)


@pytest.mark.parametrize(("loss", "shift"), [("KL", 0), ("KL", 2), ("CE", 1), ("CE", 3)])
@pytest.mark.parametrize("group_rows", [1, 20, 4096])
@pytest.mark.parametrize("transforms", [(("scale", 0.5),), (("softcap", 3.0),)])
def test_layer_losses_fused_equals_unfused(loss, shift, group_rows, transforms):
    """The same losses and lens gradients from ``layer_losses`` both ways (float32), with one
    layer per fused pass, two, or all three stacked."""
    torch.manual_seed(4)
    head = FusedHead(torch.randn(50, 8), torch.randn(50), transforms)
    hidden = torch.randn(3, 2, 7, 8)  # layer, batch, position, d
    model_logits = torch.randn(2, 7, 50)
    ids = torch.randint(0, 50, (2, 7))
    grads = []
    for fused in (False, True):
        states = hidden.clone().requires_grad_(True)
        values = layer_losses(
            model_logits,
            ids,
            lambda layer, s=states: _reference_logits(s[layer], head),
            3,
            loss=loss,
            token_shift=shift,
            scale=0.5,
            head=head,
            lens_state_fn=lambda layer, s=states: s[layer],
            fused=fused,
            chunk_size=16,
            group_rows=group_rows,
        )
        grads.append((torch.stack(list(values)), states.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-4, atol=1e-7)


def test_repeated_target_is_the_target_stacked():
    """``repeated(k)`` is ``k`` stacked copies, for both targets and every chunk."""
    torch.manual_seed(6)
    head = FusedHead(torch.randn(23, 5, dtype=torch.float64))
    targets = [
        kl_target(torch.randn(2, 3, 23, dtype=torch.float64), head, 7),
        ce_target(torch.tensor([[1, -100, 22]]), head, 7, dtype=torch.float64),
    ]
    for target in targets:
        tripled = target.repeated(3).repeated(2)
        n = target.mass.shape[0]
        assert tripled.mass.shape == (6 * n,) and tripled.pw.shape == (6 * n, 5)
        for start in (0, 7, 21):
            block = target.probs(start, min(start + 7, 23))
            torch.testing.assert_close(tripled.probs(start, min(start + 7, 23)), block.repeat(6, 1))
        z = torch.randn(n, 5, dtype=torch.float64)
        one = fused_lens_loss(z, head, target)
        torch.testing.assert_close(fused_lens_loss(z.repeat(6, 1), head, tripled), one.repeat(6))
    with pytest.raises(InvalidInputError):
        targets[0].repeated(0)


def test_auto_chunk_size_bounds_the_block():
    """Powers of two in [256, 16384], never a block above BLOCK_ELEMENTS unless C is at 256."""
    sizes = [auto_chunk_size(rows) for rows in (0, 1, 128, 3840, 4096, 10**6)]
    assert sizes[:3] == [16384, 16384, 16384] and sizes[3] == 1024 and sizes[5] == 256
    for rows in range(1, 40000, 97):
        chunk = auto_chunk_size(rows)
        assert chunk & (chunk - 1) == 0 and 256 <= chunk <= 16384
        assert chunk * rows <= BLOCK_ELEMENTS or chunk == 256
        assert chunk == 16384 or 2 * chunk * rows > BLOCK_ELEMENTS
    # An accelerator gets 8× the block (rows 8192 of a long-context micro-batch: C = 4096).
    assert auto_chunk_size(8192, "cuda") == 4096 == 8 * auto_chunk_size(8192, "cpu")
    assert auto_chunk_size(8192, torch.device("meta")) == 4096


def _chunks(vocab: int, seq_len: int = 32, count: int = 24) -> PackedChunks:
    ids = torch.randint(0, vocab, (count, seq_len), generator=torch.Generator().manual_seed(5))
    return PackedChunks(
        input_ids=ids, nats_to_bpb=1.0, num_documents=1, total_tokens=ids.numel(), total_bytes=1
    )


def _train_both_ways(model, chunks, *, loss="KL", steps=3, chunk_size=96):
    """Translators after ``steps`` steps trained unfused and fused, and the two results."""
    out = []
    for fused in (False, True):
        lens = TunedLens.from_model(model)
        config = TrainConfig(num_steps=steps, tokens_per_step=128, loss=loss, progress=False)
        config.fused_loss = fused
        config.loss_chunk_size = chunk_size
        result = train_lens(model, lens, chunks, config)
        out.append((lens.layer_translators.state_dict(), result))
    return out


def _assert_same_lens(pair, rtol=1e-4, atol=1e-6):
    (unfused, result_u), (fused, result_f) = pair
    torch.testing.assert_close(result_f.losses, result_u.losses, rtol=1e-4, atol=1e-6)
    for name, tensor in unfused.items():
        assert tensor.abs().max() > 0 or "bias" not in name  # the lens moved
        torch.testing.assert_close(fused[name], tensor, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    ("family", "loss"),
    [("llama", "KL"), ("llama", "CE"), ("gemma2", "KL"), ("cohere", "CE"), ("opt-350m", "KL")],
)
def test_training_on_tiny_models_gives_the_same_lens(family, loss, monkeypatch):
    """Soft-capping (gemma2), logit scale (cohere), a pre-head projection (opt-350m)."""
    from tuned_lens.testing import TINY_VOCAB_SIZE, tiny_model
    from tuned_lens.training import lens_loss

    model = tiny_model(family, seed=0).requires_grad_(False)
    assert fused_head_for(TunedLens.from_model(model), CPU, torch.float32) is not None
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return fused_lens_loss(*args, **kwargs)

    monkeypatch.setattr(lens_loss, "fused_lens_loss", counted)
    _assert_same_lens(_train_both_ways(model, _chunks(TINY_VOCAB_SIZE), loss=loss))
    # steps × micro-batches, of the fused run only: both layers are decoded in one pass
    assert len(calls) == 3 * 4


def test_training_on_glassllm_gives_the_same_lens():
    from tuned_lens.assets import load_glassllm

    model, _ = load_glassllm()
    model.requires_grad_(False)
    vocab = model.get_output_embeddings().weight.shape[0]
    _assert_same_lens(_train_both_ways(model, _chunks(vocab), chunk_size=300))


class _Shift(nn.Module):
    """An output transform the fused loss does not know."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return logits - logits.mean(-1, keepdim=True) ** 2


class _OwnForward(TunedLens):
    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        return super().forward(h, idx) * 2


def test_unknown_output_paths_fall_back_to_the_materialised_loss():
    from tuned_lens.testing import TINY_VOCAB_SIZE, tiny_model

    model = tiny_model("llama", seed=0).requires_grad_(False)
    lens = TunedLens.from_model(model)
    lens.unembed.logit_transform.append(_Shift())
    assert fused_head_for(lens, CPU, torch.float32) is None
    own = _OwnForward(lens.unembed, lens.config)
    assert fused_head_for(own, CPU, torch.float32) is None
    # Training still runs, through the lens's own forward.
    config = TrainConfig(num_steps=2, tokens_per_step=128, progress=False)
    result = train_lens(model, lens, _chunks(TINY_VOCAB_SIZE), config)
    assert all(torch.isfinite(torch.tensor(row)).all() for row in result.losses)


def test_lens_state_then_head_is_the_lens():
    from tuned_lens.testing import tiny_model

    model = tiny_model("opt-350m", seed=0).requires_grad_(False)
    lens = TunedLens.from_model(model)
    nn.init.normal_(lens.layer_translators[1].weight, std=0.1)
    head = fused_head_for(lens, CPU, torch.float32)
    assert head is not None
    h = torch.randn(2, 3, lens.unembed.d_model)
    logits = lens_state(lens, h, 1) @ head.weight.T
    if head.bias is not None:
        logits = logits + head.bias
    torch.testing.assert_close(logits, lens(h, 1))


def test_bfloat16_model_under_autocast_gives_the_same_losses():
    """A bfloat16 model on the CPU: the lens runs under bfloat16 autocast both ways."""
    from tuned_lens.testing import TINY_VOCAB_SIZE, tiny_model

    model = tiny_model("llama", seed=0).to(torch.bfloat16).requires_grad_(False)
    head = fused_head_for(TunedLens.from_model(model), CPU, torch.bfloat16)
    assert head is not None and head.matmul_dtype == torch.bfloat16
    (unfused, result_u), (fused, result_f) = _train_both_ways(model, _chunks(TINY_VOCAB_SIZE))
    # bfloat16 logits round to ~3 significant digits; the fused loss sums them in float32.
    torch.testing.assert_close(result_f.losses, result_u.losses, rtol=2e-2, atol=1e-5)
    for name, tensor in unfused.items():
        assert torch.isfinite(fused[name]).all()
        scale = tensor.float().abs().max().item()
        torch.testing.assert_close(fused[name], tensor, rtol=0.05, atol=0.05 * scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("loss", ["KL", "CE"])
def test_fused_loss_on_cuda_equals_the_cpu(loss):
    """On CUDA (float32, then bfloat16 matmuls as autocast gives them) the fused layer losses
    and gradients equal the float64 CPU ones, all layers stacked in one pass."""
    torch.manual_seed(7)
    weight, bias = torch.randn(300, 16, dtype=torch.float64), torch.randn(300, dtype=torch.float64)
    hidden = torch.randn(4, 2, 9, 16, dtype=torch.float64)
    model_logits = torch.randn(2, 9, 300, dtype=torch.float64)
    ids = torch.randint(0, 300, (2, 9))
    shift = 1 if loss == "CE" else 0

    def run(device, dtype, matmul_dtype=None):
        head = FusedHead(weight.to(device, dtype), bias.to(device, dtype), (), matmul_dtype)
        states = hidden.to(device, dtype).detach().requires_grad_(True)
        values = layer_losses(
            model_logits.to(device, dtype),
            ids.to(device),
            lambda layer: _reference_logits(states[layer], head),
            4,
            loss=loss,
            token_shift=shift,
            scale=1.0,
            head=head,
            lens_state_fn=lambda layer: states[layer],
            chunk_size=None,
        )
        return torch.stack(list(values)).cpu().double(), states.grad.cpu().double()

    want = run("cpu", torch.float64)
    for matmul_dtype, tol in ((None, 1e-5), (torch.bfloat16, 3e-2)):
        got = run("cuda", torch.float32, matmul_dtype)
        torch.testing.assert_close(got[0], want[0], rtol=tol, atol=tol)
        torch.testing.assert_close(got[1], want[1], rtol=tol, atol=tol)
