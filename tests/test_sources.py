"""Data from `datasets`: Dataset objects, save_to_disk folders, parquet/CSV files and hub ids, in the real schemas
of the data sets the paper uses (MASSIVE, FLORES+, translation dicts), built here without a download."""

from __future__ import annotations

import datasets
import pytest

from midalign.data import read_multiway, read_parallel, read_task_examples
from midalign.data.readers import Pair, as_pairs
from midalign.errors import ConfigError, DataError
from midalign.evaluation.loaders import MASSIVE_SYSTEM_PROMPT, load_examples

MASSIVE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "locale": datasets.Value("string"),
        "partition": datasets.Value("string"),
        "scenario": datasets.ClassLabel(names=["alarm", "weather"]),
        "intent": datasets.ClassLabel(names=["alarm_set", "weather_query"]),
        "utt": datasets.Value("string"),
        "annot_utt": datasets.Value("string"),
        "worker_id": datasets.Value("string"),
    }
)
MASSIVE = [
    ("en-US", 0, "wake me up at nine am", "wake me up at [time : nine am]"),
    ("en-US", 1, "is it raining", "is it raining"),
    ("de-DE", 0, "weck mich um neun", "weck mich um [time : neun]"),
]


def massive_dataset() -> datasets.Dataset:
    rows = [
        dict(
            id=str(i),
            locale=loc,
            partition="train",
            scenario=intent,
            intent=intent,
            utt=utt,
            annot_utt=annot,
            worker_id="7",
        )
        for i, (loc, intent, utt, annot) in enumerate(MASSIVE)
    ]
    return datasets.Dataset.from_list(rows, features=MASSIVE_FEATURES)


def flores_plus(lang: str, sentences: list[str]) -> datasets.Dataset:
    """One FLORES+ language config as the hub serves it: one row per sentence, the language in two columns."""
    iso, script = lang.split("_")
    return datasets.Dataset.from_list(
        [
            dict(
                id=i,
                iso_639_3=iso,
                iso_15924=script,
                glottocode="xxxx1234",
                text=text,
                url="https://example.org",
                domain="wikinews",
                topic="science",
                has_image="no",
                has_hyperlink="no",
                last_updated="2.0",
            )
            for i, text in enumerate(sentences)
        ]
    )


EN = ["the cat sleeps", "the dog runs", "it rains today"]
DE = ["die katze schläft", "der hund rennt", "heute regnet es"]
FR = ["le chat dort", "le chien court", "il pleut aujourd'hui"]


def test_massive_rows_train_with_the_evaluation_prompt(tmp_path):
    """MASSIVE's columns (ClassLabel intent) become chat rows: the system prompt that `evaluate` uses, the utterance,
    the slots; the same from a Dataset, a save_to_disk folder and a parquet file."""
    dataset = massive_dataset()
    rows = read_task_examples(dataset)
    assert rows[0] == {
        "messages": [
            {"role": "system", "content": MASSIVE_SYSTEM_PROMPT},
            {"role": "user", "content": "wake me up at nine am"},
            {"role": "assistant", "content": "time: nine am"},
        ]
    }
    assert rows[1]["messages"][-1]["content"] == "None"
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset.to_parquet(str(tmp_path / "massive.parquet"))
    assert read_task_examples(str(tmp_path / "saved")) == rows
    assert read_task_examples(tmp_path / "massive.parquet") == rows


def test_task_columns_are_renamed_and_a_missing_one_is_named(tmp_path):
    csv = tmp_path / "qa.csv"
    csv.write_text("question,answer\nwhat is two plus two,four\n", encoding="utf-8")
    rows = read_task_examples(csv, columns={"prompt": "question", "completion": "answer"})
    assert rows == [{"prompt": "what is two plus two", "completion": "four"}]
    with pytest.raises(DataError, match=r"qa\.csv:1: column 'reply' not found; columns: \['answer', 'question'\]"):
        read_task_examples(csv, columns={"prompt": "question", "completion": "reply"})
    with pytest.raises(DataError, match=r"<list>:2: field 'completion': missing"):
        read_task_examples([{"prompt": "a", "completion": "b"}, {"prompt": "c"}])


