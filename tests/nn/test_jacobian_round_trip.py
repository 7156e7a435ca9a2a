"""Jacobian lenses on the real glassllm and SmolLM2-135M: fit, files, and read-out (issue 14).

A lens fitted here is written in the reference ``.pt`` format (fp16 ``J``) and as safetensors +
JSON; a second ``.pt`` is written by hand the way the reference ``jlens`` saves (``J`` keyed by
block, ``n_prompts``, ``source_layers``, ``d_model``, nothing else). All three load through
``from_pretrained`` (the allow-list unpickler) and must agree with each other exactly, with the
in-memory lens to fp16 rounding, and read out as the model's own final norm and head applied to
``J h``.
"""

from __future__ import annotations

import time

import pytest
import torch
from jlens_helpers import FIT_TEXT, HELD_OUT_TEXT
from tuned_lens.nn import JacobianLens

# name -> (loader, fit settings). SmolLM2 fits only its last two hidden states (the graph then
# starts at block 27: two blocks to differentiate) on one prompt of 24 tokens.
MODELS = {
    "glassllm": ("load_glassllm", {"max_seq_len": 64, "dim_batch": 32}, FIT_TEXT[:2]),
    "smollm2": (
        "load_smollm2",
        {"max_seq_len": 24, "skip_first": 4, "dim_batch": 12, "layers": [-2, -1]},
        FIT_TEXT[:1],
    ),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is the faster
    yield
    torch.set_num_threads(before)


def _load(name: str):
    assets = pytest.importorskip("tuned_lens.assets")
    try:
        return getattr(assets, MODELS[name][0])()
    except assets.AssetMissingError as err:
        pytest.skip(str(err))


def _reference_save(lens: JacobianLens, path) -> None:
    """What ``jlens.JacobianLens.save`` writes: blocks ``i - 1`` of hidden states ``i >= 1``."""
    blocks = {i - 1: lens.jacobian(i).half().cpu() for i in lens.layers if i > 0}
    torch.save(
        {
            "J": blocks,
            "n_prompts": lens.n_prompts,
            "source_layers": sorted(blocks),
            "d_model": lens.d_model,
        },
        path,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", ["glassllm", "smollm2"])
def test_fit_files_round_trip_and_read_out(name, tmp_path):
    model, tokenizer = _load(name)
    _, settings, prompts = MODELS[name]
    n_blocks = model.config.num_hidden_layers
    start = time.perf_counter()
    lens = JacobianLens.fit(model, prompts, tokenizer=tokenizer, progress=False, **settings)
    seconds = time.perf_counter() - start
    print(f"{name}: fitted layers {lens.layers} on {lens.n_prompts} prompt(s) in {seconds:.1f} s")
    assert lens.n_prompts == len(prompts) and seconds < 120
    expected = (n_blocks - 2, n_blocks - 1) if name == "smollm2" else tuple(range(n_blocks))
    assert lens.layers == expected

    lens.save(tmp_path / "ours.pt")  # the reference format, fp16 by default
    lens.save(tmp_path / "st", format="safetensors", dtype=torch.float16)
    _reference_save(lens, tmp_path / "reference.pt")
    raw = torch.load(tmp_path / "ours.pt", weights_only=True)  # as jlens / TransformerLens read
    blocks = [i - 1 for i in expected if i > 0]
    assert sorted(raw["J"]) == blocks and raw["source_layers"] == blocks
    assert raw["d_model"] == model.config.hidden_size and raw["n_prompts"] == len(prompts)
    assert all(j.dtype == torch.float16 for j in raw["J"].values())
    assert raw["metadata"]["target_layer"] == n_blocks - 1

    ours = JacobianLens.from_pretrained(tmp_path / "ours.pt", model=model)
    folder = JacobianLens.from_pretrained(tmp_path / "st", model=model)
    reference = JacobianLens.from_pretrained(tmp_path / "reference.pt", model=model)
    assert ours.layers == folder.layers == expected and ours.metadata == lens.metadata
    # The hand-written reference file has no embedding matrix (it has no block index).
    assert reference.layers == tuple(i for i in expected if i > 0)
    assert torch.equal(ours.J, folder.J)
    for i in reference.layers:
        assert torch.equal(reference.jacobian(i), ours.jacobian(i))
        scale = float(lens.jacobian(i).abs().max())
        torch.testing.assert_close(ours.jacobian(i), lens.jacobian(i), atol=1e-3 * scale, rtol=1e-3)

    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(HELD_OUT_TEXT[0])["input_ids"][:30]]])
    with torch.no_grad():
        states = model(ids, output_hidden_states=True).hidden_states
        for i in reference.layers:
            h = states[i][0]
            moved = h @ reference.jacobian(i).T
            by_hand = model.lm_head(model.model.norm(moved))  # the model's own norm and head
            torch.testing.assert_close(reference(h, i), by_hand, atol=1e-4, rtol=1e-4)
            # Against the unrounded lens: fp16 rounding of J moves the distribution very little.
            p = lens(h, i).double().log_softmax(-1)
            q = reference(h, i).double().log_softmax(-1)
            assert float((p.exp() * (p - q)).sum(-1).max()) < 1e-3
