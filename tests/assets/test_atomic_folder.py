"""tuned_lens._atomic.atomic_folder: the one way folders are written into place."""

from __future__ import annotations

import os
import stat

import pytest
from tuned_lens._atomic import atomic_folder, write_json_atomically


def test_a_finished_block_replaces_the_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old", encoding="utf-8")
    with atomic_folder(final) as tmp:
        assert tmp.parent == tmp_path and tmp != final and not any(tmp.iterdir())
        (tmp / "new.txt").write_text("new", encoding="utf-8")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left
    mode = stat.S_IMODE(final.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o777 & ~mask


def test_a_failed_block_leaves_the_old_folder(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(RuntimeError), atomic_folder(final) as tmp:
        (tmp / "half.txt").write_text("half", encoding="utf-8")
        raise RuntimeError("killed half-way")
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_keep_existing_keeps_a_good_copy(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "done").touch()
    with atomic_folder(final, keep_existing=lambda p: (p / "done").exists()) as tmp:
        (tmp / "other").touch()
    assert sorted(p.name for p in final.iterdir()) == ["done"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_missing_parent_is_created(tmp_path):
    final = tmp_path / "a" / "b"
    with atomic_folder(final) as tmp:
        write_json_atomically(tmp / "x.json", {"k": 1})
    assert (final / "x.json").read_text(encoding="utf-8") == '{\n  "k": 1\n}\n'
