"""The Jacobian lens: the estimator against its definition, read-out, files, resume, merge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
import torch
from jlens_helpers import FIT_TEXT, HELD_OUT_TEXT, exact_jacobian, kl_model_lens
from tuned_lens.errors import InvalidInputError, LensFileError, UnsafeLensFileError
from tuned_lens.nn import JacobianLens, LogitLens, Unembed
from tuned_lens.nn.jacobian_fit import _Capture, _StopForward
from tuned_lens.nn.jacobian_io import read_plain_torch_file
from tuned_lens.testing import tiny_model

SKIP = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: on a busy 2-core machine one thread is ~20x faster than two.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _prompts(n: int, length: int = 10, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (length + k % 3,), generator=g) for k in range(n)]


@pytest.fixture(scope="module")
def gpt2_f64():
    # GPT-2's LayerNorm computes in the model's dtype, so float64 is exact end to end (Llama's
    # RMSNorm upcasts to float32 only).
    return tiny_model("gpt2", dtype=torch.float64, num_hidden_layers=3)


@pytest.fixture(scope="module")
def fitted(gpt2_f64):
    return JacobianLens.fit(gpt2_f64, _prompts(4), skip_first=SKIP, dim_batch=5, progress=False)


def test_fit_equals_the_definition_by_jacrev(gpt2_f64, fitted):
    prompts = _prompts(4)
    assert fitted.layers == (0, 1, 2) and fitted.n_prompts == 4 and len(fitted) == 3
    assert fitted.J.dtype == torch.float64
    for idx in fitted.layers:
        expected = sum(exact_jacobian(gpt2_f64, p, idx, SKIP) for p in prompts) / len(prompts)
        torch.testing.assert_close(fitted.jacobian(idx), expected, atol=1e-12, rtol=1e-10)


def test_short_prompts_are_skipped_and_layers_selectable(gpt2_f64):
    prompts = [*_prompts(2), torch.arange(SKIP + 1)]  # T = skip_first + 1: no valid position
    with pytest.warns(UserWarning, match="1 prompts"):
        lens = JacobianLens.fit(gpt2_f64, prompts, skip_first=SKIP, layers=[-1, 1], progress=False)
    assert lens.layers == (1, 2) and lens.n_prompts == 2
    with pytest.raises(InvalidInputError, match="covers layers 1..2"):
        lens(torch.zeros(32, dtype=torch.float64), 0)
    with pytest.raises(IndexError):
        lens(torch.zeros(32, dtype=torch.float64), 3)
    with pytest.raises(InvalidInputError, match="nothing to fit"):
        JacobianLens.fit(gpt2_f64, [torch.arange(4)], skip_first=SKIP, progress=False)
    with pytest.raises(InvalidInputError, match="out of range"):
        JacobianLens.fit(gpt2_f64, prompts, layers=[3], progress=False)


def test_fit_is_deterministic(gpt2_f64, fitted):
    again = JacobianLens.fit(gpt2_f64, _prompts(4), skip_first=SKIP, dim_batch=32, progress=False)
    # dim_batch changes memory, not the result (bit-for-bit up to float64 reduction order).
    torch.testing.assert_close(again.J, fitted.J, atol=1e-14, rtol=0)
    same = JacobianLens.fit(gpt2_f64, _prompts(4), skip_first=SKIP, dim_batch=5, progress=False)
    assert torch.equal(same.J, fitted.J)


@pytest.mark.parametrize("family", ["llama", "gemma2", "gpt2"])
def test_captured_states_are_this_projects_hidden_states(family):
    model = tiny_model(family, num_hidden_layers=3)
    ids = _prompts(1)[0][None]
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    capture = _Capture(
        model.model.layers if hasattr(model, "model") else model.transformer.h, [0, 1, 2]
    )
    with capture.installed(), pytest.raises(_StopForward):
        model(ids, use_cache=False)
    for i in range(3):
        torch.testing.assert_close(capture.sources[i], out.hidden_states[i])
    # The target is the state entering the final norm: the unembedding of it is the output.
    assert capture.target is not None
    torch.testing.assert_close(Unembed(model)(capture.target), out.logits, atol=1e-5, rtol=1e-5)


def test_readout_is_unembed_of_final_norm_of_J_h():
    # Gemma-2: RMSNorm with (1 + w), and final-logit soft-capping at 3.0.
    model = tiny_model("gemma2", num_hidden_layers=3)
    lens = JacobianLens.fit(model, _prompts(2), skip_first=SKIP, progress=False)
    h = torch.randn(2, 5, 32)
    for idx in range(3):
        moved = h @ lens.jacobian(idx).T
        logits = model.lm_head(model.model.norm(moved))
        by_hand = 3.0 * torch.tanh(logits / 3.0)
        with torch.no_grad():
            torch.testing.assert_close(lens(h, idx), by_hand, atol=1e-6, rtol=1e-5)


def test_reference_format_round_trip(gpt2_f64, fitted, tmp_path):
    path = tmp_path / "lens.pt"
    fitted.save(path)  # fp16, the reference default
    raw = torch.load(path, weights_only=True)  # what the reference and TransformerLens read
    assert sorted(raw) == ["J", "J_embedding", "d_model", "metadata", "n_prompts", "source_layers"]
    assert raw["source_layers"] == [0, 1] and raw["d_model"] == 32 and raw["n_prompts"] == 4
    assert raw["J"][0].dtype == torch.float16 and raw["metadata"]["target_layer"] == 2
    torch.testing.assert_close(raw["J"][1].double(), fitted.jacobian(2), atol=2e-3, rtol=0)
    loaded = JacobianLens.from_pretrained(path, model=gpt2_f64)
    assert loaded.layers == fitted.layers and loaded.n_prompts == 4
    torch.testing.assert_close(loaded.J.double(), fitted.J, atol=2e-3, rtol=0)
    fitted.save(tmp_path / "wide.pt", dtype=torch.float64)
    wide = JacobianLens.from_pretrained(tmp_path / "wide.pt", model=gpt2_f64)
    torch.testing.assert_close(wide.J.double(), fitted.J.float().double(), atol=0, rtol=0)
    h = torch.randn(3, 32, dtype=torch.float64)
    torch.testing.assert_close(wide(h, 1), fitted(h, 1), atol=1e-5, rtol=1e-5)


def test_safetensors_round_trip(gpt2_f64, fitted, tmp_path):
    fitted.save(tmp_path / "st", format="safetensors", dtype=torch.float32)
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == [
        "config.json",
        "params.safetensors",
    ]
    loaded = JacobianLens.from_pretrained(tmp_path / "st", model=gpt2_f64)
    assert torch.equal(loaded.J, fitted.J.float()) and loaded.metadata == fitted.metadata
    with pytest.raises(InvalidInputError, match="format"):
        fitted.save(tmp_path / "x", format="pickle")  # type: ignore[arg-type]


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_without_running(gpt2_f64, fitted, tmp_path):
    marker = tmp_path / "pwned"
    evil = {"J": {0: torch.zeros(32, 32)}, "d_model": 32, "metadata": {"x": _Evil(str(marker))}}
    torch.save(evil, tmp_path / "evil.pt")
    with zipfile.ZipFile(tmp_path / "evil.pt") as archive:
        assert any(b"system" in archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    with pytest.raises(UnsafeLensFileError, match="system"):
        JacobianLens.from_pretrained(tmp_path / "evil.pt", model=gpt2_f64)
    torch.save(evil, tmp_path / "bare.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UnsafeLensFileError, match="bare"):
        read_plain_torch_file(tmp_path / "bare.pt")
    assert not marker.exists()


def test_model_checks(gpt2_f64, fitted, tmp_path):
    fitted.save(tmp_path / "lens.pt")
    renamed = tiny_model("gpt2", dtype=torch.float64, n_layer=3)
    renamed.config.name_or_path = "someone/other-model"
    with pytest.raises(LensFileError, match="fitted on 'tiny-random-gpt2'"):
        JacobianLens.from_pretrained(tmp_path / "lens.pt", model=renamed)
    assert JacobianLens.from_pretrained(tmp_path / "lens.pt", model=renamed, validate=False)
    shallow = tiny_model("gpt2", dtype=torch.float64, num_hidden_layers=2)
    shallow.config.name_or_path = gpt2_f64.config.name_or_path
    with pytest.raises(LensFileError, match="blocks"):
        JacobianLens.from_pretrained(tmp_path / "lens.pt", model=shallow)
    with pytest.raises(LensFileError, match="lens layers 0..1"):  # layer range, even unvalidated
        JacobianLens.from_pretrained(tmp_path / "lens.pt", model=shallow, validate=False)
    wide = tiny_model("gpt2", dtype=torch.float64, n_layer=3, n_embd=64)
    with pytest.raises(LensFileError, match="d_model"):
        JacobianLens.from_pretrained(tmp_path / "lens.pt", model=wide, validate=False)
    data = fitted.to_data()
    data.metadata["target_layer"] = 1
    from tuned_lens.nn.jacobian_io import write_reference

    write_reference(tmp_path / "target.pt", data, torch.float16)
    with pytest.raises(LensFileError, match="targets block 1"):
        JacobianLens.from_pretrained(tmp_path / "target.pt", model=gpt2_f64)


def test_hub_repo_from_a_snapshot_cache(gpt2_f64, fitted, tmp_path, monkeypatch):
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--jacobian-lens"
    fitted.save(repo / "snapshots" / sha / "gpt2-tiny" / "jlens" / "tiny_jacobian_lens.pt")
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "gpt2-tiny/jlens/tiny_jacobian_lens.pt"
    cache = str(tmp_path / "hub")
    for revision in (None, sha):
        lens = JacobianLens.from_pretrained(
            "org/jacobian-lens", model=gpt2_f64, filename=name, revision=revision, cache_dir=cache
        )
        torch.testing.assert_close(lens.J.double(), fitted.J, atol=2e-3, rtol=0)
    with pytest.raises(LensFileError, match="HF_HUB_OFFLINE"):
        JacobianLens.from_pretrained("org/jacobian-lens", model=gpt2_f64, cache_dir=cache)


def test_merge_of_shards_equals_the_fit_on_all_prompts(gpt2_f64):
    prompts = _prompts(5, seed=1)
    shards = [
        JacobianLens.fit(gpt2_f64, prompts, skip_first=SKIP, shard=(r, 2), progress=False)
        for r in range(2)
    ]
    assert [s.n_prompts for s in shards] == [3, 2]
    merged = JacobianLens.merge(shards)
    whole = JacobianLens.fit(gpt2_f64, prompts, skip_first=SKIP, progress=False)
    assert merged.n_prompts == 5
    torch.testing.assert_close(merged.J, whole.J, atol=1e-12, rtol=1e-10)
    with pytest.raises(InvalidInputError):
        JacobianLens.merge([])


_KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from tuned_lens.testing import tiny_model
from tuned_lens.nn import JacobianLens
model = tiny_model("gpt2", dtype=torch.float64, num_hidden_layers=3)
g = torch.Generator().manual_seed(3)
prompts = [torch.randint(0, 256, (12,), generator=g) for _ in range({n})]
print("start", flush=True)
JacobianLens.fit(model, prompts, skip_first=3, checkpoint=sys.argv[1], checkpoint_every=1,
                 progress=False)
"""


