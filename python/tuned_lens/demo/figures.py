"""The demo's pictures: the per-layer KL curve and one trajectory explorer page per sentence.

:func:`draw` writes them and returns a :class:`DrawnFigures` record of exactly what it wrote;
it changes nothing it was given. Each sentence's page is the interactive explorer
(:func:`tuned_lens.explorer.explore`) holding the tuned and the logit lens, so that one can
switch between them and show their difference; the KL curve is a plotly page. Every page is
standalone (nothing fetched). PNG previews (the KL curve, each sentence's tuned-lens entropy
heat map from :meth:`~tuned_lens.plotting.TrajectoryStatistic.figure`) go through
:func:`tuned_lens.plotting.export.write_png`, the library's one figure → PNG.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens._atomic import write_text_atomically
from tuned_lens.demo.resume import JsonObject
from tuned_lens.demo.settings import DemoSettings, Log
from tuned_lens.errors import BrowserError, TooShortSentenceError
from tuned_lens.plotting.per_layer import per_layer_figure

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import plotly.graph_objects as go
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tuned_lens.nn import TunedLens
    from tuned_lens.plotting import PredictionTrajectory, TokenFormatter

__all__ = [
    "DrawnFigures",
    "TooShortSentenceError",
    "TrajectoryPage",
    "draw",
    "kl_figure",
    "sentence_trajectories",
    "trajectory_figures",
]

# Tokens of a sentence drawn at most (the model's context permitting).
_MAX_SENTENCE_TOKENS = 48
# The lenses of a sentence's explorer page, in the order of its lens menu.
LENS_NAMES = ("tuned lens", "logit lens")


@dataclass(frozen=True)
class TrajectoryPage:
    """The files of one sentence's explorer page.

    Attributes:
        sentence: the sentence.
        html: the page (the interactive explorer).
        statistics: the per-cell statistics it stores (its "statistic" menu also offers
            derived ones: max probability, pinned tokens, the difference between the lenses).
        png: a PNG of the tuned lens's entropy heat map, when one was written.
        lenses: the lenses stored in the page, in its lens menu's order.
    """

    sentence: str
    html: Path
    statistics: tuple[str, ...]
    png: Path | None = None
    lenses: tuple[str, ...] = ()


@dataclass(frozen=True)
class DrawnFigures:
    """What :func:`draw` wrote.

    Attributes:
        root: the output folder, which the relative names of :meth:`to_json` start from.
        kl_html: the per-layer KL page.
        kl_png: its PNG, when one was written.
        trajectories: one page per sentence that could be drawn, in order.
    """

    root: Path
    kl_html: Path
    kl_png: Path | None = None
    trajectories: tuple[TrajectoryPage, ...] = field(default=())

    def to_json(self) -> JsonObject:
        """The ``figures`` entry of ``metrics.json``: file names relative to :attr:`root`."""

        def rel(path: Path) -> str:
            return path.relative_to(self.root).as_posix()

        record: JsonObject = {"trajectories": [], "kl_per_layer_html": rel(self.kl_html)}
        if self.kl_png is not None:
            record["kl_per_layer_png"] = rel(self.kl_png)
        for page in self.trajectories:
            entry: JsonObject = {
                "sentence": page.sentence,
                "html": rel(page.html),
                "statistics": list(page.statistics),
            }
            if page.png is not None:
                entry["png"] = rel(page.png)
            if page.lenses:
                entry["lenses"] = list(page.lenses)
            record["trajectories"].append(entry)
        return record


def kl_figure(metrics: JsonObject, *, model_name: str) -> go.Figure:
    """Per-layer KL(model ‖ lens) of the logit lens and the tuned lens.

    Args:
        metrics: the demo's metrics, with ``layers`` rows holding ``kl_logit`` and ``kl_tuned``.
        model_name: for the title.
    """
    values = {
        name: {"kl": {row["layer"]: row[f"kl_{name}"] for row in metrics["layers"]}}
        for name in ("logit", "tuned")
    }
    return per_layer_figure(
        values,
        metrics=("kl",),
        title=f"KL(model ‖ lens) per layer on held-out text — {model_name}",
        width=900,
        height=500,
    )


def _finite_max(*arrays: np.ndarray) -> float | None:
    import numpy as np

    values = [float(np.max(a[np.isfinite(a)])) for a in arrays if np.isfinite(a).any()]
    return max(values) if values else None


def sentence_trajectories(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lens: TunedLens, sentence: str
) -> tuple[PredictionTrajectory, PredictionTrajectory]:
    """The tuned and the logit lens's trajectories of one sentence (at most 48 tokens), each
    position's target being the next token.

    Raises:
        TooShortSentenceError: the sentence has fewer than two tokens.
    """
    from tuned_lens.nn import LogitLens
    from tuned_lens.plotting import PredictionTrajectory

    limit = int(getattr(model.config, "max_position_embeddings", 128) or 128)
    ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
    ids = list(ids[: min(limit, _MAX_SENTENCE_TOKENS) + 1])
    if len(ids) < 2:
        raise TooShortSentenceError(
            f"sentence {sentence!r} has fewer than two tokens: nothing to predict"
        )
    inputs, targets = ids[:-1], ids[1:]
    tuned = PredictionTrajectory.from_lens_and_model(
        lens, model, inputs, tokenizer=tokenizer, targets=targets
    )
    logit = PredictionTrajectory.from_lens_and_model(
        LogitLens.from_model(model), model, inputs, tokenizer=tokenizer, targets=targets
    )
    return tuned, logit


def trajectory_figures(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, lens: TunedLens, sentence: str
) -> list[tuple[str, go.Figure]]:
    """Plotly heat maps for one sentence: tuned-lens entropy, forward KL, cross-entropy, and the
    logit lens's forward KL for contrast (on one colour scale). Hovering a cell shows the
    top-10 predictions. The demo's pages are explorer pages; these are the static figures.

    Raises:
        TooShortSentenceError: the sentence has fewer than two tokens.
    """
    tuned, logit = sentence_trajectories(model, tokenizer, lens, sentence)
    tuned_kl, logit_kl = tuned.forward_kl(), logit.forward_kl()
    # One colour scale for both KL maps, so that the contrast between the lenses shows.
    shared_max = _finite_max(tuned_kl.stats, logit_kl.stats)
    if shared_max is not None and shared_max > 0:
        tuned_kl, logit_kl = tuned_kl.clip(0.0, shared_max), logit_kl.clip(0.0, shared_max)
    figures = [
        ("entropy", tuned.entropy().figure(title="Tuned lens: entropy of the prediction")),
        ("forward_kl", tuned_kl.figure(title="Tuned lens: KL(model ‖ lens)")),
        (
            "cross_entropy",
            tuned.cross_entropy().figure(title="Tuned lens: cross-entropy of the next token"),
        ),
        (
            "logit_forward_kl",
            logit_kl.figure(title="Logit lens, for contrast: KL(model ‖ lens), same colour scale"),
        ),
    ]
    height = max(420, 150 + 26 * (tuned.num_layers + 1))
    for _, fig in figures:
        fig.update_layout(height=height)
    return figures


class _Pngs:
    """PNG writing for one :func:`draw`: on while it works, off after the first failure."""

    def __init__(self, wanted: bool, log: Log) -> None:
        from tuned_lens.headless_chromium import find_browser

        self.on = wanted and find_browser() is not None
        self.log = log
        if wanted and not self.on:
            log("      no Chromium found: writing HTML only (install `chromium` for PNG files)")

    def write(self, fig: go.Figure, path: Path) -> Path | None:
        from tuned_lens.plotting.export import write_png

        if not self.on:
            return None
        try:
            return write_png(fig, path)
        except BrowserError as err:
            self.log(f"      PNG export failed ({err}); the HTML files are complete")
            self.on = False
            return None


def _formatter(traj: PredictionTrajectory) -> TokenFormatter:
    """Byte-level BPE markers (``Ġ``, ``Ċ``) by default; SentencePiece's ``▁`` when its
    tokens carry it (glassllm), newlines then being literal characters."""
    from tuned_lens.plotting import TokenFormatter

    convert = getattr(traj.tokenizer, "convert_ids_to_tokens", None)
    tokens = convert([int(i) for i in traj.input_ids]) if convert else []
    if any(isinstance(t, str) and "▁" in t for t in tokens):
        return TokenFormatter(whitespace_token="▁", newline_token="\n")
    return TokenFormatter()


def _draw_sentence(
    number: int,
    sentence: str,
    trajectories: tuple[PredictionTrajectory, PredictionTrajectory],
    settings: DemoSettings,
    folder: Path,
    pngs: _Pngs,
) -> TrajectoryPage:
    """One sentence's explorer page (tuned and logit lens in one file) and its PNG preview."""
    from tuned_lens.explorer import build_data, render_html

    tuned = trajectories[0]
    data = build_data(
        dict(zip(LENS_NAMES, trajectories)),
        title=f"Prediction trajectory {number}: “{sentence}”",
        model=settings.model,
        prompt_names=[sentence],
        formatter=_formatter(tuned),
    )
    # Open on the forward KL, where the lenses differ most, the logit lens (view 1) compared.
    data["state"] = "stat=forward_kl&cmp=1"
    path = folder / f"sentence_{number}.html"
    write_text_atomically(path, render_html(data))
    png = None
    if pngs.on:
        figure = tuned.entropy().figure(title="Tuned lens: entropy of the prediction")
        figure.update_layout(height=max(420, 150 + 26 * (tuned.num_layers + 1)))
        png = pngs.write(figure, folder / f"sentence_{number}_entropy.png")
    statistics = tuple(data["views"][0]["stats"])
    return TrajectoryPage(sentence, path, statistics, png, LENS_NAMES)