def test_flores_plus_languages_are_grouped_by_id_across_sources():
    sources = [flores_plus("eng_Latn", EN), flores_plus("deu_Latn", DE), flores_plus("fra_Latn", FR)]
    table = read_multiway(sources)
    assert table == {"eng_Latn": EN, "deu_Latn": DE, "fra_Latn": FR}
    assert read_multiway(datasets.concatenate_datasets(sources), ["fra_Latn", "eng_Latn"]) == {
        "fra_Latn": FR,
        "eng_Latn": EN,
    }
    pairs = read_parallel(sources, pivot="eng_Latn", languages=["deu_Latn"])
    assert [(p.src, p.tgt, p.src_lang, p.tgt_lang) for p in pairs] == [
        (d, e, "deu_Latn", "eng_Latn") for d, e in zip(DE, EN, strict=True)
    ]
    with pytest.raises(DataError, match=r"no pairs for language\(s\) \['ita_Latn'\]"):
        read_parallel(sources, pivot="eng_Latn", languages=["ita_Latn"])
    short = [flores_plus("eng_Latn", EN), flores_plus("deu_Latn", DE[:2])]
    with pytest.raises(DataError, match=r"<Dataset>:3: languages \[.eng_Latn.\] differ from the first row.s"):
        read_multiway(short)


def test_translation_dicts_and_sentence_columns(tmp_path):
    wmt = datasets.Dataset.from_list([{"translation": {"de": d, "en": e}} for d, e in zip(DE, EN, strict=True)])
    pairs = read_parallel(wmt)
    assert pairs[0] == Pair(DE[0], EN[0], "de", "en", "<Dataset>:1")
    assert read_multiway(wmt) == {"de": DE, "en": EN}
    flores200 = datasets.Dataset.from_list(
        [{"id": i, "sentence_deu_Latn": d, "sentence_eng_Latn": e} for i, (d, e) in enumerate(zip(DE, EN, strict=True))]
    )
    flores200.to_parquet(str(tmp_path / "flores.parquet"))
    assert read_multiway(tmp_path / "flores.parquet") == {"deu_Latn": DE, "eng_Latn": EN}
    pair_rows = [{"src": "hallo", "tgt": "hello", "src_lang": "de", "tgt_lang": "en"}]
    assert as_pairs(pair_rows) == [Pair("hallo", "hello", "de", "en", "<list>:1")]
    assert as_pairs(pairs, languages=["fr"]) == []


def test_hub_ids_reach_load_dataset_and_failures_name_the_source(monkeypatch):
    calls = []

    def fake(name, config=None, split=None):
        calls.append((name, config, split))
        splits = datasets.DatasetDict({"dev": flores_plus("eng_Latn", EN), "devtest": flores_plus("eng_Latn", EN)})
        return splits[split] if split else splits

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert read_multiway("openlanguagedata/flores_plus:eng_Latn:dev") == {"eng_Latn": EN}
    assert calls[-1] == ("openlanguagedata/flores_plus", "eng_Latn", "dev")
    with pytest.raises(
        DataError, match=r"openlanguagedata/flores_plus: no split 'train'; splits: \['dev', 'devtest'\]"
    ):
        read_multiway("openlanguagedata/flores_plus")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"^owner/data:xx: could not load from the hub: no network$"):
        load_examples("owner/data:xx", "slot")
    with pytest.raises(DataError, match=r"missing\.jsonl: file not found"):
        read_task_examples("data/missing.jsonl")
    with pytest.raises(ConfigError, match="task_columns: expected FIELD=COLUMN"):
        from midalign.data.sources import parse_columns

        parse_columns(["prompt"], "task_columns")
