#!/usr/bin/env python3
"""Make the explorer screenshots of README.md and docs/explorer.md with the code itself.

glassllm (offline) and the logit lens on one sentence, with a selected cell, two pinned
(tracked) tokens and a pinned position, drawn by
:meth:`tuned_lens.explorer.ExplorerPage.screenshot` in a headless Chromium: ``explorer.png``
(light, entropy) and ``explorer-dark.png`` (dark mode, forward KL).

Usage: ``python scripts/explorer_screenshot.py [folder]`` (default ``docs/images``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from tuned_lens.assets import load_glassllm
from tuned_lens.explorer import explore
from tuned_lens.explorer._codec import decode_array
from tuned_lens.nn.lenses import LogitLens
from tuned_lens.plotting import PredictionTrajectory, TokenFormatter

TEXT = "Alice was beginning to get very tired of sitting by her sister on the bank"


def main(folder: str = "docs/images") -> int:
    model, tokenizer = load_glassllm()
    ids = tokenizer(TEXT).input_ids
    traj = PredictionTrajectory.from_lens_and_model(
        LogitLens.from_model(model), model, ids, tokenizer=tokenizer, targets=ids[1:] + [0]
    )
    pinned = [tokenizer.convert_tokens_to_ids(t) for t in ("▁the", "▁a")]
    page = explore(
        {"logit lens": traj},
        track=pinned,
        title="tuned-lens explorer",
        model="glassllm",
        # SentencePiece: "▁" marks a space, and newlines are literal characters.
        formatter=TokenFormatter(whitespace_token="▁", newline_token="\n"),
    )
    table = decode_array(page.data["tokens"]["ids"])
    pins = ",".join(str(int(np.searchsorted(table, i))) for i in pinned)
    view = f"pins={pins}&ppos=10&cell=3.10&w=56"
    shots = {"explorer.png": "stat=entropy", "explorer-dark.png": "stat=forward_kl&dark=1"}
    for name, look in shots.items():
        path = page.screenshot(Path(folder) / name, state=f"{look}&{view}", width=1400, height=760)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
