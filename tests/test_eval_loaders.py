"""Loaders on small files in each format, written here; errors name the file, line and field."""

from __future__ import annotations

import datasets
import pytest
from eval_fixtures import MASSIVE_ROWS, write_jsonl

from midalign.errors import ConfigError, DataError
from midalign.evaluation.loaders import (
    MASSIVE_INTENT_SYSTEM_PROMPT,
    MASSIVE_SYSTEM_PROMPT,
    load_examples,
    load_flores,
    load_massive,
    load_massive_hf,
    load_massive_jsonl,
    load_parallel_text,
    load_predictions,
    load_text_pairs,
    normalize_example,
    parse_pairs,
    read_prediction_lines,
)
from midalign.evaluation.runner import prediction_rows
from midalign.evaluation.slots import score_slots


@pytest.fixture
def massive_file(tmp_path):
    return write_jsonl(tmp_path / "massive.jsonl", MASSIVE_ROWS)


def test_massive_jsonl_file(massive_file):
    examples = load_massive_jsonl(massive_file)
    assert [e["lang"] for e in examples] == ["en-US", "en-US", "de-DE", "zh-CN"]  # the train row is left out
    first = examples[0]
    assert first == {
        "id": "1",
        "lang": "en-US",
        "prompt": "wake me up at nine am on friday",
        "utt": "wake me up at nine am on friday",
        "gold": "time: nine am; date: friday",
        "system_prompt": MASSIVE_SYSTEM_PROMPT,
    }
    assert examples[1]["gold"] == "None"
    assert examples[3]["gold"] == "date: 星期五; time: 早上九点"
    assert len(load_massive_jsonl(massive_file, partition=None)) == 5


def test_massive_annotation_inside_a_word_scores_through_the_reader(tmp_path):
    # MASSIVE brackets can leave a clitic outside (`[date : today]'s`, `l'[place_name : hôtel]`); the gold read from
    # the release must then tag the whole word, as MASSIVE's own conversion does, so a copy of the gold scores 100.
    rows = [
        {"id": "7", "locale": "en-US", "partition": "test", "intent": "weather_query",
         "utt": "what is today's weather", "annot_utt": "what is [date : today]'s weather"},
        {"id": "7", "locale": "fr-FR", "partition": "test", "intent": "transport_query",
         "utt": "emmène-moi à l'hôtel de ville.", "annot_utt": "emmène-moi à l'[place_name : hôtel de ville]."},
    ]  # fmt: skip
    for example in load_massive_jsonl(write_jsonl(tmp_path / "m.jsonl", rows)):
        s = score_slots([example["gold"]], [example["gold"]], [example["utt"]], lang=example["lang"])
        assert (s["slot_f1"], s["slot_unplaced_gold"]) == (100.0, 0), example


def test_massive_locales_and_intents(massive_file):
    examples = load_massive_jsonl(massive_file, locales=["de-DE"], with_intent=True)
    assert len(examples) == 1
    assert examples[0]["gold"] == "alarm_set | time: neun uhr; date: freitag"
    assert examples[0]["system_prompt"] == MASSIVE_INTENT_SYSTEM_PROMPT
    assert (
        load_massive_jsonl(massive_file, locales=["de-DE"], system_prompt="Extract.")[0]["system_prompt"] == "Extract."
    )


def test_massive_folder_of_locale_files(tmp_path):
    for locale in ("en-US", "de-DE"):
        write_jsonl(tmp_path / "data" / f"{locale}.jsonl", [r for r in MASSIVE_ROWS if r["locale"] == locale])
    assert len(load_massive_jsonl(tmp_path / "data")) == 3
    assert len(load_massive_jsonl(tmp_path / "data", locales=["de-DE"])) == 1
    with pytest.raises(DataError, match=r"fr-FR\.jsonl: file not found"):
        load_massive_jsonl(tmp_path / "data", locales=["fr-FR"])


