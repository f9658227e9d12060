"""Structured (JSON) generation: parse rate, schema validity and field-level P/R/F1 against gold JSON.

Parsing: surrounding whitespace and one enclosing Markdown code fence (```json ... ```) are removed,
then the rest must be exactly one JSON value (no text before or after; `NaN`/`Infinity` refused). It is
read strictly (`midalign.files.loads_json`): an object naming a key twice (ambiguous: parsers disagree on
which value wins), nesting deeper than 100 levels or a lone surrogate make the output unparsable.

Fields: a JSON value is flattened into (path, value) pairs: object keys are joined with `.` (a key's own `.`,
`[`, `]` and `\\` escaped with `\\`, so `{"a.b": 1}` and `{"a": {"b": 1}}` differ), array elements share their
array's path plus `[]` (order ignored, duplicates kept), an array element that is itself an object or array is one
field compared whole (so an entity object counts as found only with all its keys right), and an empty object or
array is a field of its own (so `{"person": []}` is not `{}`). Values are compared exactly, except that 1.0 equals
1 (`true` does not equal 1). Precision and recall are micro-averaged over all pairs of all examples; an unparsable
output has no pairs.

Schema validity uses a small JSON Schema subset checked by hand: `type` (one or a list), `enum`,
`properties`, `required`, `additionalProperties` (true/false) and `items`; `$schema`, `$id`,
`title` and `description` are ignored, any other keyword is refused rather than silently unchecked.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from midalign.errors import ConfigError, DataError
from midalign.evaluation.prf import prf
from midalign.files import loads_json

_FENCE = re.compile(r"```[A-Za-z]*\s*\n?(.*?)\n?\s*```", re.DOTALL)
_KEYWORDS = {"type", "enum", "properties", "required", "additionalProperties", "items"}
_ANNOTATIONS = {"$schema", "$id", "title", "description"}
_TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
_JSON_KIND = {list: "array", Mapping: "object", bool: "boolean"}


def parse_json_output(text: str) -> tuple[bool, Any]:
    """Parse a generated output as one JSON value.

    Returns:
        `(True, value)` when it parses, `(False, None)` otherwise.

    Example:
        >>> parse_json_output('```json\\n{"a": 1}\\n```')
        (True, {'a': 1})
    """
    body = text.strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return True, loads_json(body, allow_nan=False)
    except DataError:
        return False, None


def check_schema_keywords(schema: Mapping[str, Any], path: str = "$") -> None:
    """Refuse a schema that uses keywords outside the supported subset (see the module docstring).

    Raises:
        ConfigError: naming the keyword and where it is.
    """
    if not isinstance(schema, Mapping):
        raise ConfigError(f"schema at {path} must be an object, got {type(schema).__name__}")
    unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
    if unknown:
        raise ConfigError(f"schema at {path} uses unsupported keyword(s) {sorted(unknown)}")
    types = schema.get("type", [])
    if not isinstance(types, str | list):
        raise ConfigError(f"schema at {path}: 'type' must be a type name or a list of them")
    for name in [types] if isinstance(types, str) else types:
        if not isinstance(name, str) or name not in _TYPES:
            raise ConfigError(f"schema at {path}: unknown type {name!r}")
    shapes = {"enum": list, "required": list, "properties": Mapping, "additionalProperties": bool}
    for keyword, kind in shapes.items():
        if keyword in schema and not isinstance(schema[keyword], kind):
            raise ConfigError(f"schema at {path}: {keyword!r} must be a JSON {_JSON_KIND[kind]}")
    if not all(isinstance(key, str) for key in schema.get("required", [])):
        raise ConfigError(f"schema at {path}: 'required' must list key names")
    for key, sub in schema.get("properties", {}).items():
        check_schema_keywords(sub, f"{path}.{key}")
    if "items" in schema:
        check_schema_keywords(schema["items"], f"{path}[]")


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    python_types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    return isinstance(value, python_types[name])


def schema_errors(value: Any, schema: Mapping[str, Any], path: str = "$") -> list[str]:
    """Where `value` breaks `schema` (the supported subset), as readable messages; empty when valid.

    Example:
        >>> schema_errors({"name": 3}, {"type": "object", "required": ["name", "age"],
        ...                             "properties": {"name": {"type": "string"}}})
        ["$: missing required key 'age'", '$.name: expected string, got int']
    """
    errors = []
    if "type" in schema:
        wanted = [schema["type"]] if isinstance(schema["type"], str) else list(schema["type"])
        if not any(_is_type(value, name) for name in wanted):
            return [f"{path}: expected {' or '.join(wanted)}, got {type(value).__name__}"]
    # Compared as JSON values: Python's `True == 1` would let `true` pass an enum of numbers
    if "enum" in schema and _canonical(value) not in {_canonical(option) for option in schema["enum"]}:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"{path}: missing required key {key!r}" for key in schema.get("required", []) if key not in value]
        for key, item in value.items():
            if key in properties:
                errors += schema_errors(item, properties[key], f"{path}.{key}")
            elif schema.get("additionalProperties", True) is False:
                errors.append(f"{path}: unexpected key {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors


def _canonical(value: Any) -> str:
    def integral(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: integral(x) for k, x in v.items()}
        if isinstance(v, list):
            return [integral(x) for x in v]
        return v

    return json.dumps(integral(value), sort_keys=True, ensure_ascii=False)


def flatten_json(value: Any, path: str = "") -> list[tuple[str, str]]:
    """The (path, canonical value) fields of a JSON value (see the module docstring).

    Example:
        >>> flatten_json({"person": ["Ann", "Bo"], "meta": {"n": 2.0}})
        [('person[]', '"Ann"'), ('person[]', '"Bo"'), ('meta.n', '2')]
    """
    if isinstance(value, dict) and value:
        return [pair for key, item in value.items() for pair in flatten_json(item, _join(path, key))]
    if isinstance(value, list) and value:
        return [(f"{path}[]", _canonical(item)) for item in value]
    return [(path, _canonical(value))]  # a scalar, or an empty object or array: an answer too ("no persons")


def _join(path: str, key: str) -> str:
    key = re.sub(r"([.\[\]\\])", r"\\\1", key)
    return f"{path}.{key}" if path else key


def score_json(
    predictions: Sequence[str], golds: Sequence[Any], *, schema: Mapping[str, Any] | None = None
) -> dict[str, float | int]:
    """Score JSON outputs against gold JSON values.

    Args:
        predictions: generated outputs.
        golds: gold JSON values (objects or arrays, already parsed).
        schema: optional JSON schema (supported subset) every output should satisfy.

    Returns:
        Percentages: `parse_rate`, `schema_valid` (only with a schema; unparsable outputs are
        invalid), `field_precision`, `field_recall`, `field_f1`, `exact_match` (parsed output equals
        the gold); counts: `n`, `field_tp`, `field_pred`, `field_gold`.

    Raises:
        DataError: counts differ or a gold is not an object or array.
        ConfigError: the schema uses keywords outside the supported subset.
    """
    if len(predictions) != len(golds):
        raise DataError(f"{len(predictions)} predictions but {len(golds)} golds")
    if schema is not None:
        check_schema_keywords(schema)
    parsed = valid = exact = 0
    fields = Counter()
    for i, (prediction, gold) in enumerate(zip(predictions, golds, strict=True)):
        if not isinstance(gold, (dict, list)):
            raise DataError(f"gold #{i} must be a JSON object or array, got {type(gold).__name__}")
        ok, value = parse_json_output(prediction)
        pred_fields = Counter(flatten_json(value)) if ok else Counter()
        gold_fields = Counter(flatten_json(gold))
        fields["tp"] += sum((pred_fields & gold_fields).values())
        fields["pred"] += pred_fields.total()
        fields["gold"] += gold_fields.total()
        parsed += ok
        valid += ok and schema is not None and not schema_errors(value, schema)
        exact += ok and _canonical(value) == _canonical(gold)
    n = len(predictions)
    tp, n_pred, n_gold = fields["tp"], fields["pred"], fields["gold"]
    precision, recall, f1 = prf(tp, n_pred, n_gold)
    scores: dict[str, float | int] = {"n": n, "parse_rate": 100 * parsed / n if n else 0.0}
    if schema is not None:
        scores["schema_valid"] = 100 * valid / n if n else 0.0
    scores.update(
        field_precision=precision,
        field_recall=recall,
        field_f1=f1,
        exact_match=100 * exact / n if n else 0.0,
        field_tp=tp,
        field_pred=n_pred,
        field_gold=n_gold,
    )
    return scores
