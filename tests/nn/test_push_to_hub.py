"""Lenses as Hub model repositories, up to the network boundary: ``from_pretrained`` from a cache
laid out as ``snapshot_download`` lays it out (blobs, refs, snapshots of symlinks), offline, by
repo id, branch and commit; ``push_to_hub``'s calls inspected on a real ``HfApi`` whose three
network methods are replaced; the original's Space layout still loading."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.file_download import repo_folder_name
from safetensors.torch import load as load_safetensors
from tuned_lens.errors import InvalidInputError, LensFileError
from tuned_lens.nn import TunedLens
from tuned_lens.testing import tiny_input_ids, tiny_model

MAIN_SHA = "a" * 40
V1_SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "someone/tiny-gpt2-lens"


@pytest.fixture
def offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2")


def random_lens(model, seed, rank=None):
    lens = TunedLens.from_model(model, rank=rank)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lens.layer_translators.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return lens


def lens_logits(lens, model):
    """Every layer's lens logits on real hidden states, the oracle two lenses are compared by."""
    with torch.no_grad():
        hidden = model(tiny_input_ids(), output_hidden_states=True).hidden_states
        return torch.stack([lens(hidden[i], i) for i in range(len(lens))])


def _blob_name(path_in_repo, data):
    """The etag the cache names a blob by: SHA-256 for LFS files, git's blob SHA-1 otherwise."""
    if path_in_repo.endswith(".safetensors"):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(cache, repo_id, sha, folder, *, refs=(), prefix="", repo_type="model"):
    """Put ``folder``'s files in ``cache`` as snapshot ``sha``, as ``snapshot_download`` does:
    contents in ``blobs/<etag>``, ``snapshots/<sha>/<path>`` relative symlinks to them, and each
    ref in ``refs`` a file holding ``sha``."""
    root = Path(cache) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for file in sorted(Path(folder).iterdir()):
        if not file.is_file() or file.name.startswith("."):
            continue
        path_in_repo = f"{prefix}{file.name}"
        data = file.read_bytes()
        blob = root / "blobs" / _blob_name(path_in_repo, data)
        blob.write_bytes(data)
        link = root / "snapshots" / sha / path_in_repo
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(sha)
    return root


@pytest.fixture
def hub_cache(tmp_path, model):
    """A model repo with lens 1 at ``main`` and lens 0 at the branch ``v1``."""
    lenses = {MAIN_SHA: random_lens(model, 1), V1_SHA: random_lens(model, 0)}
    for sha, refs in ((MAIN_SHA, ["main"]), (V1_SHA, ["v1"])):
        lenses[sha].save_pretrained(tmp_path / sha, repo_id=REPO)
        add_snapshot(tmp_path / "cache", REPO, sha, tmp_path / sha, refs=refs)
    return tmp_path / "cache", lenses


def test_from_pretrained_offline_by_repo_id_branch_and_commit(offline, hub_cache, model):
    cache, lenses = hub_cache
    by_id = TunedLens.from_pretrained(REPO, model=model, cache_dir=cache)
    by_branch = TunedLens.from_pretrained(REPO, model=model, revision="v1", cache_dir=cache)
    by_commit = TunedLens.from_pretrained(REPO, model=model, revision=V1_SHA, cache_dir=cache)
    assert torch.equal(lens_logits(by_id, model), lens_logits(lenses[MAIN_SHA], model))
    assert torch.equal(lens_logits(by_branch, model), lens_logits(lenses[V1_SHA], model))
    assert torch.equal(lens_logits(by_commit, model), lens_logits(lenses[V1_SHA], model))
    assert not torch.equal(lens_logits(by_id, model), lens_logits(by_branch, model))
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / MAIN_SHA
    assert (snapshot / "params.safetensors").is_symlink()  # read through the cache's links


def test_missing_repo_or_revision_offline_names_it(offline, hub_cache, model):
    cache, _ = hub_cache
    with pytest.raises(LensFileError, match=r"'someone/absent'.*revision 'main'.*cache"):
        TunedLens.from_pretrained("someone/absent", model=model, cache_dir=cache)
    with pytest.raises(LensFileError, match=r"revision 'v2'"):
        TunedLens.from_pretrained(REPO, model=model, revision="v2", cache_dir=cache)


def test_subfolder_and_a_model_with_other_layers(offline, tmp_path, model):
    lens = random_lens(model, 3)
    lens.save_pretrained(tmp_path / "lens")
    add_snapshot(tmp_path / "cache", REPO, MAIN_SHA, tmp_path / "lens", refs=["main"], prefix="l/")
    got = TunedLens.from_pretrained(REPO, model=model, subfolder="l", cache_dir=tmp_path / "cache")
    assert torch.equal(lens_logits(got, model), lens_logits(lens, model))
    deeper = tiny_model("gpt2", n_layer=3)
    with pytest.raises(LensFileError, match="2 translators but the model has 3 layers"):
        TunedLens.from_pretrained(REPO, model=deeper, subfolder="l", cache_dir=tmp_path / "cache")
    with pytest.raises(InvalidInputError, match="subfolder"):
        TunedLens.from_pretrained(tmp_path / "lens", model=model, subfolder="../x")


