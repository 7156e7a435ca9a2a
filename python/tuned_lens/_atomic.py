"""Atomic writes: a crash or a kill mid-write leaves the previous file or folder (or none),
never a torn one. Every writer of lens files, checkpoints, metrics, converted models and pages
goes through here.

* :func:`atomic_path` / :func:`write_text_atomically` / :func:`write_bytes_atomically` /
  :func:`write_json_atomically`: one file, written beside its final name and renamed onto it.
* :func:`atomic_folder`: a whole folder, built in a temporary sibling and swapped into place
  only when the block succeeds.
* :func:`remove_stale_temp_files`: the next start deletes what killed writers left behind.
* :func:`exclusive_lock`: writers of one folder that must not interleave take turns.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "atomic_folder",
    "atomic_path",
    "exclusive_lock",
    "shared_lock",
    "remove_stale_temp_files",
    "remove_stale_temp_folders",
    "temp_folder_prefix",
    "write_bytes_atomically",
    "write_json_atomically",
    "write_text_atomically",
]

# A temporary folder this old is abandoned even if its process id now belongs to some other
# live process (folder builds take seconds to a minute).
STALE_AFTER_S = 3600.0
# What atomic_path writes beside ``name``: ``.<name>.tmp-<pid>``.
_TEMP_FILE = re.compile(r"^\.(.+)\.tmp-(\d+)$")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` if the block succeeds.

    Args:
        path: The final file name.
        durable: Also fsync the file and its folder, so the new content survives a power cut
            (checkpoints); otherwise only atomicity is guaranteed.

    The file gets ordinary permissions (0666 minus the umask) even when the writer inside the
    block created it owner-only, as temporary-file helpers do.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes_atomically(path: str | Path, data: bytes, *, durable: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (and durably when asked)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def write_json_atomically(path: str | Path, data: object) -> None:
    """Write ``data`` as indented JSON with a final newline to ``path`` atomically."""
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


# -- folders -------------------------------------------------------------------------------------


def temp_folder_prefix(path: str | Path) -> str:
    """Name prefix of this process's temporary siblings of folder ``path``:
    ``.tmp-<name>-<pid>-`` (a random suffix follows)."""
    return f".tmp-{Path(path).name}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(candidate: Path, pid_text: str, *, ours_too: bool = False) -> bool:
    """Whether a temporary of process ``pid_text`` is abandoned: its process is dead, or it is
    older than :data:`STALE_AFTER_S`, or (with ``ours_too``) it is this process's."""
    try:
        age = time.time() - candidate.stat().st_mtime
    except OSError:
        return False  # removed by someone else meanwhile
    if not pid_text.isdigit():
        return ours_too or age >= STALE_AFTER_S
    pid = int(pid_text)
    if pid == os.getpid():
        return ours_too  # else perhaps another thread of ours is writing it right now
    return not _pid_alive(pid) or age >= STALE_AFTER_S


def remove_stale_temp_files(
    folder: str | Path, names: Callable[[str], bool] | None = None
) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` in ``folder`` (``.<name>.tmp-<pid>``)
    whose writer is dead (``os.kill(pid, 0)`` fails) or that are older than an hour.

    Args:
        folder: The folder to clean (not its subfolders).
        names: Only temporaries of final names it accepts are considered (default: all).

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for candidate in entries:
        match = _TEMP_FILE.match(candidate.name)
        if not match or (names is not None and not names(match.group(1))):
            continue
        if candidate.is_file() and _is_stale(candidate, match.group(2)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


@contextlib.contextmanager
def exclusive_lock(lock_file: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_file`` (created if missing) during the block.

    The lock dies with its process, so a killed writer never leaves it held. Where ``fcntl``
    does not exist (Windows), writers are not serialised.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def shared_lock(lock_file: str | Path, timeout_s: float = 2.0) -> Iterator[bool]:
    """Hold a shared ``flock`` on an existing ``lock_file`` during the block, so that no
    :func:`exclusive_lock` holder changes the folder meanwhile.

    Never creates the file (readers may not write), and waits at most ``timeout_s`` for a
    writer (one stopped while holding the lock must not block readers forever).

    Yields:
        Whether the lock is held (``False``: no lock file, no ``fcntl``, or the wait timed out).
    """
    try:
        import fcntl

        fd = os.open(lock_file, os.O_RDONLY)
    except (ImportError, OSError):
        yield False
        return
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held = False
                    break
                time.sleep(0.005)
        yield held
    finally:
        os.close(fd)


def remove_stale_temp_folders(path: str | Path) -> None:
    """Delete temporary siblings of ``path`` left by builds whose process is gone, or that
    are older than an hour. Those of live processes (other than this one) are kept."""
    path = Path(path)
    for candidate in path.parent.glob(f".tmp-{path.name}-*"):
        pid_text = candidate.name.rsplit("-", 2)[-2] if candidate.name.count("-") >= 2 else ""
        if _is_stale(candidate, pid_text, ours_too=True):
            shutil.rmtree(candidate, ignore_errors=True)


def _swap_in(tmp: Path, final: Path, keep: Callable[[Path], bool] | None) -> None:
    """Move folder ``tmp`` to ``final``, replacing what is there unless ``keep`` accepts it."""
    if keep is not None and keep(final):
        return  # another process finished first; its copy stays
    old: Path | None = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=temp_folder_prefix(final), dir=final.parent))
        os.replace(final, old)  # an empty directory is replaced by the rename
    try:
        os.replace(tmp, final)
    except OSError:
        # Another process renamed its finished copy into place meanwhile: use that one.
        if keep is None or not keep(final):
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(
    path: str | Path, *, keep_existing: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a fresh empty folder beside ``path``; when the block succeeds it becomes ``path``.

    If the block raises, the temporary folder is deleted and ``path`` is untouched. Otherwise
    the previous ``path`` (if any) is replaced; readers see the old folder or the new one,
    never a mixture. Temporary folders left by killed processes are cleaned up on the way in.

    Args:
        path: The final folder.
        keep_existing: Called with ``path`` just before the swap; when it returns True (another
            process already built a good copy), that copy is kept and the new one discarded.

    The folder gets ordinary permissions (0777 minus the umask), not the owner-only mode of
    temporary folders.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_folders(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_folder_prefix(path), dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_current_umask())
        _swap_in(tmp, path, keep_existing)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
