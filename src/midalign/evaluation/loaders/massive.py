"""MASSIVE slot-filling examples, from its JSONL release or the Hugging Face dataset."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from midalign.errors import ConfigError, DataError
from midalign.evaluation.languages import MASSIVE_LOCALES
from midalign.evaluation.loaders.examples import lang_field, read_jsonl, require_field
from midalign.evaluation.slots import format_slots, parse_annot_utt

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


def _massive_example(row: Mapping, where: dict, *, with_intent: bool, system_prompt: str | None) -> dict[str, Any]:
    locale = lang_field(row, "locale", where)
    utt = require_field(row, "utt", str, where)
    annot_utt = require_field(row, "annot_utt", str, where)
    intent = require_field(row, "intent", str, where) if with_intent else None
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
    repeated = sorted({loc for loc in locales or () if list(locales).count(loc) > 1})
    if repeated:
        raise ConfigError(f"MASSIVE locale {repeated[0]!r} is given twice; give each locale once")
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
    root = Path(path)
    if root.is_dir():
        files = [root / f"{loc}.jsonl" for loc in locales] if locales else sorted(root.glob("*.jsonl"))
    else:
        files = [root]
    rows = ((str(file), number, row) for file in files for number, row in read_jsonl(file))  # read lazily
    return _collect(rows, str(path), locales, partition, with_intent, system_prompt)


def _collect(rows, name: str, locales, partition, with_intent: bool, system_prompt: str | None) -> list[dict]:
    """The examples of `(origin, row number, row)` triples in these locales and this partition (None: all); the
    one loop of both MASSIVE readers."""
    _check_locales(locales)  # before the first row is read: `rows` is lazy
    system_prompt = system_prompt or (MASSIVE_INTENT_SYSTEM_PROMPT if with_intent else MASSIVE_SYSTEM_PROMPT)
    examples = []
    for origin, number, row in rows:
        where = {"path": origin, "line": number}
        # Rows are filtered on these fields: a malformed one is an error, not a silently skipped row.
        if partition is not None and require_field(row, "partition", str, where) != partition:
            continue
        if locales and require_field(row, "locale", str, where) not in locales:
            continue
        examples.append(_massive_example(row, where, with_intent=with_intent, system_prompt=system_prompt))
    missing = [loc for loc in locales or () if not any(e["lang"] == loc for e in examples)]
    if missing or not examples:
        within = f" in partition {partition!r}" if partition is not None else ""
        raise DataError(f"no examples for locale(s) {missing or 'any'}{within}", path=name)
    return examples


def massive_task_record(row: Mapping, path: str, line: int, *, with_intent: bool = False) -> dict[str, Any]:
    """A MASSIVE row as a training row: the system prompt, the utterance, and the slots as the answer (chat form,
    so it needs a tokenizer with a chat template; the same prompt `midalign evaluate --format massive` uses)."""
    example = _massive_example(
        row,
        {"path": path, "line": line},
        with_intent=with_intent,
        system_prompt=MASSIVE_INTENT_SYSTEM_PROMPT if with_intent else MASSIVE_SYSTEM_PROMPT,
    )
    return {
        "messages": [
            {"role": "system", "content": example["system_prompt"]},
            {"role": "user", "content": example["prompt"]},
            {"role": "assistant", "content": example["gold"]},
        ]
    }


def load_massive(
    source,
    *,
    locales: Sequence[str] | None = None,
    with_intent: bool = False,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """MASSIVE slot-filling examples from any `midalign.data.sources` source with MASSIVE's columns (`locale`,
    `utt`, `annot_utt`, `intent` as a name or a ClassLabel): a `datasets.Dataset`, a `save_to_disk` folder, a
    parquet file, or a hub id such as `AmazonScience/massive:de-DE:test`.

    Raises:
        DataError: a malformed row (named by its 1-based row number), unknown locales, or a requested locale
            without examples.
    """
    from midalign.data.sources import describe, records

    return _collect(records(source), describe(source), locales, None, with_intent, system_prompt)


def load_massive_hf(
    locales: Sequence[str],
    *,
    partition: str = "test",
    with_intent: bool = False,
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """MASSIVE slot-filling examples from the Hugging Face dataset `AmazonScience/massive`, one config per locale.

    Needs network access (or a populated `datasets` cache). Same arguments as `load_massive_jsonl`;
    `partition` uses MASSIVE's names (`dev` reads the `validation` split).

    Raises:
        DataError: unknown locales or partition, or the dataset could not be loaded (then download the JSONL
            release and use `load_massive_jsonl`).
    """
    _check_locales(locales)
    if partition not in _HF_SPLITS:
        raise DataError(f"unknown MASSIVE partition {partition!r}; choose one of {sorted(_HF_SPLITS)}")
    return [
        example
        for locale in locales
        for example in load_massive(
            f"AmazonScience/massive:{locale}:{_HF_SPLITS[partition]}",
            with_intent=with_intent,
            system_prompt=system_prompt,
        )
    ]
