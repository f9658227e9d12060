"""Readers (every format, every error names file/line/field), pair tokenization and the schedule sampler."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest

from midalign.data import read_multiway, read_parallel, read_task_examples
from midalign.data.batching import AlignmentCollator, ScheduleBatchSampler, tokenize_pairs
from midalign.data.readers import Pair
from midalign.errors import DataError


def write(path, text, mode="w"):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ---------------------------------------------------------------- task data
def test_task_formats(tmp_path):
    pc = write(tmp_path / "pc.jsonl", jsonl([{"prompt": "p", "completion": " c"}]))
    assert read_task_examples(pc) == [{"prompt": "p", "completion": " c"}]
    authors = write(tmp_path / "a.jsonl", jsonl([{"prefix": "p", "text": "c", "text_parallel_0": "x"}]))
    assert read_task_examples(authors) == [{"prompt": "p", "completion": "c"}]
    chat = [
        {"role": "system", "content": ""},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    msgs = write(tmp_path / "m.jsonl", "\ufeff" + jsonl([{"messages": chat}]).replace("\n", "\r\n") + "\n")
    assert read_task_examples(msgs) == [{"messages": chat}]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "p"}\n', r"t\.jsonl:1: field 'completion': missing"),
        ('{"prompt": "p", "completion": "  "}\n', r"t\.jsonl:1: field 'completion': empty"),
        ('{"prompt": 3, "completion": "c"}\n', r"field 'prompt': expected a string"),
        ('\n\n{"prompt": "p", "completion": "c"\n', r"t\.jsonl:3: invalid JSON"),
        ("[1, 2]\n", r"t\.jsonl:1: expected a JSON object"),
        ('{"messages": []}\n', r"field 'messages'"),
        ('{"messages": [{"role": "bot", "content": "x"}]}\n', r"field 'messages\[0\]\.role'"),
        ('{"messages": [{"role": "user", "content": "x"}]}\n', r"last message must be the assistant"),
        ('{"text": "x"}\n', r"expected 'prompt' and 'completion'"),
        ("", r"no examples"),
        (b'{"prompt": "\xff", "completion": "c"}\n', r"t\.jsonl:1: invalid UTF-8"),
        ('{"prompt": "p", "completion": "c"}\n{"messages": [{"role": "assistant", "content": "x"}]}\n', "mixes"),
    ],
)
def test_task_errors_name_file_line_field(tmp_path, content, match):
    with pytest.raises(DataError, match=match):
        read_task_examples(write(tmp_path / "t.jsonl", content))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        read_task_examples(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- parallel data
def test_parallel_formats(tmp_path):
    rows = [{"src": "hola", "tgt": "hello", "src_lang": "es", "tgt_lang": "en"}]
    p = read_parallel(write(tmp_path / "p.jsonl", jsonl(rows)))
    assert p == [Pair("hola", "hello", "es", "en", f"{tmp_path}/p.jsonl:1")]
    tsv = write(tmp_path / "p.tsv", "tgt_lang\tsrc\ttgt\tsrc_lang\nen\tbonjour\thello\tfr\n\r\n")
    assert [(x.src, x.tgt, x.src_lang, x.tgt_lang) for x in read_parallel(tsv)] == [("bonjour", "hello", "fr", "en")]
    authors = write(
        tmp_path / "a.jsonl", jsonl([{"prefix": "", "text": "", "text_parallel_0": "x", "text_parallel_1": "y"}])
    )
    assert [(x.src, x.tgt, x.tgt_lang) for x in read_parallel(authors, pivot="en")] == [("x", "y", "en")]
    multi = write(tmp_path / "m.jsonl", jsonl([{"en": "hi", "de": "hallo", "fr": "salut"}]))
    assert [(x.src_lang, x.tgt_lang, x.src, x.tgt) for x in read_parallel(multi)] == [
        ("de", "en", "hallo", "hi"),
        ("fr", "en", "salut", "hi"),
    ]


def test_flores_folder(tmp_path):
    folder = tmp_path / "devtest"
    folder.mkdir()
    write(folder / "eng_Latn.devtest", "one\ntwo\n")
    write(folder / "deu_Latn.devtest", "eins\nzwei\n")
    write(folder / "zho_Hans.devtest", "一\n二\n")
    table = read_multiway(folder)
    assert table == {"deu_Latn": ["eins", "zwei"], "eng_Latn": ["one", "two"], "zho_Hans": ["一", "二"]}
    pairs = read_parallel(folder, pivot="eng_Latn")
    assert len(pairs) == 4 and {p.tgt_lang for p in pairs} == {"eng_Latn"}
    assert read_multiway(folder, ["zho_Hans"]) == {"zho_Hans": ["一", "二"]}
    with pytest.raises(DataError, match="unknown languages"):
        read_multiway(folder, ["xx"])
    write(folder / "fra_Latn.devtest", "un\n")
    with pytest.raises(DataError, match="different sentence counts"):
        read_multiway(folder)
    write(folder / "fra_Latn.devtest", "un\n\n")
    with pytest.raises(DataError, match=r"fra_Latn\.devtest:2: empty sentence"):
        read_multiway(folder)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("p.jsonl", '{"src": "a", "tgt": "", "src_lang": "es", "tgt_lang": "en"}\n', r"p\.jsonl:1: field 'tgt': empty"),
        ("p.jsonl", '{"en": "a"}\n', "multi-way row of >= 2"),
        ("p.jsonl", '{"de": "a", "fr": "b"}\n', r"p\.jsonl:1: field 'en': pivot language 'en' missing"),
        ("p.tsv", "src\ttgt\n", r"p\.tsv:1: field 'src_lang'"),
        ("p.tsv", "src\ttgt\tsrc_lang\ttgt_lang\na\tb\tes\n", r"p\.tsv:2: expected 4 tab-separated columns"),
        ("p.jsonl", "\n", "no parallel pairs"),
    ],
)
def test_parallel_errors(tmp_path, name, content, match):
    with pytest.raises(DataError, match=match):
        read_parallel(write(tmp_path / name, content))


# ---------------------------------------------------------------- tokenization and batching
def test_tokenize_pairs_leaves_bos_out_of_the_pool(tokenizer):
    (row,) = tokenize_pairs([Pair("the cat", "le chat", "fr", "en")], tokenizer)
    assert row["src_input_ids"][0] == tokenizer.bos_token_id and row["src_pool_mask"] == [0, 1, 1]
    (row,) = tokenize_pairs([Pair("the cat", "le chat", "fr", "en")], tokenizer, include_special_tokens=True)
    assert row["src_pool_mask"] == [1, 1, 1]
    with pytest.raises(DataError, match=r"x\.jsonl:3: field 'tgt': sentence is empty after tokenization"):
        tokenize_pairs([Pair("the cat", " ", "fr", "en", "x.jsonl:3")], tokenizer)


def test_cut_parallel_sentences_are_counted_in_the_log(tokenizer, caplog):
    pairs = [Pair("the big red house", "le chat", "fr", "en"), Pair("the cat", "le chat rouge", "fr", "en")]
    with caplog.at_level(logging.WARNING, logger="midalign"):
        rows = tokenize_pairs(pairs, tokenizer, max_length=4)
    assert len(rows[0]["src_input_ids"]) == 4  # BOS + 3 of 4 words
    assert "1 of 4 parallel sentences are longer than align_max_length 4 tokens and were cut (the longest has 5)" in (
        caplog.text
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="midalign"):
        tokenize_pairs(pairs, tokenizer, max_length=5)  # at the limit, not over it
    assert "were cut" not in caplog.text


def test_alignment_collator_pads_right(tokenizer):
    rows = tokenize_pairs([Pair("the cat sat", "le chat", "fr", "en"), Pair("dog", "chien", "fr", "en")], tokenizer)
    batch = AlignmentCollator(tokenizer.pad_token_id)(rows)
    assert batch["src_input_ids"].shape == (2, 4) and batch["src_attention_mask"].tolist() == [[1] * 4, [1, 1, 0, 0]]
    assert batch["src_pool_mask"].tolist() == [[0, 1, 1, 1], [0, 1, 0, 0]]


def kinds(batches, n_task):
    return "".join("J" if min(b) < n_task <= max(b) else "T" if max(b) < n_task else "A" for b in batches)


def test_sampler_alternates_and_is_deterministic():
    s = ScheduleBatchSampler(10, ["es-en"] * 5 + ["fr-en"] * 3, task_batch_size=4, align_batch_size=2, seed=1)
    batches = list(s)
    assert kinds(batches, 10) == "TATATA" and len(batches) == len(s)
    task_rows = [i for b in batches[::2] for i in b]
    assert set(task_rows) == set(range(10)) and len(task_rows) == 12  # every task row; the last batch wraps around
    assert batches == list(s)
    s.set_epoch(1)
    assert list(s) != batches
    ratio = ScheduleBatchSampler(10, ["es-en"] * 4, task_batch_size=2, align_batch_size=2, task_per_align=2)
    assert kinds(list(ratio), 10) == "TTATTAT" + "A" and len(ratio) == 8
    joint = ScheduleBatchSampler(10, ["es-en"] * 4, task_batch_size=4, align_batch_size=2, schedule="joint")
    assert kinds(list(joint), 10) == "JJJ" and all(len(b) == 6 for b in joint)
    only = ScheduleBatchSampler(0, ["es-en"] * 5, task_batch_size=4, align_batch_size=2)
    assert kinds(list(only), 0) == "AAA" and len(only) == 3


def test_sampler_groups_kinds_per_replica():
    s = ScheduleBatchSampler(16, ["es-en"] * 8, task_batch_size=2, align_batch_size=2, num_replicas=2)
    batches = list(s)
    assert kinds(batches, 16) == "TTAA" * 4 and len(batches) == len(s)
    rank0, rank1 = batches[0::2], batches[1::2]  # accelerate's round-robin sharding
    assert kinds(rank0, 16) == kinds(rank1, 16) == "TA" * 4
    assert not set(i for b in rank0 for i in b if i < 16) & set(i for b in rank1 for i in b if i < 16)


def test_uniform_language_sampling_balances_directions():
    directions = ["es-en"] * 90 + ["sw-en"] * 10
    s = ScheduleBatchSampler(0, directions, task_batch_size=1, align_batch_size=10, language_sampling="uniform")
    counts = Counter("sw" if i >= 90 else "es" for b in s for i in b)
    assert 0.35 < counts["sw"] / sum(counts.values()) < 0.65
    # A direction with fewer pairs than its share of a batch gives each of them once per batch: a pair drawn
    # twice into one batch would be its own negative.
    s = ScheduleBatchSampler(0, directions, task_batch_size=1, align_batch_size=50, language_sampling="uniform")
    for batch in s:
        assert len(set(batch)) == 50 and sum(i >= 90 for i in batch) == 10
    p = ScheduleBatchSampler(0, directions, task_batch_size=1, align_batch_size=50, language_sampling="proportional")
    counts = Counter("sw" if i >= 90 else "es" for b in p for i in b)
    assert counts["sw"] == 10  # one full pass, each pair once


def test_a_parallel_source_named_twice_is_refused(tmp_path):
    # Its pairs would count twice, and each copy would be a false negative of the other in a batch.
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"src": "a", "tgt": "b", "src_lang": "de", "tgt_lang": "en"}) + "\n")
    with pytest.raises(DataError, match=r"p\.jsonl: given twice: its rows would be read twice"):
        read_parallel([str(path), str(path)])
    with pytest.raises(DataError, match=r"given twice \(as .*p\.jsonl\)"):  # another spelling of the same file
        read_parallel([str(path), f"{tmp_path}/./p.jsonl"])
    with pytest.raises(DataError, match="given twice"):
        read_multiway([str(path), str(path)])


def test_parallel_errors_name_the_files(tmp_path):
    good, empty = tmp_path / "good.jsonl", tmp_path / "empty.jsonl"
    good.write_text(json.dumps({"src": "a", "tgt": "b", "src_lang": "de", "tgt_lang": "en"}) + "\n")
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no parallel pairs"):  # also when another file has some
        read_parallel([str(good), str(empty)])
    with pytest.raises(DataError, match=r"good\.jsonl: no pairs for language\(s\) \['xx'\]"):
        read_parallel([str(good)], languages=["xx"])


def test_a_folder_given_as_task_data_says_what_is_expected(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"d: is a folder, but not one written by Dataset\.save_to_disk"):
        read_task_examples(str(tmp_path / "d"))