def draw(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    lens: TunedLens,
    metrics: JsonObject,
    settings: DemoSettings,
    paths: dict[str, Path],
    log: Log,
) -> DrawnFigures:
    """Write the per-layer KL page and the sentences' explorer pages (PNGs too, if asked).

    Args:
        model: the model.
        tokenizer: its tokenizer.
        lens: the trained tuned lens.
        metrics: the evaluation's metrics (see :func:`tuned_lens.demo.stages.evaluate`).
        settings: the run's settings (sentences, ``png``, model name).
        paths: the run's layout (:func:`tuned_lens.demo.resume.layout`).
        log: where progress lines go.

    Returns:
        What was written. A sentence too short to draw is skipped (and logged); a PNG that
        fails is logged and no further PNGs are attempted, the HTML pages being complete.
    """
    pngs = _Pngs(settings.png, log)
    fig = kl_figure(metrics, model_name=settings.model)
    write_text_atomically(paths["kl_html"], fig.to_html(include_plotlyjs=True, full_html=True))
    kl_png = pngs.write(fig, paths["kl_png"])
    folder = paths["trajectories"]
    folder.mkdir(parents=True, exist_ok=True)
    pages: list[TrajectoryPage] = []
    for number, sentence in enumerate(settings.sentences, start=1):
        try:
            trajectories = sentence_trajectories(model, tokenizer, lens, sentence)
        except TooShortSentenceError as err:
            log(f"      skipped: {err}")
            continue
        pages.append(_draw_sentence(number, sentence, trajectories, settings, folder, pngs))
        log(f"      {pages[-1].html}")
    return DrawnFigures(paths["kl_html"].parent, paths["kl_html"], kl_png, tuple(pages))