def test_without_a_model_the_base_model_is_loaded(offline, tmp_path, model):
    model.save_pretrained(tmp_path / "base")
    lens = TunedLens.from_model(tiny_model("gpt2"))
    lens.config.base_model_name_or_path = str(tmp_path / "base")
    with torch.no_grad():
        for p in lens.layer_translators.parameters():
            p.normal_(0, 0.05)
    lens.save_pretrained(tmp_path / "lens")
    got = TunedLens.from_pretrained(tmp_path / "lens")
    assert torch.allclose(lens_logits(got, model), lens_logits(lens, model), atol=1e-6)
    lens.config.base_model_name_or_path = str(tmp_path / "nothing-here")
    lens.save_pretrained(tmp_path / "orphan")
    with pytest.raises(InvalidInputError, match="cannot load the lens's base model"):
        TunedLens.from_pretrained(tmp_path / "orphan")


def test_the_original_space_layout_keeps_loading(offline, tmp_path, model):
    lens = random_lens(model, 5)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save(lens.layer_translators.state_dict(), pickled / "params.pt")
    (pickled / "config.json").write_text(json.dumps(lens.config.to_dict()))
    space = "AlignmentResearch/tuned-lens"
    add_snapshot(
        tmp_path / "c",
        space,
        MAIN_SHA,
        pickled,
        refs=["main"],
        prefix="lens/gpt2/",
        repo_type="space",
    )
    old = TunedLens.from_model_and_pretrained(model, "gpt2", cache_dir=str(tmp_path / "c"))
    new = TunedLens.from_pretrained(
        space, model=model, repo_type="space", subfolder="lens/gpt2", cache_dir=tmp_path / "c"
    )
    for got in (old, new):
        assert torch.equal(lens_logits(got, model), lens_logits(lens, model))


def online(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


class RecordingApi(HfApi):
    """A real ``HfApi`` whose three network calls are recorded instead of sent."""

    def __init__(self):
        super().__init__(endpoint="http://127.0.0.1:9", token="hf_not_a_token")
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", repo_id, {"operations": list(operations), **kwargs}))
        return "commit-info"


def _operation_bytes(op: CommitOperationAdd) -> bytes:
    with op.as_file() as handle:
        return handle.read()


def test_push_to_hub_sends_the_lens_folder_as_one_commit(monkeypatch, tmp_path, model):
    online(monkeypatch)
    lens = random_lens(model, 7, rank=4)
    api = RecordingApi()
    info = lens.push_to_hub(
        REPO, revision="v2", commit_message="lens v2", private=True, api=api, token="t"
    )
    assert info == "commit-info"
    assert [c[0] for c in api.calls] == ["create_repo", "create_branch", "create_commit"]
    assert api.calls[0][2] == {
        "repo_type": "model",
        "private": True,
        "token": "t",
        "exist_ok": True,
    }
    assert api.calls[1][2]["branch"] == "v2" and api.calls[1][2]["exist_ok"]
    commit = api.calls[2][2]
    assert commit["commit_message"] == "lens v2" and commit["revision"] == "v2"
    assert commit["create_pr"] is False and commit["repo_type"] == "model"
    files = {op.path_in_repo: _operation_bytes(op) for op in commit["operations"]}
    assert sorted(files) == ["README.md", "config.json", "lens_manifest.json", "params.safetensors"]
    state = load_safetensors(files["params.safetensors"])
    expected = lens.layer_translators.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert json.loads(files["config.json"])["rank"] == 4
    (tmp_path / "README.md").write_bytes(files["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.library_name == "tuned-lens" and "low-rank-tuned-lens" in card.data.tags
    assert f'TunedLens.from_pretrained("{REPO}", model=model)' in card.text
    manifest = json.loads(files["lens_manifest.json"])["files"]
    assert manifest["params.safetensors"] == hashlib.sha256(files["params.safetensors"]).hexdigest()


def test_push_to_hub_as_a_pull_request_and_offline(monkeypatch, model):
    online(monkeypatch)
    lens = random_lens(model, 8)
    lens.provenance = {"format": "tuned-lens-provenance", "version": 1, "training": None,
                       "evaluations": []}  # fmt: skip
    api = RecordingApi()
    lens.push_to_hub(REPO, create_pr=True, api=api, model_card=False)
    assert [c[0] for c in api.calls] == ["create_repo", "create_commit"]
    commit = api.calls[-1][2]
    assert commit["create_pr"] is True and commit["revision"] is None
    names = sorted(op.path_in_repo for op in commit["operations"])
    assert names == ["config.json", "lens_manifest.json", "params.safetensors", "provenance.json"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidInputError, match="offline"):
        lens.push_to_hub(REPO, api=RecordingApi())


def test_a_loaded_folder_pushes_with_its_provenance(monkeypatch, tmp_path, model):
    from tuned_lens.model_card import new_provenance

    record = new_provenance({"tokens_seen": 123, "command": ["tuned-lens", "train"]})
    random_lens(model, 9).save_pretrained(tmp_path / "lens", provenance=record)
    (tmp_path / "lens" / "training_summary.json").write_text("{}")
    loaded = TunedLens.from_pretrained(tmp_path / "lens", model=model)
    assert loaded.provenance == record
    online(monkeypatch)
    api = RecordingApi()
    loaded.push_to_hub(REPO, api=api)
    files = {op.path_in_repo: _operation_bytes(op) for op in api.calls[-1][2]["operations"]}
    assert json.loads(files["provenance.json"]) == record
    assert "training_summary.json" not in files
    assert "| tokens seen | 123 |" in files["README.md"].decode()
