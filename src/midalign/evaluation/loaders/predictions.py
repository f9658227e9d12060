"""Predictions files to re-score: the JSONL `evaluate` writes, or predictions aligned with a data file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from midalign.data.readers import iter_lines
from midalign.errors import DataError
from midalign.evaluation.loaders.examples import normalize_example, read_jsonl


def load_predictions(path: str | os.PathLike, task: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Examples and predictions from a predictions JSONL that `evaluate` wrote (re-scoring).

    Each line is an example plus a string `prediction` and the name of the `system` that made it.

    Raises:
        DataError: as `load_examples`, or a line without a string `prediction`.
    """
    _check_not_folder(path)
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
    _check_not_folder(path)
    rows = None
    if Path(path).suffix.lower() in (".jsonl", ".json"):
        rows = read_jsonl(path)
        for number, row in rows:
            if not isinstance(row.get("prediction"), str):
                raise DataError("missing or not a string", path=str(path), line=number, field="prediction")
        predictions = [row["prediction"] for _, row in rows]
    else:
        predictions = [text for _, text in iter_lines(path)]
    if len(predictions) != expected:
        raise DataError(
            f"{len(predictions)} predictions but the data has {expected} examples",
            path=str(path),
            line=min(len(predictions), expected) + 1,
        )
    if rows is not None and examples is not None:
        return _match_by_identity(path, rows, examples) or predictions
    return predictions


def _check_not_folder(path: str | os.PathLike) -> None:
    # The shared line reader calls anything that is not a file "not found", which misleads for a folder.
    if Path(path).is_dir():
        raise DataError("is a folder, not a predictions file", path=str(path))


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
