"""Evaluation data: MASSIVE (JSONL on disk or the HF dataset), WMT/FLORES plain text, generic JSONL.

Every loader returns a list of example dictionaries, the one shape the rest of the package uses:

- all tasks: `lang` (the table row: a locale such as `de-DE`, or a direction such as `de-en`),
  `prompt` (the user message), `gold`, optionally `system_prompt` and `id`;
- `slot`: `gold` is `[intent | ]type: value; ...` or `None`; `utt`, the utterance the values are
  matched onto, defaults to `prompt`;
- `mt`: `gold` is the reference; `tgt_lang` (picks the BLEU tokenizer), `src_lang` and `source`
  (needed by COMET);
- `json`: `gold` is a JSON object or array (a string holding one is parsed).

Held-out data in the training format is read too: `completion` stands for `gold`, and
`messages` ([system,] user, assistant) give `system_prompt`, `prompt` and `gold`.

Bad input raises `DataError` naming the file, the 1-based line and the field.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from midalign.data.readers import iter_jsonl
from midalign.errors import ConfigError, DataError
from midalign.evaluation.languages import MASSIVE_LOCALES, language_name
from midalign.evaluation.slots import format_slots, parse_annot_utt, parse_slot_output
from midalign.io import check_name, loads_json, read_bytes_checked

TASKS = ("slot", "mt", "json")

MASSIVE_SYSTEM_PROMPT = (
    "Given a command from the user, a voice assistant extracts the entities needed to carry out the command. "
    "List each entity as 'type: value', with the value copied word for word from the command, separated by "
    "'; '. Answer 'None' when the command has no entity."
)
MASSIVE_INTENT_SYSTEM_PROMPT = (
    MASSIVE_SYSTEM_PROMPT + " Start the answer with the intent of the command followed by ' | '."
)
# MASSIVE's JSONL calls the validation split "dev", the Hugging Face dataset calls it "validation".
_HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}


def translation_system_prompt(src_lang: str, tgt_lang: str) -> str:
    """The system prompt for one direction, as in the paper's scripts: "Translate ... from X to Y."."""
    return f"Translate the following sentences from {language_name(src_lang)} to {language_name(tgt_lang)}."


def _read_lines(path: str | os.PathLike) -> list[str]:
    path = Path(path)
    data = read_bytes_checked(path)
    lines = []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").splitlines(), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 ({e.reason})", path=str(path), line=number) from e
    return lines


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """The JSON objects of a JSONL file with their 1-based line numbers; blank lines are skipped.

    Raises:
        DataError: missing file, invalid UTF-8, a line that is not JSON, or not a JSON object.
    """
    return list(iter_jsonl(path))


def _field(row: Mapping, name: str, kind: type, where: dict, *, required: bool = True) -> Any:
    if name not in row or row[name] is None:
        if required:
            raise DataError("missing", field=name, **where)
        return None
    if not isinstance(row[name], kind) or (isinstance(row[name], str) and not row[name].strip()):
        raise DataError(f"expected a non-empty {kind.__name__}", field=name, **where)
    return row[name]


def _lang_field(row: Mapping, name: str, where: dict) -> str:
    # Language labels become table rows and may name files: the same rule as system names.
    try:
        return check_name(_field(row, name, str, where), "language")
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
    messages = row["messages"]
    roles = [m.get("role") if isinstance(m, dict) else None for m in messages] if isinstance(messages, list) else None
    if roles not in (["user", "assistant"], ["system", "user", "assistant"]) or not all(
        isinstance(m.get("content"), str) for m in messages
    ):
        raise DataError("expected [system,] user, assistant messages with string contents", field="messages", **where)
    example = {k: v for k, v in row.items() if k != "messages"}
    example.update(prompt=messages[-2]["content"], gold=messages[-1]["content"])
    if roles[0] == "system":
        example["system_prompt"] = messages[0]["content"]
    return example


