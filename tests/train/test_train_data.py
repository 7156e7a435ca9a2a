"""Reading documents, GPT-style packing, the bits-per-byte ratio, and the chunk sampler."""

from __future__ import annotations

import json
import math

import pytest
import torch
from tuned_lens.data import (
    ChunkSampler,
    NotEnoughDataError,
    load_documents,
    pack_documents,
    shuffle_documents,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_jsonl_txt_and_folder_are_read(tmp_path, text_jsonl, text_txt):
    docs = load_documents(str(text_jsonl))
    assert len(docs) == 40 and all(len(d) == 1000 for d in docs)
    assert load_documents([str(text_txt)]) == [text_txt.read_text(encoding="utf-8")]
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second", encoding="utf-8")
    (folder / "a.txt").write_text("first", encoding="utf-8")
    (folder / "sub" / "c.jsonl").write_text(json.dumps({"body": "third"}) + "\n")
    assert load_documents(str(folder), text_column="body") == ["first", "second", "third"]


def test_bad_inputs_are_clear_errors(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(ValueError, match="text column 'text'"):
        load_documents(str(path))
    with pytest.raises(FileNotFoundError):
        load_documents(str(tmp_path / "missing.jsonl"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(NotEnoughDataError):
        load_documents(str(empty))


def test_packing_puts_eos_before_every_document(tokenizer):
    docs = ["to be or not to be", "that is the question", "whether tis nobler"]
    packed = pack_documents(docs, tokenizer, max_seq_len=4)
    eos = tokenizer.eos_token_id
    stream = [eos]
    for i, doc in enumerate(docs):
        stream += tokenizer(doc, add_special_tokens=False)["input_ids"]
        if i + 1 < len(docs):
            stream.append(eos)
    assert packed.chunk_len == 4
    assert packed.total_tokens == len(stream)
    assert packed.input_ids.dtype == torch.int64
    assert packed.input_ids.flatten().tolist() == stream[: len(packed) * 4]
    total_bytes = sum(len(d.encode()) for d in docs) + 3 * len(tokenizer.eos_token.encode())
    assert packed.total_bytes == total_bytes
    assert packed.nats_to_bpb == pytest.approx(len(stream) / total_bytes / math.log(2))


def test_chunk_length_is_capped_by_the_tokenizer(tokenizer, text_jsonl):
    packed = pack_documents(load_documents(str(text_jsonl)), tokenizer, max_seq_len=4096)
    assert packed.chunk_len == tokenizer.model_max_length == 128
    with pytest.raises(NotEnoughDataError, match="fewer than one chunk"):
        pack_documents(["tiny"], tokenizer, max_seq_len=64)


def test_document_shuffle_is_seeded():
    docs = [str(i) for i in range(50)]
    a = shuffle_documents(docs, seed=1)
    assert a == shuffle_documents(docs, seed=1) and a != docs and sorted(a) == sorted(docs)
    assert shuffle_documents(docs, seed=2) != a


@pytest.mark.parametrize("world_size,batch", [(2, 1), (4, 2), (3, 1)])
def test_sampler_global_batches_do_not_depend_on_world_size(world_size, batch):
    single = ChunkSampler(100, micro_batch_size=1, seed=3)
    ranks = [
        ChunkSampler(100, micro_batch_size=batch, world_size=world_size, rank=r, seed=3)
        for r in range(world_size)
    ]
    samples_per_step = 12
    for step in range(2):
        want = torch.cat(single.step_indices(step, samples_per_step)).sort().values
        got = (
            torch.cat([torch.cat(s.step_indices(step, samples_per_step)) for s in ranks])
            .sort()
            .values
        )
        if ranks[0].samples_consumed_per_step(samples_per_step) == samples_per_step:
            assert torch.equal(want, got)
    assert ranks[0].steps_available(samples_per_step) == 100 // ranks[0].samples_consumed_per_step(
        samples_per_step
    )
    with pytest.raises(NotEnoughDataError):
        single.step_indices(9, samples_per_step)
