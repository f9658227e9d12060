"""Scoring per language and writing the report, without a model."""

from __future__ import annotations

import csv
import json

import pytest

from midalign.errors import ConfigError, DataError
from midalign.evaluation.runner import check_system_name, prediction_rows, score_by_language, write_report

SLOT_EXAMPLES = [
    {"lang": "en", "prompt": "wake me up at nine am", "gold": "time: nine am"},
    {"lang": "zh", "prompt": "九点叫醒我", "gold": "time: 九点"},
    {"lang": "en", "prompt": "play music", "gold": "None"},
]


def test_slot_scores_per_language_in_order_of_appearance():
    scores = score_by_language("slot", SLOT_EXAMPLES, ["time: nine am", "time: 九 点", "None"])
    assert list(scores) == ["en", "zh"]
    assert scores["en"]["n"] == 2 and scores["en"]["slot_f1"] == 100.0
    assert scores["zh"]["slot_f1"] == 100.0  # zh is split into characters
    assert (
        score_by_language("slot", SLOT_EXAMPLES, ["None", "time: 九 点", "None"], char_langs=[])["zh"]["slot_f1"] == 0
    )


def test_translation_and_json_per_language():
    examples = [
        {"lang": "de-en", "prompt": "Hallo", "gold": "Hello there , my friend .", "tgt_lang": "en"},
        {"lang": "en-zh", "prompt": "Hello", "gold": "你好，我的朋友。", "tgt_lang": "zh"},
    ]
    scores = score_by_language("mt", examples, ["Hello there , my friend .", "你好，我的朋友。"])
    assert scores["de-en"]["bleu"] == pytest.approx(100.0) and "tok:zh" in scores["en-zh"]["bleu_signature"]
    with pytest.raises(DataError, match="mixes target languages"):
        score_by_language("mt", [examples[0], {**examples[1], "lang": "de-en"}], ["a", "b"])
    with pytest.raises(DataError, match="COMET needs a 'source'"):
        score_by_language("mt", examples, ["a", "b"], comet=True)

    js = [{"lang": "en", "prompt": "p", "gold": '{"a": 1}'}, {"lang": "de", "prompt": "p", "gold": {"a": 2}}]
    scores = score_by_language("json", js, ['{"a": 1}', "{}"], schema={"type": "object", "required": ["a"]})
    assert scores["en"]["field_f1"] == 100.0 and scores["de"]["schema_valid"] == 0.0


def test_bad_calls():
    with pytest.raises(DataError, match="2 predictions but 3 examples"):
        score_by_language("slot", SLOT_EXAMPLES, ["None", "None"])
    with pytest.raises(DataError, match="example #1: field 'gold': missing"):
        score_by_language("slot", [SLOT_EXAMPLES[0], {"lang": "en", "prompt": "p"}], ["None", "None"])
    with pytest.raises(ConfigError, match="unknown task"):
        score_by_language("ner", [], [])
    for option in ({"char_langs": ["th"]}, {"schema": {}}):
        with pytest.raises(ConfigError, match="applies to the"):
            score_by_language("mt", [], [], **option)
    with pytest.raises(ConfigError, match="comet applies to the 'mt' task"):
        score_by_language("slot", [], [], comet=True)
    assert check_system_name("mid-align_v1.2") == "mid-align_v1.2"
    for bad in ("", "a b", "../x", ".hidden"):
        with pytest.raises(ConfigError):
            check_system_name(bad)


def test_write_report(tmp_path):
    predictions = {"baseline": ["None", "time: 九点", "None"], "mid-align": ["time: nine am", "time: 九点", "None"]}
    scores = {name: score_by_language("slot", SLOT_EXAMPLES, p) for name, p in predictions.items()}
    rows = {name: prediction_rows(SLOT_EXAMPLES, p, name) for name, p in predictions.items()}
    written = write_report(tmp_path / "out", "slot", scores, predictions=rows, supervised=["en"])
    assert sorted(written) == sorted(
        [
            "predictions-baseline",
            "predictions-mid-align",
            "scores.json",
            "scores.csv",
            "tables.md",
            "tables.csv",
            "chart-slot_f1",
            "chart-slot_type_f1",
            "chart-exact_match",
        ]
    )
    report = json.loads(written["scores.json"].read_text())
    assert report["task"] == "slot" and report["tables"]["slot_f1"]["transfer"] == ["zh"]
    assert report["tables"]["slot_f1"]["averages"]["mid-align"]["gap"] == 0.0
    long = list(csv.DictReader(written["scores.csv"].open()))
    assert {"system": "baseline", "language": "en", "metric": "slot_f1", "value": "0.0"} in long
    assert "## slot_type_f1" in written["tables.md"].read_text()
    lines = written["predictions-mid-align"].read_text().splitlines()
    assert json.loads(lines[0]) == {**SLOT_EXAMPLES[0], "system": "mid-align", "prediction": "time: nine am"}

    written = write_report(tmp_path / "bare", "slot", scores, chart=False)
    assert not any(name.startswith(("chart", "predictions")) for name in written)
    assert not list((tmp_path / "bare").glob("*.png"))
    with pytest.raises(ConfigError, match="may only hold"):
        write_report(tmp_path / "x", "slot", scores, predictions={"a b": rows["baseline"]})


@pytest.mark.parametrize("module", ["slots", "structured", "prf", "translation", "tables", "runner", "loaders"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"midalign.evaluation.{module}"))
    assert result.failed == 0
