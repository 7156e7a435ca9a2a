"""``tuned-lens demo``: the whole workflow on a model and text that ship inside PyPI wheels.

With no arguments and no network it

1. loads the glassllm English model (a tiny real Llama, converted and cached on first use) and
   the tinyshakespeare text, and splits the text into training and held-out parts
   (:func:`tuned_lens.data.split_documents`);
2. trains a tuned lens for about two minutes on two CPU cores, with a progress bar;
3. evaluates the tuned lens and the logit lens, layer by layer, on the held-out text and prints
   a table;
4. writes into ``./tuned-lens-demo``: the lens, the metrics (JSON), a per-layer KL plot and
   prediction-trajectory heat maps for a few sentences (standalone HTML; PNG too when a Chromium
   is installed);
5. prints where everything is and what to try next.

Run again after an interruption, it picks up where it stopped: the trainer resumes from its
last checkpoint and finished stages (a trained lens, its metrics) are reused unless ``--force``.

One job per module:

* :mod:`~tuned_lens.demo.cli` — flags and :func:`main`;
* :mod:`~tuned_lens.demo.budget` — the default, ``--quick`` and large-model budgets;
* :mod:`~tuned_lens.demo.settings` — :class:`DemoSettings`, :class:`DemoOutputs`;
* :mod:`~tuned_lens.demo.threads` — the thread policy;
* :mod:`~tuned_lens.demo.resume` — the output layout, the state file, stale results;
* :mod:`~tuned_lens.demo.stages` — loading, training, evaluating;
* :mod:`~tuned_lens.demo.figures` — the pictures (returning what they wrote);
* :mod:`~tuned_lens.demo.report` — the table, ``index.html`` and the closing message;
* :mod:`~tuned_lens.demo.pipeline` — :func:`run_demo`, the order of the steps.
"""

from __future__ import annotations

from tuned_lens.demo.budget import (
    FULL_BUDGET,
    LARGE_MODEL_CPU_BUDGET,
    QUICK_BUDGET,
    Budget,
    default_budget,
)
from tuned_lens.demo.cli import FLAGS, build_parser, main, settings_from_args
from tuned_lens.demo.pipeline import run_demo
from tuned_lens.demo.report import format_table, index_page
from tuned_lens.demo.resume import (
    STATE_FILE,
    STATE_VERSION,
    layout,
    lens_is_complete,
    reset_if_settings_changed,
    write_state,
)
from tuned_lens.demo.settings import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    DEFAULT_OUTPUT,
    DEFAULT_SENTENCES,
    DemoOutputs,
    DemoSettings,
    Log,
)
from tuned_lens.demo.stages import CHARS_PER_TOKEN_BOUND, cap_characters
from tuned_lens.demo.threads import SINGLE_THREAD_BELOW_PARAMS, on_cpu_and_large

__all__ = ["DemoSettings", "DemoOutputs", "build_parser", "run_demo", "main"]

# Names of the single-module demo of earlier versions, kept for code and tests that use them.
_layout = layout
_write_state = write_state
_reset_if_settings_changed = reset_if_settings_changed
_lens_is_complete = lens_is_complete
_cap_characters = cap_characters


def __getattr__(name: str) -> object:
    # The data split lives in tuned_lens.data, which imports torch: loaded on first use so that
    # `tuned-lens demo --help` stays instant.
    if name in ("split_documents", "HELD_OUT_FRACTION"):
        from tuned_lens import data

        return getattr(data, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ += [
    "Budget",
    "CHARS_PER_TOKEN_BOUND",
    "DEFAULT_DATA",
    "DEFAULT_MODEL",
    "DEFAULT_OUTPUT",
    "DEFAULT_SENTENCES",
    "FLAGS",
    "FULL_BUDGET",
    "HELD_OUT_FRACTION",
    "LARGE_MODEL_CPU_BUDGET",
    "Log",
    "QUICK_BUDGET",
    "SINGLE_THREAD_BELOW_PARAMS",
    "STATE_FILE",
    "STATE_VERSION",
    "default_budget",
    "format_table",
    "index_page",
    "on_cpu_and_large",
    "settings_from_args",
    "split_documents",
]