def test_resume_after_sigkill_gives_the_identical_lens(gpt2_f64, tmp_path):
    n = 300
    ckpt = tmp_path / "fit.ckpt"
    script = textwrap.dedent(_KILL_SCRIPT.format(n=n))
    proc = subprocess.Popen([sys.executable, "-c", script, str(ckpt)], stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists() and read_plain_torch_file(ckpt)["next_index"] >= 20:
                break
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = read_plain_torch_file(ckpt)["next_index"]
    assert 0 < done < n, done  # killed mid-fit
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 256, (12,), generator=g) for _ in range(n)]
    resumed = JacobianLens.fit(gpt2_f64, prompts, skip_first=SKIP, checkpoint=ckpt, progress=False)
    fresh = JacobianLens.fit(gpt2_f64, prompts, skip_first=SKIP, progress=False)
    assert resumed.n_prompts == n and torch.equal(resumed.J, fresh.J)
    with pytest.raises(LensFileError, match="different fit"):
        JacobianLens.fit(gpt2_f64, prompts[:-1], skip_first=SKIP, checkpoint=ckpt, progress=False)


def test_it_is_a_lens_for_trajectories(gpt2_f64, fitted):
    from tuned_lens.plotting import CompactTrajectory, PredictionTrajectory

    ids = _prompts(2, length=8)
    traj = PredictionTrajectory.from_lens_and_model(fitted, gpt2_f64, ids[0])
    assert traj.log_probs.shape == (4, ids[0].shape[0], 256)
    compact = CompactTrajectory.from_lens_and_model(
        fitted,
        gpt2_f64,
        [i.tolist() for i in ids],
        progress=False,
        other_lens=LogitLens.from_model(gpt2_f64),
    )
    assert compact is not None


