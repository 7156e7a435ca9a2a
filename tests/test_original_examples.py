"""The original's documented examples and behaviours, run as written (issue 12, item 1).

Each test is a snippet of the original's documentation or of code users wrote against it, run
on the offline glassllm model (a real Llama-architecture model and tokenizer).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

pytest.importorskip("glassllm")
datasets = pytest.importorskip("datasets")

RING = (
    "One Ring to rule them all,\n"
    "One Ring to find them,\n"
    "One Ring to bring them all\n"
    "and in the darkness bind them"
)


@pytest.fixture(scope="module")
def glassllm():
    from tuned_lens.assets import load_glassllm

    return load_glassllm()


def test_chunk_and_tokenize_takes_a_dataset(glassllm):
    """``chunk_and_tokenize(Dataset, tokenizer) -> (Dataset, nats_to_bpb)``, as the original."""
    from tuned_lens.data import chunk_and_tokenize

    _, tokenizer = glassllm
    texts = [RING * (i + 1) for i in range(6)]
    data = datasets.Dataset.from_dict({"text": texts, "meta": list(range(6))})
    chunked, ratio = chunk_and_tokenize(data, tokenizer, max_seq_len=16, num_proc=1)
    assert isinstance(chunked, datasets.Dataset)
    assert chunked.format["type"] == "torch" and chunked.format["columns"] == ["input_ids"]
    rows = chunked["input_ids"]
    assert all(len(row) == 16 for row in rows)
    # The original's packing: one EOS-joined string (EOS first too), chunks of 16, last dropped.
    joined = tokenizer.eos_token + tokenizer.eos_token.join(texts)
    ids = tokenizer(joined, max_length=16, truncation=True, return_overflowing_tokens=True)
    expected = ids["input_ids"][:-1]
    assert [list(map(int, row)) for row in rows] == expected
    tokens = sum(len(row) for row in ids["input_ids"])
    assert ratio == pytest.approx(tokens / len(joined.encode()) / math.log(2))


def test_chunk_and_tokenize_refuses_a_list(glassllm):
    """A list of strings is not read as a data set's rows; the fast path has its own name."""
    from tuned_lens.data import chunk_and_tokenize, pack_documents
    from tuned_lens.errors import InvalidInputError

    _, tokenizer = glassllm
    with pytest.raises(InvalidInputError, match="pack_documents") as info:
        chunk_and_tokenize([RING] * 4, tokenizer)
    assert info.value.option == "data"
    packed = pack_documents([RING] * 4, tokenizer, max_seq_len=16)
    assert packed.input_ids.shape[1] == 16


def test_compute_nats_to_bpb_ratio(glassllm):
    from tuned_lens.data import compute_nats_to_bpb_ratio

    _, tokenizer = glassllm
    raw = datasets.Dataset.from_dict({"text": [RING, "short text"]})
    tokenized = raw.map(lambda x: tokenizer(x["text"]), batched=True)
    n_tokens = sum(len(tokenizer(t)["input_ids"]) for t in raw["text"])
    n_bytes = sum(len(t.encode()) for t in raw["text"])
    assert compute_nats_to_bpb_ratio(raw, tokenized) == pytest.approx(
        n_tokens / n_bytes / math.log(2)
    )


class _MyUnembed(nn.Module):
    """An unembedding with only the original's interface: ``forward`` and ``unembedding_hash``."""

    def __init__(self, d: int, vocab: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, vocab)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h)

    def unembedding_hash(self) -> str:
        return "my-hash"


def test_tuned_lens_takes_any_unembedding_module():
    from tuned_lens.nn import TunedLens, TunedLensConfig

    unembed = _MyUnembed(8, 11)
    config = TunedLensConfig(base_model_name_or_path="mine", d_model=8, num_hidden_layers=3)
    lens = TunedLens(unembed, config)
    assert len(lens) == 3 and lens.config.unembed_hash == "my-hash"
    h = torch.randn(2, 5, 8)
    assert torch.equal(lens(h, 1), unembed(h))  # a fresh lens is the identity translator
    assert lens[0].weight.dtype == unembed.proj.weight.dtype


def test_remove_subspace_of_one_vector():
    """The original documents ``A`` as the span; one direction may be given as a vector."""
    from tuned_lens.causal import remove_subspace

    gen = torch.Generator().manual_seed(0)
    u = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    v = torch.randn(5, generator=gen, dtype=torch.float64)
    out = remove_subspace(u, v)
    proj = torch.outer(v, v) / (v @ v)
    torch.testing.assert_close(out, u - u @ proj)
    torch.testing.assert_close(out @ v, torch.zeros(7, dtype=torch.float64))
    mean = remove_subspace(u, v, mode="mean")
    torch.testing.assert_close(mean, u + (u.mean(0) - u) @ proj)


def test_remove_subspace_matches_the_originals_solve_formula():
    from tuned_lens.causal import remove_subspace

    gen = torch.Generator().manual_seed(1)
    u = torch.randn(6, 3, 9, generator=gen, dtype=torch.float64)
    A = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    proj = A @ torch.linalg.solve(A.mT @ A, A.mT)
    torch.testing.assert_close(remove_subspace(u, A), u - u @ proj)
    rank_deficient = torch.cat([A, A[:, :1] * 2], dim=1)  # still col(A); AᵀA is singular
    torch.testing.assert_close(remove_subspace(u, rank_deficient), u - u @ proj)


def test_save_and_load_from_a_local_folder(glassllm, tmp_path):
    """The original's "From a local folder" example."""
    from tuned_lens import TunedLens

    model, _ = glassllm
    lens = TunedLens.from_model(model)
    with torch.no_grad():
        lens[1].weight.normal_(0, 0.01)
    lens.save(tmp_path)
    loaded = TunedLens.from_model_and_pretrained(model, tmp_path)
    h = torch.randn(1, 3, model.config.hidden_size)
    torch.testing.assert_close(loaded(h, 1), lens(h, 1))


def test_comparing_prediction_trajectories_tutorial(glassllm):
    """The original's "Comparing prediction trajectories" tutorial, cells 1-6."""
    from plotly.subplots import make_subplots
    from tuned_lens.nn.lenses import TunedLens
    from tuned_lens.plotting import PredictionTrajectory

    model, tokenizer = glassllm
    device = torch.device("cpu")
    tuned_lens = TunedLens.from_model(model).to(device)
    input_ids_ring = tokenizer.encode(RING)
    input_ids_model = tokenizer.encode(RING.replace("Ring", "Model"))
    targets_ring = input_ids_ring[1:] + [tokenizer.eos_token_id]
    targets_model = input_ids_model[1:] + [tokenizer.eos_token_id]
    third_line = slice(14, 21)
    traj_ring = PredictionTrajectory.from_lens_and_model(
        tuned_lens, model, tokenizer=tokenizer, input_ids=input_ids_ring, targets=targets_ring
    ).slice_sequence(third_line)
    traj_model = PredictionTrajectory.from_lens_and_model(
        tuned_lens, model, tokenizer=tokenizer, input_ids=input_ids_model, targets=targets_model
    ).slice_sequence(third_line)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.03)
    fig.add_trace(traj_ring.cross_entropy().heatmap(), row=1, col=1)
    fig.add_trace(traj_model.cross_entropy().heatmap(), row=2, col=1)
    assert len(fig.data) == 2
    assert traj_ring.log_probs.shape == (model.config.num_hidden_layers + 1, 7, model.vocab_size)
    fig = traj_ring.js_divergence(traj_model).figure(title="JS divergence")
    assert fig.data
