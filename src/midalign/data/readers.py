"""Readers for task examples and parallel data. Every malformed record raises `DataError` naming file/line/field.

Formats:
- task JSONL: `{"prompt": str, "completion": str}`, `{"messages": [{"role": ..., "content": ...}, ...]}`, TRL's
  conversational prompt-completion `{"prompt": [messages], "completion": [{"role": "assistant", ...}]}`, or the
  authors' released format `{"prefix": prompt, "text": completion, ...}`. Every format trains on the answer only
  (`completion_only`).
- parallel JSONL: `{"src", "tgt", "src_lang", "tgt_lang"}`; the authors' `{"text_parallel_0": X,
  "text_parallel_1": En}`; or multi-way rows `{"en": ..., "de": ..., ...}` expanded to pairs with a pivot.
- parallel TSV with a header naming the columns `src`, `tgt`, `src_lang`, `tgt_lang`.
- FLORES-style folder: one file per language (`eng_Latn.devtest`, `de.txt`), one sentence per line,
  aligned by line number.

JSON lines are read strictly (`midalign.files.loads_json`): a key repeated in one object is refused (plain
`json.loads` would silently keep the last value), as are runaway nesting and lone surrogates. Language codes
must be file-name safe (`midalign.files.check_name`: letters, digits, `.`, `_`, `-`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from midalign.data.sources import Source, describe, is_saved_dataset, records
from midalign.errors import ConfigError, DataError
from midalign.files import check_name, loads_json

ROLES = ("system", "user", "assistant")
PAIR_FIELDS = ("src", "tgt", "src_lang", "tgt_lang")
AUTHORS_PAIR_FIELDS = ("text_parallel_0", "text_parallel_1")
# Fields of multi-way rows that describe the row, not a language (FLORES+ carries id, URL, domain, topic,
# has_image, has_hyperlink). Compared case-insensitively; name Indonesian `ind_Latn` or `id-ID`, not `id`.
METADATA_FIELDS = frozenset({"id", "url", "domain", "topic", "has_image", "has_hyperlink", "split", "source"})


def _language_fields(obj: dict) -> list[str]:
    """The keys of a multi-way row that name languages (metadata fields are left out)."""
    return [key for key in obj if key.casefold() not in METADATA_FIELDS]


@dataclass(frozen=True)
class Pair:
    """One parallel sentence pair; `src` is the query side of the alignment loss (non-pivot language)."""

    src: str
    tgt: str
    src_lang: str
    tgt_lang: str
    origin: str = ""  # "file:line" for error messages


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of a UTF-8 file; a BOM is dropped, CRLF handled, bad bytes reported by line.

    The one line reader of every text format (JSONL, TSV, FLORES folders, plain-text translation and predictions).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder, not a file", path=str(path))
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; the generator may be abandoned half-way)
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=str(path)) from None
    with f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"invalid UTF-8 ({e.reason} at byte {e.start})", path=str(path), line=number) from None
            yield number, text.rstrip("\r\n")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield `(line_number, object)` for each non-blank line of a JSONL file."""
    path = Path(path)
    for number, text in iter_lines(path):
        if not text.strip():
            continue
        obj = loads_json(text, path=path, line=number)
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=str(path), line=number)
        yield number, obj


def _text(obj: dict, key: str, path, line, *, allow_empty: bool = False, field: str | None = None) -> str:
    field = field or key
    if key not in obj:
        raise DataError("missing", path=str(path), line=line, field=field)
    value = obj[key]
    if not isinstance(value, str):
        raise DataError(f"expected a string, got {type(value).__name__}", path=str(path), line=line, field=field)
    if not allow_empty and not value.strip():
        raise DataError("empty", path=str(path), line=line, field=field)
    return value


def _lang(code: str, path, line, field: str) -> str:
    """A language code, checked to be file-name safe (codes name files and cache entries downstream)."""
    try:
        return check_name(code, "language code")
    except ConfigError as e:
        raise DataError(str(e), path=str(path), line=line, field=field) from None