@pytest.mark.slow
def test_glassllm_fit_and_measured_kl():
    assets = pytest.importorskip("tuned_lens.assets")
    try:
        model, tokenizer = assets.load_glassllm()
    except assets.AssetMissingError as err:
        pytest.skip(str(err))
    start = time.perf_counter()
    lens = JacobianLens.fit(model, FIT_TEXT, tokenizer=tokenizer, max_seq_len=64, progress=False)
    seconds = time.perf_counter() - start
    assert lens.n_prompts == len(FIT_TEXT) and lens.layers == (0, 1, 2, 3) and seconds < 20
    logit = LogitLens.from_model(model)
    ids = [
        torch.tensor([tokenizer.bos_token_id, *tokenizer(t)["input_ids"]]) for t in HELD_OUT_TEXT
    ]
    kl_j, kl_l = torch.zeros(4), torch.zeros(4)
    with torch.no_grad():
        for seq in ids:
            out = model(seq[None], output_hidden_states=True)
            for i in range(4):
                h = out.hidden_states[i][0, 16:]
                kl_j[i] += kl_model_lens(out.logits[0, 16:], lens(h, i)).mean() / len(ids)
                kl_l[i] += kl_model_lens(out.logits[0, 16:], logit(h, i)).mean() / len(ids)
    print(f"glassllm J-lens fit {seconds:.1f}s; KL jacobian {kl_j.tolist()} logit {kl_l.tolist()}")
    assert torch.isfinite(kl_j).all()
