"""JSON-generation scorer: parsing, the schema subset, flattening, field P/R/F1."""

from __future__ import annotations

import pytest

from midalign.errors import ConfigError, DataError
from midalign.evaluation.structured import (
    check_schema_keywords,
    flatten_json,
    parse_json_output,
    schema_errors,
    score_json,
)

SCHEMA = {
    "type": "object",
    "required": ["person", "location"],
    "additionalProperties": False,
    "properties": {
        "person": {"type": "array", "items": {"type": "string"}},
        "location": {"type": "array", "items": {"type": "string"}},
        "count": {"type": "integer"},
        "kind": {"enum": ["news", "chat"]},
    },
}


@pytest.mark.parametrize(
    ("text", "ok", "value"),
    [
        ('{"a": 1}', True, {"a": 1}),
        ('  \n{"a": [1, 2]}\n ', True, {"a": [1, 2]}),
        ('```json\n{"a": 1}\n```', True, {"a": 1}),
        ('```\n["x"]\n```', True, ["x"]),
        ('Sure! {"a": 1}', False, None),
        ('{"a": 1} and more', False, None),
        ('{"a": 1', False, None),
        ("{'a': 1}", False, None),
        ('{"a": NaN}', False, None),
        ("", False, None),
        ('{"名前": "東京"}', True, {"名前": "東京"}),
    ],
)
def test_parse_json_output(text, ok, value):
    assert parse_json_output(text) == (ok, value)


def test_flatten_json():
    value = {"person": ["Ann", "Bo"], "meta": {"n": 2.0, "ok": True}, "ents": [{"t": "PER", "s": "Ann"}]}
    assert flatten_json(value) == [
        ("person[]", '"Ann"'),
        ("person[]", '"Bo"'),
        ("meta.n", "2"),
        ("meta.ok", "true"),
        ("ents[]", '{"s": "Ann", "t": "PER"}'),  # an object in a list is one field, keys sorted
    ]
    assert flatten_json({"a": 1}) != flatten_json({"a": True})
    # An empty array or object is a field: "no persons" is an answer, and not the same one as saying nothing
    assert flatten_json({"person": []}) == [("person", "[]")] and flatten_json({}) == [("", "{}")]
    # A key's own dots and brackets are escaped, so they cannot pass for nesting
    assert flatten_json({"a.b": 1}) == [("a\\.b", "1")] != flatten_json({"a": {"b": 1}})
    assert flatten_json({"x[]": 1}) != flatten_json({"x": [1]})
    assert flatten_json({"a\\": {"b": 1}}) != flatten_json({"a\\.b": 1})


def test_empty_answers_and_lookalike_paths_are_not_scored_as_right():
    garbage = score_json(["not json", "{}"], [{"person": []}, {"person": []}])
    assert garbage["field_gold"] == 2 and garbage["field_tp"] == 0 and garbage["field_f1"] == 0.0
    assert score_json(['{"person": []}'], [{"person": []}])["field_f1"] == 100.0
    assert score_json(['{"a.b": 1}'], [{"a": {"b": 1}}])["field_f1"] == 0.0
    assert score_json(['{"x[]": 1}'], [{"x": [1]}])["field_f1"] == 0.0


def test_schema_errors():
    assert schema_errors({"person": ["Ann"], "location": [], "count": 2.0, "kind": "news"}, SCHEMA) == []
    errors = schema_errors({"person": "Ann", "count": True, "kind": "x", "extra": 1}, SCHEMA)
    assert errors == [
        "$: missing required key 'location'",
        "$.person: expected array, got str",
        "$.count: expected integer, got bool",
        "$.kind: 'x' is not one of ['news', 'chat']",
        "$: unexpected key 'extra'",
    ]
    assert schema_errors({"person": ["Ann", 3], "location": []}, SCHEMA) == ["$.person[1]: expected string, got int"]
    assert schema_errors(None, {"type": ["object", "null"]}) == []
    assert schema_errors(1.5, {"type": "number"}) == []
    assert schema_errors([1], SCHEMA) == ["$: expected object, got list"]


def test_enum_compares_json_values_not_python_ones():
    assert schema_errors(True, {"enum": [1]}) == ["$: True is not one of [1]"]  # Python: True == 1
    assert schema_errors(0, {"enum": [False]}) != []
    assert schema_errors(1.0, {"enum": [1]}) == [] and schema_errors(True, {"enum": [True]}) == []
    assert score_json(['{"a": true}'], [{"a": 1}], schema={"properties": {"a": {"enum": [1]}}})["schema_valid"] == 0


def test_unsupported_schema_keywords_are_refused():
    check_schema_keywords({"$schema": "x", "title": "t", **SCHEMA})
    with pytest.raises(ConfigError, match=r"\$\.person\[\] uses .*'pattern'"):
        check_schema_keywords({"properties": {"person": {"items": {"pattern": "A"}}}})
    with pytest.raises(ConfigError, match="unknown type"):
        check_schema_keywords({"type": "date"})
    with pytest.raises(ConfigError):
        score_json(["{}"], [{}], schema={"oneOf": []})


def test_score_json_known_answers():
    golds = [
        {"person": ["Ann"], "location": ["Paris"]},
        {"person": [], "location": ["Rome"]},
        {"person": ["Bo"], "location": []},
    ]
    predictions = [
        '{"person": ["Ann", "Bo"], "location": ["Paris"]}',  # 2 of 3 fields right, 1 spurious
        '```json\n{"person": [], "location": ["Rome"]}\n```',  # exact
        '{"person": ["Bo"], "location": [',  # does not parse: its gold field is missed
    ]
    s = score_json(predictions, golds, schema=SCHEMA)
    # Gold fields 2 + 2 + 2 (an empty list is a field: `"person": []`), predicted 3 + 2 + 0, right 2 + 2 + 0
    assert (s["field_tp"], s["field_pred"], s["field_gold"]) == (4, 5, 6)
    assert s["field_precision"] == 80.0 and s["field_recall"] == pytest.approx(200 / 3)
    assert s["field_f1"] == pytest.approx(2 * 80 * 200 / 3 / (80 + 200 / 3))
    assert s["parse_rate"] == pytest.approx(200 / 3)
    assert s["schema_valid"] == pytest.approx(200 / 3)
    assert s["exact_match"] == pytest.approx(100 / 3)
    assert "schema_valid" not in score_json(predictions, golds)


def test_duplicates_and_nothing_parsed():
    s = score_json(['{"person": ["Ann", "Ann"]}'], [{"person": ["Ann"]}])
    assert (s["field_precision"], s["field_recall"]) == (50.0, 100.0)
    s = score_json(["oops", ""], [{"a": 1}, {"b": 2}])
    assert (s["parse_rate"], s["field_precision"], s["field_recall"], s["field_f1"]) == (0.0, 0.0, 0.0, 0.0)


def test_bad_inputs():
    with pytest.raises(DataError, match="1 predictions but 2 golds"):
        score_json(["{}"], [{}, {}])
    with pytest.raises(DataError, match="gold #0 must be a JSON object or array"):
        score_json(["{}"], ["{}"])
