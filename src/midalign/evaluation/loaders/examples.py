"""The canonical example shape (see `midalign.evaluation.loaders`), checked by `normalize_example`, and JSONL files
of such examples, also in the training format (`prompt`/`completion` or `messages`)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from midalign.data.readers import iter_jsonl, parse_messages
from midalign.errors import ConfigError, DataError
from midalign.evaluation.languages import language_name
from midalign.evaluation.slots import format_slots, parse_slot_output
from midalign.files import check_name, loads_json

TASKS = ("slot", "mt", "json")


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """The JSON objects of a JSONL file with their 1-based line numbers; blank lines are skipped.

    Raises:
        DataError: missing file, invalid UTF-8, a line that is not JSON, or not a JSON object.
    """
    return list(iter_jsonl(path))


def require_field(row: Mapping, name: str, kind: type, where: dict, *, required: bool = True) -> Any:
    """`row[name]`, a `kind` (a non-blank string for `str`); None when absent and not `required`."""
    if name not in row or row[name] is None:
        if required:
            raise DataError("missing", field=name, **where)
        return None
    if not isinstance(row[name], kind) or (isinstance(row[name], str) and not row[name].strip()):
        raise DataError(f"expected a non-empty {kind.__name__}", field=name, **where)
    return row[name]


def lang_field(row: Mapping, name: str, where: dict) -> str:
    """A language label: it becomes a table row and may name files, so the same rule as system names."""
    try:
        return check_name(require_field(row, name, str, where), "language")
    except ConfigError as e:
        raise DataError(str(e), field=name, **where) from None


def _slot_gold(gold: Any, where: dict) -> str:
    if isinstance(gold, list):
        if not all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in gold):
            raise DataError("a slot list must hold [type, value] string pairs", field="gold", **where)
        try:
            return format_slots([tuple(p) for p in gold])
        except DataError as e:
            raise DataError(str(e), field="gold", **where) from e
    if not isinstance(gold, str):
        raise DataError("expected a slot string or a list of [type, value] pairs", field="gold", **where)
    malformed = parse_slot_output(gold).malformed
    if malformed:
        raise DataError(f"malformed slot fragment(s) {list(malformed)}", field="gold", **where)
    return gold


def _json_gold(gold: Any, where: dict) -> Any:
    if isinstance(gold, str):
        try:
            gold = loads_json(gold, field="gold", allow_nan=False, **where)
        except DataError as e:
            reason = e.reason.removeprefix("invalid JSON: ")
            raise DataError(f"gold string is not JSON ({reason})", field="gold", **where) from None
    else:  # an object or array given as such: read strictly already, but NaN/Infinity and depth matter here
        try:
            loads_json(json.dumps(gold), field="gold", allow_nan=False, **where)
        except (ValueError, TypeError, RecursionError) as e:  # DataError is a ValueError
            reason = e.reason if isinstance(e, DataError) else str(e)
            raise DataError(f"gold is not JSON ({reason})", field="gold", **where) from None
    if not isinstance(gold, (dict, list)):
        raise DataError("gold must be a JSON object or array", field="gold", **where)
    return gold


def _from_training_format(row: Mapping[str, Any], where: dict) -> Mapping[str, Any]:
    # Held-out task data in the training format (`prompt`/`completion` or `messages`) is read as is,
    # so evaluation prompts are the training prompts.
    if "completion" in row and "gold" not in row:
        return {k: v for k, v in row.items() if k != "completion"} | {"gold": row["completion"]}
    if "messages" not in row:
        return row
    try:  # the training reader's checks, then the one turn an example is
        messages = parse_messages(row["messages"], None, None, "messages")
    except DataError as e:
        raise DataError(e.reason, field=e.field, **where) from None
    roles = [m["role"] for m in messages]
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]):
        raise DataError("expected [system,] user, assistant messages", field="messages", **where)
    example = {k: v for k, v in row.items() if k != "messages"}
    example.update(prompt=messages[-2]["content"], gold=messages[-1]["content"])
    if roles[0] == "system":
        example["system_prompt"] = messages[0]["content"]
    return example


def normalize_example(
    row: Mapping[str, Any], task: str, *, path: str | None = None, line: int | None = None
) -> dict[str, Any]:
    """Check one example for `task` and return it in the canonical shape (see `midalign.evaluation.loaders`).

    Args:
        row: the raw record.
        task: `slot`, `mt` or `json`.
        path, line: where the record came from, for error messages.

    Raises:
        DataError: a missing or wrongly typed field, a malformed gold, an unknown `tgt_lang`.
        ConfigError: an unknown task.
    """
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    where = {"path": path, "line": line}
    row = _from_training_format(row, where)
    example = dict(row)
    lang_field(row, "lang", where)
    require_field(row, "prompt", str, where)
    require_field(row, "system_prompt", str, where, required=False)
    if "gold" not in row or row["gold"] is None:
        raise DataError("missing", field="gold", **where)
    if task == "slot":
        example["gold"] = _slot_gold(row["gold"], where)
        example["utt"] = require_field(row, "utt", str, where, required=False) or row["prompt"]
    elif task == "mt":
        require_field(row, "gold", str, where)
        tgt = require_field(row, "tgt_lang", str, where)
        for name in ("src_lang", "source"):
            require_field(row, name, str, where, required=False)
        try:
            language_name(tgt)
        except DataError as e:
            raise DataError(str(e), field="tgt_lang", **where) from e
    else:
        example["gold"] = _json_gold(row["gold"], where)
    return example


def load_examples(source, task: str, *, columns: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Examples for `task` from any `midalign.data.sources` source: a JSONL file (one object per line), a
    `datasets.Dataset`, a `save_to_disk` folder, a parquet/CSV/JSON file or a hub id. Fields: see
    `midalign.evaluation.loaders`; `columns` maps them to the source's column names (`{"prompt": "text"}`).

    Example line for `slot`:
        `{"lang": "de-DE", "prompt": "weck mich um neun", "gold": "time: neun"}`
    """
    from midalign.data.sources import describe, records

    examples = [
        normalize_example(row, task, path=origin, line=n) for origin, n, row in records(source, columns=columns)
    ]
    if not examples:
        raise DataError("no examples", path=describe(source))
    return examples
