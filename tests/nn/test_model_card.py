"""The model card and provenance of a lens folder: metadata that round-trips through
``huggingface_hub.ModelCard.load``, folders that the existing loaders read, foreign READMEs kept,
and hostile or corrupt provenance refused before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard
from tuned_lens.errors import LensFileError
from tuned_lens.load_artifacts import load_lens_artifacts
from tuned_lens.model_card import (
    CARD_NAME,
    PROVENANCE_NAME,
    add_evaluation,
    build_model_card,
    new_provenance,
    read_provenance,
    record_evaluation,
)
from tuned_lens.nn import TunedLens
from tuned_lens.testing import tiny_input_ids, tiny_model

KL = [0.75, 0.125, 0.0625]


@pytest.fixture(scope="module")
def model():
    return tiny_model("gpt2")


def provenance(**training):
    record = new_provenance(
        {"base_model": {"name": "openai-community/gpt2", "revision": "main"}, **training}
    )
    evaluation = {
        "corpus": {"name": ["wikitext", "wikitext-2-raw-v1"], "split": "validation"},
        "tokens": 4096,
        "kl_per_layer": KL,
        "ce_per_layer": [3.0, 2.5, 2.0],
        "logit_lens_kl_per_layer": [5.0, 4.0, 1.0],
    }
    return add_evaluation(record, evaluation)


def lens_for(model, *, name="openai-community/gpt2", rank=None):
    lens = TunedLens.from_model(model, rank=rank)
    lens.config.base_model_name_or_path = name
    return lens


def test_card_metadata_round_trips_through_model_card_load(tmp_path, model):
    lens = lens_for(model)
    record = provenance(corpus={"name": ["EleutherAI/pile"], "split": "train"}, tokens_seen=1024)
    lens.save_pretrained(tmp_path, provenance=record, repo_id="me/gpt2-lens")
    card = ModelCard.load(tmp_path / CARD_NAME)
    data = card.data
    assert data.library_name == "tuned-lens" and data.base_model == "openai-community/gpt2"
    assert data.tags == ["tuned-lens", "interpretability", "linear-tuned-lens"]
    assert data.datasets == ["EleutherAI/pile", "wikitext"]
    assert data.model_name == "me/gpt2-lens"
    kl = {r.metric_name: r.metric_value for r in data.eval_results}
    assert kl == {f"KL layer {i} (nats/token)": v for i, v in enumerate(KL)}
    assert {r.dataset_split for r in data.eval_results} == {"validation"}
    assert data.tuned_lens["held_out_kl_per_layer"] == KL
    assert data.tuned_lens["num_layers"] == 2 and data.tuned_lens["d_model"] == 32
    assert "| 1 | 0.1250 | 4.0000 | 2.5000 |" in card.text  # the per-layer table
    assert "| tokens seen | 1024 |" in card.text
    assert read_provenance(tmp_path) == record


def test_save_pretrained_keeps_the_folder_format_the_loaders_read(tmp_path, model):
    lens = lens_for(model, name="tiny-random-gpt2", rank=3)
    with torch.no_grad():
        for p in lens.layer_translators.parameters():
            p.normal_(0, 0.05)
    lens.save_pretrained(tmp_path / "lens")
    names = sorted(p.name for p in (tmp_path / "lens").iterdir() if not p.name.startswith("."))
    assert names == ["README.md", "config.json", "lens_manifest.json", "params.safetensors"]
    assert load_lens_artifacts(tmp_path / "lens")[1].name == "params.safetensors"
    old = TunedLens.from_model_and_pretrained(model, str(tmp_path / "lens"))
    new = TunedLens.from_pretrained(tmp_path / "lens", model=model)
    hidden = model(tiny_input_ids(), output_hidden_states=True).hidden_states
    for got in (old, new):
        for i in range(2):
            assert torch.equal(got(hidden[i], i), lens(hidden[i], i))
    assert new.provenance is None and new.config.rank == 3


def test_a_readme_not_written_by_tuned_lens_is_kept(tmp_path, model):
    (tmp_path / CARD_NAME).write_text("# my own notes\n")
    lens_for(model).save_pretrained(tmp_path)
    assert (tmp_path / CARD_NAME).read_text() == "# my own notes\n"
    assert (tmp_path / "params.safetensors").is_file()


def test_a_broken_card_of_ours_is_regenerated_from_the_provenance(tmp_path, model):
    from tuned_lens.model_card import CARD_MARKER

    record = provenance()
    lens_for(model).save_pretrained(tmp_path, provenance=record)
    (tmp_path / CARD_NAME).write_text(f"---\nlibrary_name: [unclosed\n---\n{CARD_MARKER}\n")
    record_evaluation(tmp_path, {"kl_per_layer": [0.5, 0.25]})
    card = ModelCard.load(tmp_path / CARD_NAME)
    assert card.data.library_name == "tuned-lens"
    assert len(read_provenance(tmp_path)["evaluations"]) == 2


def test_hostile_strings_stay_inside_their_cells(model):
    hostile = "x | y\n---\nlibrary_name: evil\n<script>alert(1)</script>"
    record = provenance(command=[hostile], corpus={"name": [hostile]})
    card = build_model_card(lens_for(model, name=hostile).config, record)
    again = ModelCard(str(card))
    assert again.data.library_name == "tuned-lens" and again.data.base_model is None
    assert again.data.tuned_lens["base_model_name_or_path"] == hostile
    assert "<script>" not in again.text
    assert all(line.count("|") - line.count("\\|") == 3 for line in again.text.splitlines()
               if line.startswith("| command"))  # fmt: skip


CORRUPT = {
    "not JSON": b"{not json",
    "not UTF-8": b"\xff\xfe{}",
    "a list": b"[]",
    "wrong format": json.dumps({"format": "other", "version": 1}).encode(),
    "future version": json.dumps(
        {"format": "tuned-lens-provenance", "version": 99, "evaluations": []}
    ).encode(),
    "bad evaluations": json.dumps(
        {"format": "tuned-lens-provenance", "version": 1, "evaluations": {"a": 1}}
    ).encode(),
    "bad metric": json.dumps(
        {
            "format": "tuned-lens-provenance",
            "version": 1,
            "training": None,
            "evaluations": [{"kl_per_layer": ["0.1", True]}],
        }  # fmt: skip
    ).encode(),
    "deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_corrupt_provenance_is_refused_and_nothing_is_lost(tmp_path, model, kind):
    lens = lens_for(model)
    lens.save_pretrained(tmp_path)
    (tmp_path / PROVENANCE_NAME).write_bytes(CORRUPT[kind])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(LensFileError, match=r"provenance .*provenance\.json"):
        read_provenance(tmp_path)
    with pytest.raises(LensFileError, match="provenance"):
        record_evaluation(tmp_path, {"kl_per_layer": [0.1, 0.2]})
    with pytest.raises(LensFileError, match="provenance"):
        lens_for(model).save_pretrained(tmp_path)
    with pytest.raises(LensFileError, match="provenance"):
        TunedLens.from_pretrained(tmp_path, model=model)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_an_oversized_provenance_is_not_read(tmp_path):
    (tmp_path / PROVENANCE_NAME).write_bytes(b" " * ((8 << 20) + 1))
    with pytest.raises(LensFileError, match="more than"):
        read_provenance(tmp_path)


def test_record_evaluation_keeps_the_training_record(tmp_path, model):
    record = provenance(tokens_seen=77)
    lens_for(model).save_pretrained(tmp_path, provenance=record)
    updated = record_evaluation(tmp_path, {"kl_per_layer": [0.5, 0.25], "tokens": 9})
    assert updated["training"] == record["training"]
    assert updated["evaluations"][:1] == record["evaluations"]
    assert read_provenance(tmp_path) == updated
    card = ModelCard.load(tmp_path / CARD_NAME)
    assert card.data.tuned_lens["held_out_kl_per_layer"] == [0.5, 0.25]  # the latest one