def normalize_example(
    row: Mapping[str, Any], task: str, *, path: str | None = None, line: int | None = None
) -> dict[str, Any]:
    """Check one example for `task` and return it in the canonical shape (see the module docstring).

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
    _lang_field(row, "lang", where)
    _field(row, "prompt", str, where)
    _field(row, "system_prompt", str, where, required=False)
    if "gold" not in row or row["gold"] is None:
        raise DataError("missing", field="gold", **where)
    if task == "slot":
        example["gold"] = _slot_gold(row["gold"], where)
        example["utt"] = _field(row, "utt", str, where, required=False) or row["prompt"]
    elif task == "mt":
        _field(row, "gold", str, where)
        tgt = _field(row, "tgt_lang", str, where)
        for name in ("src_lang", "source"):
            _field(row, name, str, where, required=False)
        try:
            language_name(tgt)
        except DataError as e:
            raise DataError(str(e), field="tgt_lang", **where) from e
    else:
        example["gold"] = _json_gold(row["gold"], where)
    return example


def load_jsonl(path: str | os.PathLike, task: str) -> list[dict[str, Any]]:
    """Examples for `task` from a JSONL file, one object per line (fields: see the module docstring).

    Example line for `slot`:
        `{"lang": "de-DE", "prompt": "weck mich um neun", "gold": "time: neun"}`
    """
    examples = [normalize_example(row, task, path=str(path), line=n) for n, row in read_jsonl(path)]
    if not examples:
        raise DataError("no examples", path=str(path))
    return examples


def _massive_example(row: Mapping, where: dict, *, with_intent: bool, system_prompt: str | None) -> dict[str, Any]:
    locale = _lang_field(row, "locale", where)
    utt = _field(row, "utt", str, where)
    annot_utt = _field(row, "annot_utt", str, where)
    intent = _field(row, "intent", str, where) if with_intent else None
    try:
        _, slots = parse_annot_utt(annot_utt)
        gold = format_slots(slots, intent=intent)
    except DataError as e:
        raise DataError(str(e), field="annot_utt", **where) from e
    example = {"id": row.get("id"), "lang": locale, "prompt": utt, "utt": utt, "gold": gold}
    if system_prompt:
        example["system_prompt"] = system_prompt
    return example


def _check_locales(locales: Sequence[str] | None) -> None:
    unknown = [loc for loc in locales or () if loc not in MASSIVE_LOCALES]
    if unknown:
        raise DataError(f"unknown MASSIVE locale(s) {unknown}; MASSIVE has {', '.join(MASSIVE_LOCALES)}")


def load_massive_jsonl(
    path: str | os.PathLike,
    *,
    locales: Sequence[str] | None = None,
    partition: str | None = "test",
    with_intent: bool = False,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """MASSIVE slot-filling examples from its JSONL release (one file, or a folder of `<locale>.jsonl`).

    Gold slots come from `annot_utt` (`wake me up at [time : nine am]` -> `time: nine am`).

    Args:
        path: a `.jsonl` file, or the release's `data/` folder.
        locales: keep only these locales (in a folder, read only their files); None keeps all.
        partition: keep rows of this `partition` (`train`, `dev`, `test`); None keeps all.
        with_intent: prefix the gold with the row's `intent` (`alarm_set | time: nine am`).
        system_prompt: default `MASSIVE_SYSTEM_PROMPT` (or its intent variant).

    Raises:
        DataError: missing files, malformed lines or annotations, unknown locales, or a requested
            locale without examples.
    """
    _check_locales(locales)
    system_prompt = system_prompt or (MASSIVE_INTENT_SYSTEM_PROMPT if with_intent else MASSIVE_SYSTEM_PROMPT)
    root = Path(path)
    if root.is_dir():
        files = [root / f"{loc}.jsonl" for loc in locales] if locales else sorted(root.glob("*.jsonl"))
    else:
        files = [root]
    examples = []
    for file in files:
        for number, row in read_jsonl(file):
            where = {"path": str(file), "line": number}
            # Rows are filtered on these fields: a malformed one is an error, not a silently skipped row.
            if partition is not None and _field(row, "partition", str, where) != partition:
                continue
            if locales and _field(row, "locale", str, where) not in locales:
                continue
            examples.append(_massive_example(row, where, with_intent=with_intent, system_prompt=system_prompt))
    missing = [loc for loc in locales or () if not any(e["lang"] == loc for e in examples)]
    if missing or not examples:
        raise DataError(f"no examples for locale(s) {missing or 'any'} in partition {partition!r}", path=str(path))
    return examples


def load_massive_hf(
    locales: Sequence[str],
    *,
    partition: str = "test",
    with_intent: bool = False,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """MASSIVE slot-filling examples from the Hugging Face dataset `AmazonScience/massive`.

    Needs network access (or a populated `datasets` cache). Same arguments as `load_massive_jsonl`;
    `partition` uses MASSIVE's names (`dev` reads the `validation` split).

    Raises:
        DataError: unknown locales or partition.
        ConfigError: the dataset could not be loaded (recent `datasets` no longer run its loading
            script; then download the JSONL release and use `load_massive_jsonl`).
    """
    import datasets

    _check_locales(locales)
    if partition not in _HF_SPLITS:
        raise DataError(f"unknown MASSIVE partition {partition!r}; choose one of {sorted(_HF_SPLITS)}")
    system_prompt = system_prompt or (MASSIVE_INTENT_SYSTEM_PROMPT if with_intent else MASSIVE_SYSTEM_PROMPT)
    examples = []
    for locale in locales:
        try:
            dataset = datasets.load_dataset("AmazonScience/massive", locale, split=_HF_SPLITS[partition])
        except Exception as e:  # network, cache, or loading-script errors all mean the same to the user
            raise ConfigError(
                f"could not load AmazonScience/massive ({locale}): {e}; "
                "download the MASSIVE JSONL release and use the 'massive' format instead"
            ) from e
        # The HF dataset stores the intent as a class index.
        intent_feature = dataset.features["intent"]
        for number, row in enumerate(dataset, start=1):
            row = dict(row)
            if isinstance(row.get("intent"), int):
                row["intent"] = intent_feature.int2str(row["intent"])
            where = {"path": f"AmazonScience/massive:{locale}:{_HF_SPLITS[partition]}", "line": number}
            examples.append(_massive_example(row, where, with_intent=with_intent, system_prompt=system_prompt))
    return examples


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """`["de-en", "deu_Latn-eng_Latn"]` -> `[("de", "en"), ("deu_Latn", "eng_Latn")]`.

    Raises:
        ConfigError: a pair is not exactly `SRC-TGT` (codes themselves cannot contain `-`).
    """
    parsed = []
    for pair in pairs:
        parts = pair.split("-")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"language pair {pair!r} must be SRC-TGT, e.g. de-en or deu_Latn-eng_Latn")
        parsed.append((check_name(parts[0], "language code"), check_name(parts[1], "language code")))
    return parsed


def load_parallel_text(
    source_path: str | os.PathLike, reference_path: str | os.PathLike, *, src_lang: str, tgt_lang: str
) -> list[dict[str, Any]]:
    """Translation examples from two aligned plain-text files, one sentence per line (WMT/FLORES style).

    `lang` is the direction `src-tgt`; the system prompt is `translation_system_prompt`.

    Raises:
        DataError: missing files, different line counts, empty lines, invalid UTF-8, unknown languages.
    """
    system_prompt = translation_system_prompt(src_lang, tgt_lang)
    sources, references = _read_lines(source_path), _read_lines(reference_path)
    if len(sources) != len(references):
        raise DataError(
            f"{len(references)} reference lines but the source {source_path} has {len(sources)}",
            path=str(reference_path),
            line=min(len(sources), len(references)) + 1,
        )
    examples = []
    for number, (source, reference) in enumerate(zip(sources, references, strict=True), start=1):
        for text, file in ((source, source_path), (reference, reference_path)):
            if not text.strip():
                raise DataError("empty line", path=str(file), line=number)
        examples.append(
            {
                "id": f"{src_lang}-{tgt_lang}:{number}",
                "lang": f"{src_lang}-{tgt_lang}",
                "src_lang": src_lang,
                "tgt_lang": tgt_lang,
                "source": source,
                "prompt": source,
                "system_prompt": system_prompt,
                "gold": reference,
            }
        )
    if not examples:
        raise DataError("no sentences", path=str(source_path))
    return examples


def load_text_pairs(pattern: str, pairs: Sequence[str]) -> list[dict[str, Any]]:
    """Translation examples for several directions from files named by a pattern.

    Args:
        pattern: a path with `{lang}` (the file's language) and optionally `{src}` / `{tgt}`, e.g.
            `wmt23/{src}{tgt}/test.{src}-{tgt}.{lang}`: the source file is the pattern with
            `lang=src`, the reference with `lang=tgt`.
        pairs: directions such as `de-en`.

    Raises:
        ConfigError: the pattern lacks `{lang}` or has other placeholders; a malformed pair.
        DataError: as `load_parallel_text`.
    """
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(pattern) if name]
    except ValueError as e:  # an unmatched brace
        raise ConfigError(f"pattern {pattern!r}: {e}") from None
    if any(name not in ("lang", "src", "tgt") or spec or conversion for name, spec, conversion in fields):
        raise ConfigError(f"pattern {pattern!r} may only use {{lang}}, {{src}} and {{tgt}}")
    if "lang" not in {name for name, _, _ in fields}:
        raise ConfigError(f"pattern {pattern!r} must contain {{lang}}")
    examples = []
    for src, tgt in parse_pairs(pairs):
        source_path = pattern.format(lang=src, src=src, tgt=tgt)
        reference_path = pattern.format(lang=tgt, src=src, tgt=tgt)
        examples += load_parallel_text(source_path, reference_path, src_lang=src, tgt_lang=tgt)
    return examples


def load_flores(root: str | os.PathLike, pairs: Sequence[str], *, split: str = "devtest") -> list[dict[str, Any]]:
    """Translation examples from a FLORES-101/200 folder: `<root>/<split>/<code>.<split>`.

    Args:
        root: the unpacked dataset folder (holding `dev/` and `devtest/`).
        pairs: directions in the folder's codes, e.g. `deu_Latn-eng_Latn`.
        split: `dev` or `devtest`.
    """
    return load_text_pairs(str(Path(root) / split / f"{{lang}}.{split}"), pairs)


def load_predictions(path: str | os.PathLike, task: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Examples and predictions from a predictions JSONL that `evaluate` wrote (re-scoring).

    Each line is an example plus a string `prediction` and the name of the `system` that made it.

    Raises:
        DataError: as `load_jsonl`, or a line without a string `prediction`.
    """
    examples, predictions = [], []
    for number, row in read_jsonl(path):
        prediction = row.get("prediction")
        if not isinstance(prediction, str):
            raise DataError("missing or not a string", path=str(path), line=number, field="prediction")
        fields = {k: v for k, v in row.items() if k not in ("prediction", "system")}
        examples.append(normalize_example(fields, task, path=str(path), line=number))
        predictions.append(prediction)
    if not examples:
        raise DataError("no predictions", path=str(path))
    return examples, predictions


def read_prediction_lines(
    path: str | os.PathLike, expected: int, examples: Sequence[Mapping[str, Any]] | None = None
) -> list[str]:
    """Predictions aligned with a data file: JSONL with a `prediction` field (`.jsonl`, `.json`), or
    plain text with one prediction per line (anything else).

    JSONL rows that carry the example's identity are matched to `examples` by it, not by line number, so a
    shuffled or re-sorted predictions file scores as it should: by `(lang, id)` when every row and example has
    an `id`, else by `(lang, prompt)` (identical prompts in order). A row whose `prompt` or `lang` contradicts
    the example its `id` names is refused. Plain text, and rows without identity fields, go by line number.

    Args:
        path: the predictions file.
        expected: how many examples the data has.
        examples: the data's examples, for matching by identity.

    Raises:
        DataError: a different count (naming the first extra or missing line), a row that matches no example
            or contradicts the one it names, an example predicted twice, or a malformed line.
    """
    rows = None
    if Path(path).suffix.lower() in (".jsonl", ".json"):
        rows = read_jsonl(path)
        for number, row in rows:
            if not isinstance(row.get("prediction"), str):
                raise DataError("missing or not a string", path=str(path), line=number, field="prediction")
        predictions = [row["prediction"] for _, row in rows]
    else:
        predictions = _read_lines(path)
    if len(predictions) != expected:
        raise DataError(
            f"{len(predictions)} predictions but the data has {expected} examples",
            path=str(path),
            line=min(len(predictions), expected) + 1,
        )
    if rows is not None and examples is not None:
        return _match_by_identity(path, rows, examples) or predictions
    return predictions


def _identity(fields: Sequence[str], item: Mapping[str, Any]) -> tuple:
    return tuple(str(item.get(f)) for f in fields)


def _match_by_identity(path, rows: list[tuple[int, dict]], examples: Sequence[Mapping[str, Any]]) -> list[str] | None:
    """Predictions in the order of `examples`, matched by identity; None when the rows carry none."""
    if all("id" in row for _, row in rows) and all("id" in e for e in examples):
        fields = ("lang", "id") if all("lang" in row for _, row in rows) else ("id",)
        checked = ("prompt", "lang")
    elif all("prompt" in row for _, row in rows):
        fields = ("lang", "prompt") if all("lang" in row for _, row in rows) else ("prompt",)
        checked = ()
    else:
        return None
    slots: dict[tuple, list[int]] = {}
    for index, example in enumerate(examples):
        slots.setdefault(_identity(fields, example), []).append(index)
    matched: list[str | None] = [None] * len(examples)
    for number, row in rows:
        key = _identity(fields, row)
        free = slots.get(key)
        if not free:
            what = "no example" if key not in slots else "an example already predicted on an earlier line"
            shown = ", ".join(f"{f} {v!r}" for f, v in zip(fields, key, strict=True))
            raise DataError(f"{shown} matches {what} of the data", path=str(path), line=number, field=fields[-1])
        index = free.pop(0)
        for f in checked:
            if f in row and f in examples[index] and row[f] != examples[index][f]:
                raise DataError(
                    f"{f} {row[f]!r} contradicts the data's {examples[index][f]!r} for {fields[-1]} {key[-1]!r}",
                    path=str(path),
                    line=number,
                    field=f,
                )
        matched[index] = row["prediction"]
    return matched  # every slot is filled: the counts are equal and no row took a slot twice