def parse_messages(value, path, line, field: str) -> list[dict]:
    """A validated list of `{"role", "content"}` messages (contents of assistant turns must be non-empty)."""
    if not isinstance(value, list) or not value:
        raise DataError("expected a non-empty list of messages", path=str(path), line=line, field=field)
    clean = []
    for i, m in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(m, dict):
            raise DataError("expected an object with role and content", path=str(path), line=line, field=where)
        role = m.get("role")
        if role not in ROLES:
            raise DataError(f"role {role!r} is not one of {ROLES}", path=str(path), line=line, field=f"{where}.role")
        content = _text(m, "content", path, line, allow_empty=role != "assistant", field=f"{where}.content")
        clean.append({"role": role, "content": content})
    return clean


def parse_task_record(obj: dict, path="<memory>", line: int | None = None) -> dict:
    """Validate one task record and return it as `{"prompt", "completion"}` or `{"messages"}`.

    `prompt` and `completion` are both strings, or both message lists (TRL's conversational prompt-completion
    form: the prompt's turns, then the assistant's answer).
    """
    if "messages" in obj:
        clean = parse_messages(obj["messages"], path, line, "messages")
        if clean[-1]["role"] != "assistant":
            raise DataError(
                "the last message must be the assistant's answer", path=str(path), line=line, field="messages"
            )
        return {"messages": clean}
    if "prefix" in obj and "prompt" not in obj:  # the authors' released format
        return {
            "prompt": _text(obj, "prefix", path, line, allow_empty=True),
            "completion": _text(obj, "text", path, line),
        }
    if isinstance(obj.get("prompt"), list) or isinstance(obj.get("completion"), list):
        prompt = parse_messages(obj.get("prompt"), path, line, "prompt")
        completion = parse_messages(obj.get("completion"), path, line, "completion")
        if [m["role"] for m in completion] != ["assistant"]:
            raise DataError("expected one assistant message", path=str(path), line=line, field="completion")
        if prompt[-1]["role"] == "assistant":
            raise DataError("the prompt must end with a user turn", path=str(path), line=line, field="prompt")
        return {"prompt": prompt, "completion": completion}
    if "prompt" in obj or "completion" in obj:
        return {
            "prompt": _text(obj, "prompt", path, line, allow_empty=True),
            "completion": _text(obj, "completion", path, line),
        }
    raise DataError("expected 'prompt' and 'completion', or 'messages'", path=str(path), line=line, field="prompt")


def completion_only(row: dict) -> dict:
    """A `messages` row as TRL's conversational prompt-completion row: the last assistant turn is the completion.

    TRL puts the loss on every token of a `messages` row (the system prompt and the user's turn too) unless a
    chat template marks the assistant's tokens; the paper, like the authors' code, puts it on the answer only.
    As a prompt-completion row, TRL's completion mask gives exactly that with any chat template. Other rows are
    returned unchanged.
    """
    if "messages" not in row:
        return row
    messages = row["messages"]
    rest = {k: v for k, v in row.items() if k != "messages"}
    return {**rest, "prompt": messages[:-1], "completion": messages[-1:]}


def _row_kind(row: dict) -> str:
    return "messages" if "messages" in row else "chat" if isinstance(row["prompt"], list) else "text"


def _task_row(obj: dict, origin: str, line: int) -> dict:
    """One task row: a MASSIVE row (`utt`, `annot_utt`, `locale`) becomes a chat row; others are validated."""
    if "annot_utt" in obj and not {"prompt", "messages", "prefix"} & obj.keys():
        from midalign.evaluation.loaders.massive import massive_task_record

        return massive_task_record(obj, origin, line)
    return parse_task_record(obj, origin, line)


