"""Where data comes from: the project's own files, or anything the `datasets` library reads.

A *source* is one of:

- from Python, a `datasets.Dataset`, a `DatasetDict` (its one split, or `train`), or a list of row dictionaries;
- a local JSONL file, read strictly by `readers.iter_jsonl` (errors name the line);
- a local folder written by `Dataset.save_to_disk`, or a `.parquet`, `.csv`, `.json` or `.arrow` file, read by
  `datasets`;
- a hub id `owner/name`, optionally with a config and a split: `AmazonScience/massive:de-DE:train`,
  `openlanguagedata/flores_plus:all:dev`. `datasets` reads its cache first and needs the network otherwise.

(The parallel TSV and the FLORES-style folder of one file per language are read in `readers`.)

`records` yields every row as a plain dictionary with where it came from (a file and line, or a dataset and a
1-based row number), ClassLabel columns decoded to their names (MASSIVE stores the intent as a class index), and
columns renamed by a mapping `{field: column}` for data whose columns have other names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from midalign.errors import DataError

# File types `datasets` reads (the builder to use); JSONL stays with the project's strict reader.
DATASETS_FILES = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".arrow": "arrow"}
# Suffixes of the project's own files: a missing one is a missing file, not a hub id.
LOCAL_FILES = {".jsonl", ".tsv", ".txt", ".yaml", ".yml"}
# owner/name[:config[:split]]; a split may be sliced (`train[:1000]`).
HUB_ID = re.compile(r"(?P<name>[A-Za-z0-9][\w.-]*/[\w.-]+)(?::(?P<config>[^:\s]+))?(?::(?P<split>[^:\s]+))?")
Source = Any  # str | os.PathLike | datasets.Dataset | datasets.DatasetDict | list[dict]


def describe(source: Source) -> str:
    """A short name of a source for error messages: its path or hub id, the names of several (`a.jsonl, b.tsv`),
    or `<Dataset>` / `<list>`."""
    if isinstance(source, str | os.PathLike):
        return str(source)
    if isinstance(source, list | tuple) and source and all(isinstance(s, str | os.PathLike) for s in source):
        return ", ".join(map(str, source))
    return f"<{type(source).__name__}>"


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / f).is_file() for f in ("state.json", "dataset_dict.json"))


def _one_split(data, name: str, split: str | None):
    """A `Dataset` from a `DatasetDict`: the named split, its only split, or `train`."""
    import datasets

    if not isinstance(data, datasets.DatasetDict):
        return data
    if split is None:
        split = next(iter(data)) if len(data) == 1 else "train"
    if split not in data:
        raise DataError(f"no split {split!r}; splits: {sorted(data)}", path=name)
    return data[split]


def open_dataset(source: Source, *, split: str | None = None):
    """The `datasets.Dataset` a source names, or None for a local JSONL file (read by the strict reader).

    Raises:
        DataError: a path that does not exist and is no hub id, a missing split, or a hub dataset that cannot be
            loaded (the message names the source and `datasets`' reason).
    """
    import datasets

    if isinstance(source, datasets.Dataset | datasets.DatasetDict):
        return _one_split(source, describe(source), split)
    if isinstance(source, list | tuple):
        return datasets.Dataset.from_list([dict(row) for row in source])
    name = str(source)
    path = Path(source)
    if is_saved_dataset(path):
        return _one_split(datasets.load_from_disk(str(path)), name, split)
    if path.is_file() and path.suffix.lower() in DATASETS_FILES:
        try:
            loaded = datasets.load_dataset(DATASETS_FILES[path.suffix.lower()], data_files=str(path), split="train")
        except Exception as e:  # datasets raises many types for one meaning: this file cannot be read
            raise DataError(f"cannot be read as {path.suffix.lower()[1:]}: {e}", path=name) from None
        return loaded
    if path.is_dir():  # a folder reaches here only when it is no saved dataset (the readers take theirs before)
        raise DataError(
            "is a folder, but not one written by Dataset.save_to_disk (it has no state.json or dataset_dict.json); "
            "give that, or a .jsonl, .parquet, .csv, .json or .arrow file",
            path=name,
        )
    if path.exists():
        return None
    hub = HUB_ID.fullmatch(name)
    looks_like_file = name.startswith(("/", ".", "~")) or path.suffix.lower() in {*DATASETS_FILES, *LOCAL_FILES}
    if hub is None or looks_like_file:
        raise DataError("file not found (nor is it a hub id owner/name[:config[:split]])", path=name)
    try:
        loaded = datasets.load_dataset(hub["name"], hub["config"], split=hub["split"] or split)
    except Exception as e:  # network, missing config or split, or a loading script: one meaning for the user
        raise DataError(f"could not load from the hub: {e}", path=name) from None
    return _one_split(loaded, name, None)


def _decoders(dataset) -> dict:
    """ClassLabel columns and the function that names their values."""
    import datasets

    return {c: f.int2str for c, f in dataset.features.items() if isinstance(f, datasets.ClassLabel)}


def _rename(row: dict, columns: Mapping[str, str] | None, name: str, number: int) -> dict:
    if not columns:
        return row
    missing = [column for column in columns.values() if column not in row]
    if missing:
        raise DataError(f"column {missing[0]!r} not found; columns: {sorted(row)}", path=name, line=number)
    renamed = {k: v for k, v in row.items() if k not in columns.values()}
    renamed.update({field: row[column] for field, column in columns.items()})
    return renamed


def records(
    source: Source, *, columns: Mapping[str, str] | None = None, split: str | None = None
) -> Iterator[tuple[str, int, dict]]:
    """`(origin, 1-based line or row number, row)` for every row of a source (see the module docstring).

    Raises:
        DataError: as `open_dataset`, a malformed JSONL line, or a column of `columns` that the data lacks.
    """
    from midalign.data.readers import iter_jsonl

    name = describe(source)
    if isinstance(source, list | tuple):  # rows from Python, read as they are
        for number, row in enumerate(source, start=1):
            if not isinstance(row, Mapping):
                raise DataError(f"expected a row dictionary, got {type(row).__name__}", path=name, line=number)
            yield name, number, _rename(dict(row), columns, name, number)
        return
    dataset = open_dataset(source, split=split)
    if dataset is None:
        for number, obj in iter_jsonl(source):
            yield name, number, _rename(obj, columns, name, number)
        return
    decode = _decoders(dataset)
    for number, row in enumerate(dataset, start=1):
        row = dict(row)
        for column, to_name in decode.items():
            if isinstance(row.get(column), int) and row[column] >= 0:  # -1 marks a missing label
                row[column] = to_name(row[column])
        yield name, number, _rename(row, columns, name, number)


def parse_columns(items: list[str] | Mapping[str, str] | None, flag: str) -> dict[str, str] | None:
    """`["prompt=question", ...]` (the CLI's form) or a mapping as `{field: column}`."""
    from midalign.errors import ConfigError

    if items is None or isinstance(items, Mapping):
        return dict(items) if items else None
    mapping = {}
    for item in items:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise ConfigError(f"{flag}: expected FIELD=COLUMN, got {item!r}")
        mapping[field] = column
    return mapping