def test_massive_errors(tmp_path, massive_file):
    with pytest.raises(DataError, match=r"unknown MASSIVE locale\(s\) \['xx-XX'\]"):
        load_massive_jsonl(massive_file, locales=["xx-XX"])
    with pytest.raises(DataError, match=r"no examples for locale\(s\) \['fr-FR'\]"):
        load_massive_jsonl(massive_file, locales=["fr-FR"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"locale": "en-US", "partition": "test", "utt": "a", "annot_utt": "a"}\n{"locale": "en-US", "utt": \n',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"broken\.jsonl:2: invalid JSON"):
        load_massive_jsonl(broken)
    rows = [dict(MASSIVE_ROWS[0]), {k: v for k, v in MASSIVE_ROWS[1].items() if k != "annot_utt"}]
    with pytest.raises(DataError, match=r"missing\.jsonl:2: field 'annot_utt': missing") as error:
        load_massive_jsonl(write_jsonl(tmp_path / "missing.jsonl", rows))
    assert (error.value.line, error.value.field) == (2, "annot_utt")
    rows = [{**MASSIVE_ROWS[0], "annot_utt": "wake me up at [time : nine am"}]
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'annot_utt': unbalanced"):
        load_massive_jsonl(write_jsonl(tmp_path / "bad.jsonl", rows))
    with pytest.raises(DataError, match=r"intent\.jsonl:1: field 'intent': missing"):
        load_massive_jsonl(write_jsonl(tmp_path / "intent.jsonl", [rows[0] | {"intent": None}]), with_intent=True)
    with pytest.raises(DataError, match=r"nowhere\.jsonl: file not found"):
        load_massive_jsonl(tmp_path / "nowhere.jsonl")


def massive_dataset(rows) -> datasets.Dataset:
    """MASSIVE as the hub serves it: the intent (and scenario) as ClassLabel indices."""
    intents = datasets.ClassLabel(names=["alarm_set", "play_music"])
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "locale": datasets.Value("string"),
            "partition": datasets.Value("string"),
            "scenario": datasets.ClassLabel(names=["alarm", "music"]),
            "intent": intents,
            "utt": datasets.Value("string"),
            "annot_utt": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_list(
        [{**{k: r[k] for k in features if k in r}, "intent": 0, "scenario": 0} for r in rows], features=features
    )


def test_massive_hf_code_path(monkeypatch):
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return massive_dataset([r for r in MASSIVE_ROWS if r["locale"] == config])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_massive_hf(["de-DE"], partition="dev", with_intent=True)
    assert calls == [("AmazonScience/massive", "de-DE", "validation")]
    assert examples[0]["gold"] == "alarm_set | time: neun uhr; date: freitag"
    with pytest.raises(DataError, match="unknown MASSIVE partition"):
        load_massive_hf(["de-DE"], partition="validation")

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"AmazonScience/massive:de-DE:test: could not load from the hub: no network"):
        load_massive_hf(["de-DE"])


def test_massive_from_any_dataset_source(tmp_path):
    """The same examples from a Dataset object, a save_to_disk folder and a parquet file, locales filtered."""
    dataset = massive_dataset(MASSIVE_ROWS)
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset.to_parquet(str(tmp_path / "massive.parquet"))
    expected = load_massive(dataset, locales=["de-DE"], with_intent=True)
    assert [e["gold"] for e in expected] == ["alarm_set | time: neun uhr; date: freitag"]
    for source in (str(tmp_path / "saved"), tmp_path / "massive.parquet"):
        assert load_massive(source, locales=["de-DE"], with_intent=True) == expected
    with pytest.raises(DataError, match="no examples for locale"):
        load_massive(dataset, locales=["fr-FR"])


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_parallel_text(tmp_path):
    src = _write(tmp_path / "test.de-en.de", "Hallo Welt\nGuten Morgen\n")
    ref = _write(tmp_path / "test.de-en.en", "Hello world\nGood morning\n")
    examples = load_parallel_text(src, ref, src_lang="de", tgt_lang="en")
    assert examples[1] == {
        "id": "de-en:2",
        "lang": "de-en",
        "src_lang": "de",
        "tgt_lang": "en",
        "source": "Guten Morgen",
        "prompt": "Guten Morgen",
        "system_prompt": "Translate the following sentences from German to English.",
        "gold": "Good morning",
    }


def test_parallel_text_errors(tmp_path):
    src = _write(tmp_path / "s.de", "a\nb\nc\n")
    with pytest.raises(DataError, match=r"r\.en:3: 2 reference lines but the source .* has 3"):
        load_parallel_text(src, _write(tmp_path / "r.en", "x\ny\n"), src_lang="de", tgt_lang="en")
    with pytest.raises(DataError, match=r"r2\.en:2: empty line"):
        load_parallel_text(src, _write(tmp_path / "r2.en", "x\n \nz\n"), src_lang="de", tgt_lang="en")
    (tmp_path / "bad.en").write_bytes(b"x\n\xff\xfe\nz\n")
    with pytest.raises(DataError, match=r"bad\.en:2: invalid UTF-8"):
        load_parallel_text(src, tmp_path / "bad.en", src_lang="de", tgt_lang="en")
    with pytest.raises(DataError, match="unknown language 'xx'"):
        load_parallel_text(src, src, src_lang="de", tgt_lang="xx")
    with pytest.raises(DataError, match="file not found"):
        load_parallel_text(tmp_path / "none", src, src_lang="de", tgt_lang="en")


def test_text_pattern_and_flores(tmp_path):
    for lang, text in (("de", "Hallo\n"), ("en", "Hello\n"), ("cs", "Ahoj\n")):
        _write(tmp_path / "wmt" / f"{lang}.txt", text)
    examples = load_text_pairs(str(tmp_path / "wmt" / "{lang}.txt"), ["de-en", "cs-en"])
    assert [(e["lang"], e["source"], e["gold"]) for e in examples] == [
        ("de-en", "Hallo", "Hello"),
        ("cs-en", "Ahoj", "Hello"),
    ]
    with pytest.raises(ConfigError, match="must contain"):
        load_text_pairs(str(tmp_path / "{src}.txt"), ["de-en"])
    with pytest.raises(ConfigError, match="may only use"):
        load_text_pairs(str(tmp_path / "{lang}.{year}"), ["de-en"])

    for code, text in (("deu_Latn", "Hallo\n"), ("zho_Hans", "你好\n")):
        _write(tmp_path / "flores200" / "devtest" / f"{code}.devtest", text)
    examples = load_flores(tmp_path / "flores200", ["deu_Latn-zho_Hans"])
    assert examples[0]["lang"] == "deu_Latn-zho_Hans" and examples[0]["gold"] == "你好"
    assert examples[0]["system_prompt"] == "Translate the following sentences from German to Chinese."


def test_parse_pairs():
    assert parse_pairs(["de-en", "deu_Latn-eng_Latn"]) == [("de", "en"), ("deu_Latn", "eng_Latn")]
    for bad in ("de", "zh-CN-en", "-en"):
        with pytest.raises(ConfigError, match="SRC-TGT"):
            parse_pairs([bad])


def test_generic_jsonl_per_task(tmp_path):
    slot = load_examples(
        write_jsonl(
            tmp_path / "slot.jsonl",
            [
                {"lang": "en", "prompt": "wake me at nine", "gold": "time: nine"},
                {"lang": "en", "prompt": "Q: wake me at nine", "utt": "wake me at nine", "gold": [["time", "nine"]]},
            ],
        ),
        "slot",
    )
    assert slot[0]["utt"] == "wake me at nine"  # defaults to the prompt
    assert slot[1]["gold"] == "time: nine"
    mt = load_examples(
        write_jsonl(tmp_path / "mt.jsonl", [{"lang": "de-en", "prompt": "Hallo", "gold": "Hi", "tgt_lang": "en"}]), "mt"
    )
    assert mt[0]["tgt_lang"] == "en"
    js = load_examples(
        write_jsonl(tmp_path / "js.jsonl", [{"lang": "en", "prompt": "p", "gold": '{"a": [1]}'}]), "json"
    )
    assert js[0]["gold"] == {"a": [1]}


def test_training_format_rows_are_read_as_examples(tmp_path):
    rows = [
        {"lang": "en", "prompt": "wake me at nine", "completion": "time: nine"},
        {
            "lang": "de",
            "messages": [
                {"role": "user", "content": "weck mich um neun"},
                {"role": "assistant", "content": "time: neun"},
            ],
        },
        {
            "lang": "de",
            "messages": [
                {"role": "system", "content": "extract"},
                {"role": "user", "content": "weck mich"},
                {"role": "assistant", "content": "None"},
            ],
        },
    ]
    examples = load_examples(write_jsonl(tmp_path / "train-format.jsonl", rows), "slot")
    assert [(e["prompt"], e["gold"], e.get("system_prompt")) for e in examples] == [
        ("wake me at nine", "time: nine", None),
        ("weck mich um neun", "time: neun", None),
        ("weck mich", "None", "extract"),
    ]
    assert "completion" not in examples[0] and "messages" not in examples[1]
    bad = [{"lang": "en", "messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]}]
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'messages'"):
        load_examples(write_jsonl(tmp_path / "bad.jsonl", bad), "slot")


@pytest.mark.parametrize(
    ("task", "rows", "message"),
    [
        ("slot", [{"prompt": "p", "gold": "None"}], "2: field 'lang': missing"),
        ("slot", [{"lang": "", "prompt": "p", "gold": "None"}], "2: field 'lang': expected a non-empty str"),
        ("slot", [{"lang": "en", "prompt": "p", "gold": "time nine"}], "2: field 'gold': malformed slot"),
        ("slot", [{"lang": "en", "prompt": "p", "gold": [["time"]]}], "2: field 'gold': a slot list"),
        ("mt", [{"lang": "de-en", "prompt": "p", "gold": "g"}], "2: field 'tgt_lang': missing"),
        (
            "mt",
            [{"lang": "de-en", "prompt": "p", "gold": "g", "tgt_lang": "xx"}],
            "2: field 'tgt_lang': unknown language",
        ),
        ("json", [{"lang": "en", "prompt": "p", "gold": '{"a": '}], "2: field 'gold': gold string is not JSON"),
        ("json", [{"lang": "en", "prompt": "p", "gold": 3}], "2: field 'gold': gold must be a JSON object"),
        ("json", [{"lang": "en", "prompt": "p"}], "2: field 'gold': missing"),
    ],
)
def test_generic_jsonl_errors_name_line_and_field(tmp_path, task, rows, message):
    good = {"lang": "en", "prompt": "p", "gold": {"slot": "None", "mt": "g", "json": "{}"}[task], "tgt_lang": "en"}
    path = write_jsonl(tmp_path / "data.jsonl", [good, *rows])
    with pytest.raises(DataError, match=f"data.jsonl:{message}"):
        load_examples(path, task)


def test_blank_lines_and_non_objects(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('\n{"lang": "en", "prompt": "p", "gold": "None"}\n\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:4: expected a JSON object"):
        load_examples(path, "slot")
    with pytest.raises(ConfigError, match="unknown task"):
        normalize_example({}, "ner")
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="no examples"):
        load_examples(path, "slot")


def test_predictions_round_trip_and_aligned_files(tmp_path, massive_file):
    examples = load_massive_jsonl(massive_file)
    predictions = ["time: nine am", "None", "", "time: 早上九点"]
    path = write_jsonl(tmp_path / "predictions-a.jsonl", prediction_rows(examples, predictions, "a"))
    assert load_predictions(path, "slot") == (examples, predictions)
    with pytest.raises(DataError, match=r"predictions-a\.jsonl:1: field 'prediction'"):
        load_predictions(write_jsonl(tmp_path / "predictions-a.jsonl", [examples[0]]), "slot")

    text = _write(tmp_path / "p.txt", "time: nine am\nNone\n\ntime: 早上九点\n")
    assert read_prediction_lines(text, 4) == predictions
    with pytest.raises(DataError, match=r"p\.txt:5: 4 predictions but the data has 5 examples"):
        read_prediction_lines(text, 5)
    with pytest.raises(DataError, match=r"p\.txt:4: 4 predictions but the data has 3 examples"):
        read_prediction_lines(text, 3)
    aligned = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x", "prediction": p} for p in predictions])
    assert read_prediction_lines(aligned, 4) == predictions
    with pytest.raises(DataError, match=r"q\.jsonl:1: field 'prediction'"):
        read_prediction_lines(write_jsonl(tmp_path / "q.jsonl", [{"output": "x"}]), 1)