def read_task_examples(source: Source, *, columns: Mapping[str, str] | None = None) -> list[dict]:
    """Read and validate task examples from any source (`midalign.data.sources`; formats in the module docstring).

    `columns` maps the fields above to the source's column names (`{"prompt": "question", "completion": "answer"}`).
    """
    rows = [(line, _task_row(obj, origin, line)) for origin, line, obj in records(source, columns=columns)]
    if not rows:
        raise DataError("no examples", path=describe(source))
    # One format per file: the trainer prepares a dataset of one schema.
    kinds = {"messages": "chat 'messages' rows", "chat": "conversational prompt/completion rows"}
    first = _row_kind(rows[0][1])
    for line, row in rows:
        kind = _row_kind(row)
        if kind != first:
            odd = sorted({first, kind}, key=["messages", "chat", "text"].index)  # the chat kind named first
            what = " with ".join(kinds.get(k, "'prompt'/'completion' rows") for k in odd)
            field = "messages" if "messages" in odd else "prompt"
            raise DataError(f"mixes {what}", path=describe(source), line=line, field=field)
    return [row for _, row in rows]


def _pivot_pairs(row: dict[str, str], pivot: str, path: str, line: int | None) -> list[Pair]:
    if pivot not in row:
        raise DataError(f"pivot language {pivot!r} missing", path=path, line=line, field=pivot)
    origin = f"{path}:{line}"
    return [Pair(row[lang], row[pivot], lang, pivot, origin) for lang in sorted(row) if lang != pivot]


def _sources(source) -> list:
    """A list of sources from one source or several (a list of row dictionaries is one source).

    A source named twice is refused: its rows would be read twice, and in an alignment batch each copy of a pair is
    a false negative of the other.
    """
    if not (isinstance(source, list | tuple) and source and not isinstance(source[0], Mapping)):
        return [source]
    seen: dict = {}
    for one in source:
        named = isinstance(one, str | os.PathLike)
        key = (os.path.realpath(one) if Path(one).exists() else str(one)) if named else id(one)
        if key in seen:
            again = f" (as {describe(seen[key])})" if named and str(seen[key]) != str(one) else ""
            raise DataError(f"given twice{again}: its rows would be read twice", path=describe(one))
        seen[key] = one
    return list(source)


def _long_key(obj: dict) -> str | None:
    """The language of a FLORES+ row (`iso_639_3` + `iso_15924`: `deu_Latn`), None for other rows."""
    if {"iso_639_3", "iso_15924", "text"} <= obj.keys():
        return f"{obj['iso_639_3']}_{obj['iso_15924']}"
    return None


def _multiway_row(obj: dict, path: str, line: int) -> dict[str, str]:
    """`{language: sentence}` of a multi-way row: a `translation` dict (WMT-style datasets), `sentence_<lang>`
    columns (FLORES-200 pair configs), or one column per language."""
    if isinstance(obj.get("translation"), Mapping):
        obj, prefix = obj["translation"], ""
    elif any(k.startswith("sentence_") for k in obj):
        obj, prefix = {k: v for k, v in obj.items() if k.startswith("sentence_")}, "sentence_"
    else:
        obj, prefix = {k: obj[k] for k in _language_fields(obj)}, ""
    return {_lang(k[len(prefix) :], path, line, k): _text(obj, k, path, line) for k in obj}


class _MultiwayRows:
    """Collects multi-way rows, and FLORES+ rows (one sentence per row) grouped into rows by their `id`."""

    def __init__(self, languages: list[str] | None, pivot: str | None = None):
        self.keep = None if languages is None else {*languages, *([pivot] if pivot else [])}
        self.seen: set[str] = set()  # every language read, kept or not: an unknown language is named against them
        self.rows: list[tuple[str, int, dict[str, str]]] = []  # (file or dataset, line or row, {lang: sentence})
        self._by_id: dict[object, dict[str, str]] = {}
        self._id_origin: dict[object, tuple[str, int]] = {}

    def add(self, origin: str, line: int, obj: dict) -> None:
        lang = _long_key(obj)
        if lang is None:
            self.add_row(origin, line, _multiway_row(obj, origin, line))
            return
        lang = _lang(lang, origin, line, "iso_639_3")
        self.seen.add(lang)
        if self.keep is not None and lang not in self.keep:
            return
        if "id" not in obj:
            raise DataError("missing (FLORES+ rows are grouped by id)", path=origin, line=line, field="id")
        group = self._by_id.setdefault(obj["id"], {})
        if lang in group:
            raise DataError(f"a second {lang} sentence for id {obj['id']!r}", path=origin, line=line, field="id")
        group[lang] = _text(obj, "text", origin, line)
        self._id_origin.setdefault(obj["id"], (origin, line))

    def add_row(self, origin: str, line: int, row: dict[str, str]) -> None:
        self.seen.update(row)
        if self.keep is not None:
            row = {k: v for k, v in row.items() if k in self.keep}
        self.rows.append((origin, line, row))

    def all_rows(self) -> list[tuple[str, int, dict[str, str]]]:
        return self.rows + [(*self._id_origin[i], group) for i, group in self._by_id.items()]


