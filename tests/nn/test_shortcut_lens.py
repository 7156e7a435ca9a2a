"""The linear shortcut: the streaming solver against numpy, files, tuned-lens init, glassllm KL."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from jlens_helpers import FIT_TEXT, HELD_OUT_TEXT, kl_model_lens
from tuned_lens.architectures import resolve_architecture
from tuned_lens.errors import InvalidInputError, LensFileError
from tuned_lens.nn import LinearShortcutLens, LogitLens, TunedLens, Unembed
from tuned_lens.nn.shortcut_lens import AffineLeastSquares, _last_block_output
from tuned_lens.testing import tiny_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_streaming_solver_equals_numpy_lstsq():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)) * [1, 10, 0.1, 3, 1, 5] + 7.0  # offset, uneven scales
    y = x @ rng.normal(size=(6, 4)) + rng.normal(size=4) + 0.3 * rng.normal(size=(300, 4))
    acc = AffineLeastSquares(6, 4)
    for lo, hi in ((0, 37), (37, 200), (200, 300)):
        acc.update(torch.tensor(x[lo:hi]), torch.tensor(y[lo:hi]))
    a, b = acc.solve(ridge=0.0)
    design = np.hstack([x, np.ones((300, 1))])
    coef = np.linalg.lstsq(design, y, rcond=None)[0]  # (7, 4)
    np.testing.assert_allclose(a.numpy(), coef[:6].T, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.numpy(), coef[6], rtol=1e-9, atol=1e-9)
    with pytest.raises(InvalidInputError, match="singular"):
        few = AffineLeastSquares(6, 4)
        few.update(torch.tensor(x[:3]), torch.tensor(y[:3]))
        few.solve(ridge=0.0)
    assert few.solve(ridge=1e-6)[0].shape == (4, 6)  # the ridge makes it solvable


def test_target_is_the_pre_norm_last_residual():
    model = tiny_model("llama", num_hidden_layers=3)
    ids = torch.randint(0, 256, (1, 9), generator=torch.Generator().manual_seed(0))
    hidden, final = _last_block_output(model, resolve_architecture(model).layers, ids)
    assert len(hidden) == 3
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        torch.testing.assert_close(Unembed(model)(final), out.logits, atol=1e-5, rtol=1e-5)


def test_files_and_tuned_lens_initialisation(tmp_path):
    model = tiny_model("llama", num_hidden_layers=3)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 256, (24,), generator=g) for _ in range(4)]
    lens = LinearShortcutLens.fit(model, prompts, ridge=1e-3, progress=False)
    assert len(lens) == 3 and lens.n_tokens == 96
    lens.save(tmp_path / "sc")
    loaded = LinearShortcutLens.from_pretrained(tmp_path / "sc", model=model)
    assert torch.equal(loaded.weight, lens.weight) and torch.equal(loaded.bias, lens.bias)
    with pytest.raises(LensFileError, match="d_model"):
        LinearShortcutLens.from_pretrained(tmp_path / "sc", model=tiny_model("llama"))
    tuned = TunedLens.from_model(model)
    tuned.layer_translators.load_state_dict(lens.translator_state())
    h = torch.randn(5, 32)
    with torch.no_grad():
        for i in range(3):
            torch.testing.assert_close(tuned(h, i), lens(h, i), atol=1e-5, rtol=1e-5)


def _held_out_kl(model, tokenizer, lens, texts) -> torch.Tensor:
    """Mean over texts of the mean over positions 1.. of KL(model ‖ lens), per layer."""
    kl = torch.zeros(len(resolve_architecture(model).layers))
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]])
            out = model(ids, output_hidden_states=True)
            for i in range(len(kl)):
                lens_logits = lens(out.hidden_states[i][0, 1:], i)
                kl[i] += kl_model_lens(out.logits[0, 1:], lens_logits).mean() / len(texts)
    return kl


@pytest.mark.slow
def test_glassllm_shortcut_beats_the_logit_lens_on_held_out_text():
    assets = pytest.importorskip("tuned_lens.assets")
    try:
        model, tokenizer = assets.load_glassllm()
    except assets.AssetMissingError as err:
        pytest.skip(str(err))
    # ~300 fitting tokens for 128x128 maps: the ridge matters. Choose it on a split of the
    # fitting text only (the held-out text plays no part), then refit on all of it.
    grid = (1e-3, 1e-2, 1e-1, 1.0)
    scores = []
    for ridge in grid:
        trial = LinearShortcutLens.fit(
            model, FIT_TEXT[:4], tokenizer=tokenizer, ridge=ridge, progress=False
        )
        scores.append(float(_held_out_kl(model, tokenizer, trial, FIT_TEXT[4:]).sum()))
    ridge = grid[int(np.argmin(scores))]
    start = time.perf_counter()
    lens = LinearShortcutLens.fit(model, FIT_TEXT, tokenizer=tokenizer, ridge=ridge, progress=False)
    seconds = time.perf_counter() - start
    shortcut = _held_out_kl(model, tokenizer, lens, HELD_OUT_TEXT)
    logit = _held_out_kl(model, tokenizer, LogitLens.from_model(model), HELD_OUT_TEXT)
    print(
        f"shortcut ridge={ridge} fit {seconds:.2f}s KL {shortcut.tolist()} logit {logit.tolist()}"
    )
    assert bool((shortcut < logit).all()), (shortcut, logit)
