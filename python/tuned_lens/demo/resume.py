"""Resume bookkeeping: where each result lives, which settings it belongs to, what is stale.

``<output>/demo_state.json`` records the settings a lens was trained with (written before
training starts, so an interrupted run is recognised too). A later run with the same settings
reuses the lens; with other settings, or with ``--force``, the demo's own results are removed
and it starts over. Files the demo did not write are never touched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tuned_lens._atomic import write_text_atomically
from tuned_lens.demo.settings import DemoSettings, Log

__all__ = [
    "STATE_FILE",
    "STATE_VERSION",
    "JsonObject",
    "layout",
    "lens_is_complete",
    "read_json",
    "reset_if_settings_changed",
    "write_json",
    "write_state",
]

STATE_FILE = "demo_state.json"
STATE_VERSION = 1

#: A JSON object as read from or written to the demo's files.
JsonObject = dict[str, Any]

# The demo's own results, by kind: removed together when they are stale.
_FOLDERS = ("lens", "checkpoints", "eval", "trajectories")
_FILES = ("metrics", "kl_html", "kl_png", "state", "index")


def layout(out: Path) -> dict[str, Path]:
    """Where each result of a run in ``out`` lives, by name."""
    return {
        "lens": out / "lens",
        "checkpoints": out / "checkpoints",
        "eval": out / "eval",
        "metrics": out / "metrics.json",
        "kl_html": out / "kl_per_layer.html",
        "kl_png": out / "kl_per_layer.png",
        "trajectories": out / "trajectories",
        "state": out / STATE_FILE,
        "index": out / "index.html",
    }


def read_json(path: Path) -> JsonObject:
    """The JSON object in ``path``, or ``{}`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def write_json(path: Path, data: JsonObject) -> None:
    """Write JSON atomically so that an interrupted run never leaves a torn file."""
    write_text_atomically(
        path, json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    )


def write_state(
    path: Path, settings: DemoSettings, model_path: str, *, training: JsonObject
) -> None:
    """Record the settings (and, once trained, the training summary) of the lens in ``path``."""
    write_json(
        path,
        {
            "version": STATE_VERSION,
            "settings": settings.fingerprint(),
            "model_path": model_path,
            "training": training,
        },
    )


def lens_is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a saved lens (config and parameters)."""
    return (folder / "config.json").is_file() and (folder / "params.safetensors").is_file()


def reset_if_settings_changed(out: Path, settings: DemoSettings, log: Log) -> bool:
    """Remove results of an earlier run with other settings (or all of them with --force).

    A lens without a state file (left by an older version) counts as stale too. Only the
    demo's own sub-folders and files are removed.

    Args:
        out: The output folder.
        settings: The settings of this run.
        log: Where to say that the settings changed.

    Returns:
        Whether anything was removed.
    """
    paths = layout(out)
    state = read_json(paths["state"])
    changed = bool(state) and state.get("settings") != settings.fingerprint()
    leftovers = paths["lens"].exists() or paths["checkpoints"].exists()
    orphan_lens = leftovers and not state and lens_is_complete(paths["lens"])
    if not (settings.force or changed or orphan_lens):
        return False
    if changed and not settings.force:
        log(f"      settings differ from the earlier run in {out}; starting over")
    for key in _FOLDERS:
        shutil.rmtree(paths[key], ignore_errors=True)
    for key in _FILES:
        paths[key].unlink(missing_ok=True)
    return True