def read_parallel(
    source: Source,
    *,
    pivot: str = "en",
    languages: list[str] | None = None,
    columns: Mapping[str, str] | None = None,
) -> list[Pair]:
    """Read parallel pairs from one source or a list of them (see the module docstring and `midalign.data.sources`).

    Multi-way data (folders, rows keyed by language, `translation` dicts, FLORES+ rows grouped by `id` across the
    sources) becomes one pair per non-pivot language, with the non-pivot sentence as `src` (the query side) and the
    pivot sentence as `tgt`, as in the paper (X -> En). `languages` keeps only pairs between these languages and
    the pivot (or, for explicit pairs, between two of them and the pivot); each must occur.
    """
    pairs: list[Pair] = []
    multiway = _MultiwayRows(languages, pivot)
    for one in _sources(source):
        path = Path(one) if isinstance(one, str | os.PathLike) else None
        if path is not None and path.is_dir() and not is_saved_dataset(path):
            table = read_multiway(path)
            if pivot not in table:
                raise DataError(
                    f"pivot language {pivot!r} has no file; languages: {sorted(table)}", path=str(path), field=pivot
                )
            for i in range(len(table[pivot])):
                multiway.add_row(str(path), i + 1, {k: v[i] for k, v in table.items()})
        elif path is not None and path.suffix.lower() == ".tsv":
            pairs += _read_parallel_tsv(path)
        else:
            rows = 0
            for origin, line, obj in records(one, columns=columns):
                rows += 1
                if "src" in obj or "tgt" in obj:
                    pairs.append(_pair(obj, origin, line, f"{origin}:{line}"))
                elif AUTHORS_PAIR_FIELDS[0] in obj:
                    src, tgt = (_text(obj, k, origin, line) for k in AUTHORS_PAIR_FIELDS)
                    src_lang = _text(obj, "src_lang", origin, line).strip() if "src_lang" in obj else "x"
                    pairs.append(Pair(src, tgt, _lang(src_lang, origin, line, "src_lang"), pivot, f"{origin}:{line}"))
                else:
                    multiway.add(origin, line, obj)
            if not rows:  # one empty file among several must not pass unseen
                raise DataError("no parallel pairs", path=describe(one))
    if languages is not None:
        wanted = {*languages, pivot}
        pairs = [p for p in pairs if p.src_lang in wanted and p.tgt_lang in wanted]
    for origin, line, row in multiway.all_rows():
        if len(row) < 2 and languages is None:
            raise DataError(
                "expected src/tgt/src_lang/tgt_lang, or a multi-way row of >= 2 languages",
                path=origin,
                line=line,
                field="src",
            )
        pairs += _pivot_pairs(row, pivot, origin, line)
    if languages is not None:
        found = {lang for p in pairs for lang in (p.src_lang, p.tgt_lang)}
        absent = [lang for lang in languages if lang not in found]
        if absent:
            raise DataError(f"no pairs for language(s) {absent}", path=describe(source))
    if not pairs:
        raise DataError("no parallel pairs", path=describe(source))
    return pairs


