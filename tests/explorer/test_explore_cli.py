"""``tuned-lens explore`` as a real process (glassllm, offline): pages, documents, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tuned_lens.explorer import decode_view, load_data, validate
from tuned_lens.explorer._codec import decode_array

pytest.importorskip("glassllm")


def explore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuned_lens", "explore", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def embedded(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    return json.loads(text.split('id="tl-data">', 1)[1].split("</script>", 1)[0])


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("The One Ring\n\nThe One Model to rule them all\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_two_lenses_and_a_file_of_prompts_make_one_page(prompts_file, tmp_path):
    from tuned_lens.assets import load_glassllm
    from tuned_lens.nn.lenses import LogitLens
    from tuned_lens.plotting import CompactTrajectory

    out = tmp_path / "page.html"
    run = explore(
        "--model", "glassllm", "--lens", "logit", "--lens", "again=logit",
        "--file", str(prompts_file), "--title", "One Ring", "-o", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"tuned-lens explore: wrote {out}")
    data = validate(embedded(out))
    assert data["meta"]["title"] == "One Ring" and data["meta"]["model"] == "glassllm"
    assert [lens["name"] for lens in data["lenses"]] == ["logit", "again"]
    assert len(data["prompts"]) == 2 and len(data["views"]) == 4  # blank line skipped
    # The numbers are the library's, for the same prompts.
    model, tokenizer = load_glassllm()
    ids = [tokenizer(t).input_ids for t in ("The One Ring", "The One Model to rule them all")]
    expected = CompactTrajectory.from_lens_and_model(
        LogitLens.from_model(model), model, ids, tokenizer=tokenizer, targets="next", progress=False
    )
    view = decode_view(data, 1)  # logit lens, second prompt
    assert view["topk_probs"].shape == (5, len(ids[1]), 10)
    top_ids, top_probs = expected._cell_top_k(10)
    np.testing.assert_allclose(view["topk_probs"], top_probs[1], atol=1e-3)
    table = decode_array(data["tokens"]["ids"])
    np.testing.assert_array_equal(table[view["topk_tokens"]], top_ids[1])


@pytest.mark.slow
def test_a_saved_document_round_trips_through_json(tmp_path):
    doc = tmp_path / "doc.json"
    run = explore("--model", "glassllm", "--text", "Alice was here", "-o", str(doc))
    assert run.returncode == 0, run.stderr
    saved = load_data(doc)
    page = tmp_path / "page.html"
    run = explore(str(doc), "-o", str(page), "--title", "again")
    assert run.returncode == 0, run.stderr
    shown = embedded(page)
    assert shown["meta"]["title"] == "again"
    assert shown["views"] == saved["views"] and shown["tokens"] == saved["tokens"]


def test_a_logitlenskit_v2_document_becomes_a_page(tmp_path):
    from _explorer_helpers import V2

    source = tmp_path / "v2.json"
    source.write_text(json.dumps(V2), encoding="utf-8")
    page = tmp_path / "v2.html"
    run = explore(str(source), "-o", str(page))
    assert run.returncode == 0, run.stderr
    assert embedded(page)["views"][0]["positions"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.html"], "give a saved document, or --model with --text or --file"),
        (["--model", "glassllm", "-o", "x.html"], "give the prompts with either --text or --file"),
        (
            ["--model", "glassllm", "--text", "a", "--file", "p.txt", "-o", "x.html"],
            "give the prompts with either --text or --file",
        ),
        (["--model", "glassllm", "--text", " ", "-o", "x.html"], "a --text prompt is empty"),
        (
            ["--model", "glassllm", "--text", "a", "--topk", "0", "-o", "x.html"],
            "--topk must be >= 1, got 0",
        ),
        (
            ["doc.json", "--model", "glassllm", "-o", "x.html"],
            "give either a saved document or --model with --text/--file, not both",
        ),
        (["missing.json", "-o", "x.html"], "No such file or directory"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path, args, message):
    run = subprocess.run(
        [sys.executable, "-m", "tuned_lens", "explore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert run.returncode == 2, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("tuned-lens explore: error: ") and message in line, run.stderr
    assert not (tmp_path / "x.html").exists()


@pytest.mark.slow
def test_an_over_long_prompt_is_refused_before_anything_is_written(tmp_path):
    run = explore(
        "--model", "glassllm", "--text", "one two three four five six", "--max_tokens", "3",
        "-o", str(tmp_path / "x.html"),
    )  # fmt: skip
    assert run.returncode == 2
    assert "at most --max_tokens=3" in run.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "x.html").exists()