def _pair(obj: dict, path, line: int, origin: str) -> Pair:
    f = {k: _text(obj, k, path, line) for k in PAIR_FIELDS}
    src_lang, tgt_lang = (_lang(f[k].strip(), path, line, k) for k in ("src_lang", "tgt_lang"))
    return Pair(f["src"], f["tgt"], src_lang, tgt_lang, origin)


def _read_parallel_tsv(path: Path) -> list[Pair]:
    lines = iter(iter_lines(path))
    try:
        _, header_line = next(lines)
    except StopIteration:
        raise DataError("empty file", path=str(path)) from None
    header = [h.strip() for h in header_line.split("\t")]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError("column named twice in the header", path=str(path), line=1, field=repeated[0])
    missing = [f for f in PAIR_FIELDS if f not in header]
    if missing:
        raise DataError(f"header must name the columns {PAIR_FIELDS}", path=str(path), line=1, field=missing[0])
    pairs = []
    for line, text in lines:
        if not text.strip():
            continue
        cells = text.split("\t")
        if len(cells) != len(header):
            raise DataError(
                f"expected {len(header)} tab-separated columns, got {len(cells)}", path=str(path), line=line
            )
        pairs.append(_pair(dict(zip(header, cells, strict=True)), path, line, f"{path}:{line}"))
    if not pairs:
        raise DataError("no parallel pairs", path=str(path))
    return pairs


def read_multiway(source: Source, languages: list[str] | None = None) -> dict[str, list[str]]:
    """Read a multi-way parallel set from one source or a list of them: a FLORES-style folder, rows of
    `{lang: sentence}` (or `translation` dicts, or `sentence_<lang>` columns), or FLORES+ rows grouped by `id`.

    Returns `{language: sentences}` with every language holding the same number of sentences, aligned by index.
    """
    table: dict[str, list[str]] = {}
    seen: set[str] = set()  # every language of the data, before `languages` keeps some
    name = describe(source)
    path = Path(source) if isinstance(source, str | os.PathLike) else None
    if path is not None and path.is_dir() and not is_saved_dataset(path):
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        for file in files:
            lang = _lang(file.name.split(".")[0], file, None, "file name")
            if lang in table:
                raise DataError(f"two files for language {lang!r}", path=str(file))
            sentences = []
            for line, text in iter_lines(file):
                if not text.strip():
                    raise DataError("empty sentence", path=str(file), line=line)
                sentences.append(text)
            table[lang] = sentences
        seen = set(table)
    else:
        rows = _MultiwayRows(languages)
        for one in _sources(source):
            for origin, line, obj in records(one):
                rows.add(origin, line, obj)
        for origin, line, row in rows.all_rows():
            if table and set(row) != set(table):
                raise DataError(
                    f"languages {sorted(row)} differ from the first row's {sorted(table)}", path=origin, line=line
                )
            for lang, sentence in row.items():
                table.setdefault(lang, []).append(sentence)
        seen = rows.seen
    unknown = [lang for lang in languages or () if lang not in table]
    if unknown and seen:
        raise DataError(f"unknown languages {unknown}; the data has {sorted(seen)}", path=name)
    if not table:
        raise DataError("no languages found", path=name)
    counts = {lang: len(s) for lang, s in table.items()}
    if len(set(counts.values())) > 1:
        raise DataError(f"languages have different sentence counts: {counts}", path=name)
    if not any(counts.values()):
        raise DataError("no sentences", path=name)
    if languages is not None:
        table = {lang: table[lang] for lang in languages}
    return table


def as_pairs(data, *, pivot: str = "en", languages: list[str] | None = None) -> list[Pair]:
    """Parallel pairs from what a Python caller has: a list of `Pair`s (kept, filtered by `languages`), or any
    source `read_parallel` reads (a `datasets.Dataset`, a list of row dictionaries, paths, hub ids)."""
    if isinstance(data, list | tuple) and data and all(isinstance(p, Pair) for p in data):
        if languages is None:
            return list(data)
        wanted = {*languages, pivot}
        return [p for p in data if p.src_lang in wanted and p.tgt_lang in wanted]
    return read_parallel(data, pivot=pivot, languages=languages)
