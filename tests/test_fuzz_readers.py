"""Property tests of every reader: any input either loads exactly (no row silently lost or split) or raises
`DataError` naming the file, the 1-based line and, where one field is at fault, the field.

Inputs are random bytes, random JSON-ish lines, and valid files mutated in one place (BOM, CRLF, invalid
UTF-8, a dropped field, a wrong type, an empty or whitespace string, a repeated key, deep nesting, a ~1 MB
line, nested brackets in `annot_utt`). Each test writes into its own `tempfile.TemporaryDirectory()`, since
pytest's `tmp_path` is shared by all examples of one hypothesis test.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from midalign.analysis.run import load_groups
from midalign.data.readers import iter_jsonl, read_multiway, read_parallel, read_task_examples
from midalign.errors import ConfigError, DataError
from midalign.evaluation.loaders import (
    load_examples,
    load_massive_jsonl,
    load_predictions,
    load_text_pairs,
    parse_pairs,
    read_prediction_lines,
)
from midalign.evaluation.slots import format_slots, parse_annot_utt, parse_slot_output
from midalign.evaluation.structured import check_schema_keywords, parse_json_output, schema_errors, score_json
from midalign.files import MAX_DEPTH, read_json_file, read_yaml_file

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

# Any text a sentence may hold, including U+2028, U+0085, tabs, quotes, brackets and non-Latin scripts
# (str.splitlines would split on some of them; the readers must not).
ANY_TEXT = st.text(max_size=30)
# A sentence as line-based files hold it: no newline, not blank, no outer whitespace (which a line reader
# may legitimately strip at the end of a CRLF line).
SENTENCE = (
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\t\ufeff"), min_size=1, max_size=30)
    # a map, not a filter: inside st.lists, Hypothesis 6.100 (the oldest we allow) lets filtered-out blanks through
    .map(lambda s: s.strip() or "x")
)
NONBLANK = ANY_TEXT.filter(lambda s: s.strip())
CODE = st.from_regex(r"[a-z]{2,3}(_[A-Z][a-z]{3})?", fullmatch=True)
JSON_SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
LAYOUT = st.fixed_dictionaries(
    {
        "bom": st.booleans(),
        "crlf": st.booleans(),
        "final_newline": st.booleans(),
        # blank or whitespace-only lines inserted before these row indices
        "blanks": st.lists(st.tuples(st.integers(0, 20), st.sampled_from(["", " ", "\t", "  \t "])), max_size=3),
    }
)


def lay_out(lines: list[str], layout: dict) -> tuple[bytes, list[int]]:
    """Join `lines` into file bytes with the given BOM / CRLF / blank lines; return the bytes and the
    1-based line number of each original line."""
    out, numbers = [], []
    blanks = sorted(layout["blanks"])
    for i, line in enumerate(lines):
        out += [b for at, b in blanks if at == i]
        out.append(line)
        numbers.append(len(out))
    out += [b for at, b in blanks if at >= len(lines)]
    newline = "\r\n" if layout["crlf"] else "\n"
    text = newline.join(out) + (newline if layout["final_newline"] else "")
    return ("\ufeff" if layout["bom"] else "").encode() + text.encode("utf-8"), numbers


def write(folder: str | Path, name: str, data: bytes | str) -> Path:
    path = Path(folder) / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def check_error(error: DataError, path: Path, line: int | None = None, field: str | None = None) -> None:
    """The error names the file, the line and the field, in its attributes and in its message."""
    assert error.path == str(path)
    assert str(error).startswith(str(path))
    if line is not None:
        assert error.line == line
        assert str(error).startswith(f"{path}:{line}: ")
    if field is not None:
        assert error.field == field
        assert f"field '{field}': " in str(error)


# A JSON line corrupted in one of these ways, with the field the error must name (None: the line as a whole).
def corrupt_line(kind: str, row: dict, key: str) -> tuple[bytes, str | None]:
    """Row `row` as one JSONL line (bytes) corrupted by `kind`, at `key` when the corruption is per field."""
    if kind == "invalid_utf8":
        text = dumps(row).encode()
        return text[:1] + b"\xff\xfe" + text[1:], None
    if kind == "truncated":
        text = dumps(row)
        return text[: max(1, len(text) // 2)].encode(), None
    if kind == "not_an_object":
        return dumps([row]).encode(), None
    if kind == "huge_number":
        return (dumps(row)[:-1] + ', "n": 1' + "0" * 5000 + "}").encode(), None
    if kind == "dropped":
        return dumps({k: v for k, v in row.items() if k != key}).encode(), key
    if kind == "wrong_type":
        return dumps({**row, key: 7}).encode(), key
    if kind == "empty":
        return dumps({**row, key: " \t "}).encode(), key
    if kind == "duplicate_key":
        return (dumps(row)[:-1] + f", {dumps(key)}: {dumps(row[key])}}}").encode(), key
    if kind == "deep":
        return dumps({**row, key: [[[]]]}).replace("[[[]]]", "[" * 200 + "]" * 200).encode(), key
    if kind == "lone_surrogate":
        return dumps({**row, key: "x"}).replace('"x"', '"a\\udc80b"').encode(), key
    raise AssertionError(kind)


LINE_FAULTS = ["invalid_utf8", "truncated", "not_an_object", "huge_number"]
FIELD_FAULTS = ["dropped", "wrong_type", "empty", "duplicate_key", "deep", "lone_surrogate"]


def corrupt_file(rows: list[dict], layout: dict, index: int, kind: str, key: str) -> tuple[bytes, int, str | None]:
    """The rows laid out as a file whose row `index` is corrupted; returns bytes, its line number and field."""
    marker = "\u0000CORRUPT\u0000"
    lines = [dumps(r) for r in rows]
    lines[index] = marker
    data, numbers = lay_out(lines, layout)
    bad, field = corrupt_line(kind, rows[index], key)
    return data.replace(marker.encode(), bad), numbers[index], field


# ---------------------------------------------------------------- JSONL, any bytes


@FAST
@given(
    data=st.binary(max_size=300)
    | st.lists(st.sampled_from(['{"a": 1}', "[]", "{", "\xff", '"', ""])).map(
        lambda parts: "\n".join(parts).encode("utf-8", "surrogateescape")
    )
)
@example(data=b"\xef\xbb\xbf{}\r\n\r\n{}")
def test_jsonl_random_bytes_load_or_name_the_line(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "x.jsonl", data)
        lines = data.split(b"\n")
        try:
            rows = list(iter_jsonl(path))
        except DataError as e:
            check_error(e, path)
            assert e.line is not None and 1 <= e.line <= len(lines)
            return
        texts = [raw.decode("utf-8") for raw in lines]
        texts[0] = texts[0].removeprefix("\ufeff")
        nonblank = [i + 1 for i, text in enumerate(texts) if text.strip()]
        assert [n for n, _ in rows] == nonblank  # every non-blank line became exactly one object
        assert all(isinstance(obj, dict) for _, obj in rows)


@FAST
@given(lines=st.lists(JSON_VALUE.map(dumps), max_size=6))
def test_jsonl_random_json_lines(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "x.jsonl", "\n".join(lines) + "\n")
        try:
            rows = list(iter_jsonl(path))
        except DataError as e:
            check_error(e, path)
            assert not isinstance(json.loads(lines[e.line - 1]), dict)  # the first non-object line is named
            assert all(isinstance(json.loads(x), dict) for x in lines[: e.line - 1])
            return
        assert [obj for _, obj in rows] == [json.loads(x) for x in lines]


# ---------------------------------------------------------------- task JSONL (every format)

PROMPT_COMPLETION = st.fixed_dictionaries({"prompt": ANY_TEXT, "completion": NONBLANK})
AUTHORS = st.fixed_dictionaries({"prefix": ANY_TEXT, "text": NONBLANK})
MESSAGES = st.builds(
    lambda system, user, answer: {
        "messages": ([{"role": "system", "content": system}] if system is not None else [])
        + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    },
    st.none() | ANY_TEXT,
    ANY_TEXT,
    NONBLANK,
)
TASK_FORMATS = {"prompt_completion": PROMPT_COMPLETION, "authors": AUTHORS, "messages": MESSAGES}


def expected_task_row(row: dict) -> dict:
    if "prefix" in row:
        return {"prompt": row["prefix"], "completion": row["text"]}
    return row


@FAST
@given(data=st.data(), fmt=st.sampled_from(sorted(TASK_FORMATS)), layout=LAYOUT)
def test_task_jsonl_valid_files_load_every_row(data, fmt, layout):
    rows = data.draw(st.lists(TASK_FORMATS[fmt], min_size=1, max_size=6))
    with tempfile.TemporaryDirectory() as tmp:
        raw, _ = lay_out([dumps(r) for r in rows], layout)
        assert read_task_examples(write(tmp, "t.jsonl", raw)) == [expected_task_row(r) for r in rows]


TASK_KEYS = {"prompt_completion": "completion", "authors": "text", "messages": "messages"}


@FAST
@given(
    data=st.data(),
    fmt=st.sampled_from(sorted(TASK_FORMATS)),
    layout=LAYOUT,
    kind=st.sampled_from(LINE_FAULTS + FIELD_FAULTS),
)
def test_task_jsonl_one_bad_line_is_named(data, fmt, layout, kind):
    rows = data.draw(st.lists(TASK_FORMATS[fmt], min_size=1, max_size=5))
    index = data.draw(st.integers(0, len(rows) - 1))
    key = TASK_KEYS[fmt]
    if kind in ("empty", "lone_surrogate") and key == "messages":
        key, kind = "messages", "wrong_type"  # a string where the list belongs
    raw, line, field = corrupt_file(rows, layout, index, kind, key)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "t.jsonl", raw)
        with pytest.raises(DataError) as info:
            read_task_examples(path)
        expected_field = field
        if kind == "dropped" and fmt == "messages":
            expected_field = "prompt"  # no recognised format left: the error names the first expected key
        check_error(info.value, path, line, expected_field)


@FAST
@given(
    rows=st.lists(MESSAGES, min_size=1, max_size=3),
    turn=st.integers(0, 2),
    fault=st.sampled_from(["role", "content_type", "not_object", "last_not_assistant"]),
)
def test_task_messages_faults_name_the_message(rows, turn, fault):
    row = json.loads(dumps(rows[0]))
    messages = row["messages"]
    turn = min(turn, len(messages) - 1)
    if fault == "role":
        messages[turn]["role"] = "bot"
        field = f"messages[{turn}].role"
    elif fault == "content_type":
        messages[turn]["content"] = ["x"]
        field = f"messages[{turn}].content"
    elif fault == "not_object":
        messages[turn] = "hello"
        field = f"messages[{turn}]"
    else:
        messages.pop()
        assume(messages)
        field = "messages"
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "t.jsonl", "".join(dumps(r) + "\n" for r in [*rows[1:], row]))
        with pytest.raises(DataError) as info:
            read_task_examples(path)
        check_error(info.value, path, len(rows), field)


def test_task_jsonl_mixed_formats_name_the_first_odd_line():
    with tempfile.TemporaryDirectory() as tmp:
        chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        path = write(tmp, "t.jsonl", "".join(dumps(r) + "\n" for r in [{"prompt": "p", "completion": "c"}, chat]))
        with pytest.raises(DataError, match="mixes chat") as info:
            read_task_examples(path)
        check_error(info.value, path, 2, "messages")


def test_megabyte_lines_load_whole():
    long = "a" * 1_000_000 + " ü " + "b" * 10
    with tempfile.TemporaryDirectory() as tmp:
        task = write(tmp, "t.jsonl", dumps({"prompt": long, "completion": long}) + "\n")
        assert read_task_examples(task) == [{"prompt": long, "completion": long}]
        tsv = write(tmp, "p.tsv", f"src\ttgt\tsrc_lang\ttgt_lang\n{long}\t{long}\tde\ten\n")
        assert read_parallel(tsv)[0].src == long
        folder = Path(tmp) / "flores"
        folder.mkdir()
        write(folder, "en.txt", f"{long}\nx\n")
        write(folder, "de.txt", f"y\n{long}\n")
        assert read_multiway(folder) == {"de": ["y", long], "en": [long, "x"]}
        write(tmp, "src.de", long + "\n")
        write(tmp, "src.en", long + "\n")
        assert load_text_pairs(str(Path(tmp) / "src.{lang}"), ["de-en"])[0]["gold"] == long
        assert read_prediction_lines(write(tmp, "p.txt", long + "\n"), 1) == [long]


def test_deeply_nested_and_huge_lines_are_refused_not_crashed():
    with tempfile.TemporaryDirectory() as tmp:
        for depth, field in ((MAX_DEPTH, "prompt"), (100_000, None)):  # past the recursion limit: no field known
            value = "[" * depth + "]" * depth
            path = write(tmp, "t.jsonl", '{"prompt": "p", "completion": "c"}\n{"prompt": ' + value + "}\n")
            with pytest.raises(DataError, match=f"nested deeper than {MAX_DEPTH} levels") as info:
                read_task_examples(path)
            check_error(info.value, path, 2, field)
        ok = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
        path = write(tmp, "t.jsonl", '{"prompt": "p", "completion": "c", "meta": ' + ok + "}\n")
        assert read_task_examples(path) == [{"prompt": "p", "completion": "c"}]
        path = write(tmp, "t.jsonl", "{" * 1_000_000 + "\n")
        with pytest.raises(DataError) as info:
            read_task_examples(path)
        check_error(info.value, path, 1)


# ---------------------------------------------------------------- parallel data: JSONL, TSV, folders

PAIR = st.fixed_dictionaries({"src": NONBLANK, "tgt": NONBLANK, "src_lang": CODE, "tgt_lang": CODE})
AUTHORS_PAIR = st.fixed_dictionaries({"text_parallel_0": NONBLANK, "text_parallel_1": NONBLANK})


@FAST
@given(data=st.data(), layout=LAYOUT, fmt=st.sampled_from(["pairs", "authors", "multiway"]))
def test_parallel_jsonl_valid_files_lose_nothing(data, layout, fmt):
    if fmt == "pairs":
        rows = data.draw(st.lists(PAIR, min_size=1, max_size=5))
        expected = [(r["src"], r["tgt"], r["src_lang"], r["tgt_lang"]) for r in rows]
    elif fmt == "authors":
        rows = data.draw(st.lists(AUTHORS_PAIR, min_size=1, max_size=5))
        expected = [(r["text_parallel_0"], r["text_parallel_1"], "x", "en") for r in rows]
    else:
        langs = data.draw(st.lists(CODE.filter(lambda c: c != "en"), min_size=1, max_size=3, unique=True))
        rows = data.draw(st.lists(st.fixed_dictionaries({c: NONBLANK for c in ["en", *langs]}), min_size=1, max_size=4))
        expected = [(r[c], r["en"], c, "en") for r in rows for c in sorted(langs)]
    raw, numbers = lay_out([dumps(r) for r in rows], layout)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "p.jsonl", raw)
        pairs = read_parallel(path, pivot="en")
        assert [(p.src, p.tgt, p.src_lang, p.tgt_lang) for p in pairs] == expected
        per_row = len(expected) // len(rows)
        assert [p.origin for p in pairs] == [f"{path}:{n}" for n in numbers for _ in range(per_row)]


@FAST
@given(
    rows=st.lists(PAIR, min_size=1, max_size=4),
    index=st.integers(0, 3),
    layout=LAYOUT,
    kind=st.sampled_from(LINE_FAULTS + FIELD_FAULTS + ["unsafe_code"]),
    key=st.sampled_from(["src", "tgt", "src_lang", "tgt_lang"]),
)
def test_parallel_jsonl_one_bad_line_is_named(rows, index, layout, kind, key):
    index = min(index, len(rows) - 1)
    if kind == "unsafe_code":
        key = "src_lang" if key in ("src", "tgt") else key
        rows = [*rows[:index], {**rows[index], key: "../../evil"}, *rows[index + 1 :]]
        raw, numbers = lay_out([dumps(r) for r in rows], layout)
        line, field = numbers[index], key
    else:
        raw, line, field = corrupt_file(rows, layout, index, kind, key)
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "p.jsonl", raw)
        with pytest.raises(DataError) as info:
            read_parallel(path)
        check_error(info.value, path, line, field)


@FAST
@given(rows=st.lists(PAIR, min_size=1, max_size=4), order=st.permutations(["src", "tgt", "src_lang", "tgt_lang"]))
def test_parallel_tsv_any_column_order(rows, order):
    rows = [{k: v.replace("\t", " ").strip() or "x" for k, v in r.items()} for r in rows]
    rows = [{k: " ".join(v.split()) or "x" for k, v in r.items()} for r in rows]  # one line, no tabs
    text = "\t".join(order) + "\n" + "".join("\t".join(r[k] for k in order) + "\n" for r in rows)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = read_parallel(write(tmp, "p.tsv", text))
        assert [(p.src, p.tgt, p.src_lang, p.tgt_lang) for p in pairs] == [
            (r["src"], r["tgt"], r["src_lang"], r["tgt_lang"]) for r in rows
        ]


@FAST
@given(
    n=st.integers(1, 4),
    index=st.integers(0, 3),
    layout=LAYOUT,
    fault=st.sampled_from(["columns", "empty_cell", "unsafe_code", "invalid_utf8", "repeated_column"]),
)
def test_parallel_tsv_one_bad_line_is_named(n, index, layout, fault):
    index = min(index, n - 1)
    lines = ["src\ttgt\tsrc_lang\ttgt_lang"] + [f"s{i}\tt{i}\tde\ten" for i in range(n)]
    field = None
    if fault == "columns":
        lines[index + 1] += "\textra"
    elif fault == "empty_cell":
        lines[index + 1] = "s\t \tde\ten"
        field = "tgt"
    elif fault == "unsafe_code":
        lines[index + 1] = "s\tt\ta/b\ten"
        field = "src_lang"
    elif fault == "invalid_utf8":
        lines[index + 1] = "s\t\x00BAD\x00\tde\ten"
    else:
        lines[0] += "\tsrc"
        field = "src"
    layout = {**layout, "blanks": [b for b in layout["blanks"] if b[0] > 0]}  # the header stays on line 1
    raw, numbers = lay_out(lines, layout)
    raw = raw.replace(b"\x00BAD\x00", b"\xff")
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "p.tsv", raw)
        with pytest.raises(DataError) as info:
            read_parallel(path)
        check_error(info.value, path, 1 if fault == "repeated_column" else numbers[index + 1], field)


@FAST
@given(
    langs=st.lists(CODE, min_size=2, max_size=4, unique=True),
    n=st.integers(1, 5),
    data=st.data(),
    layout=LAYOUT.map(lambda x: {**x, "blanks": [], "final_newline": True}),
)
def test_flores_folder_reads_every_sentence(langs, n, data, layout):
    table = {lang: data.draw(st.lists(SENTENCE, min_size=n, max_size=n)) for lang in langs}
    with tempfile.TemporaryDirectory() as tmp:
        for lang, sentences in table.items():
            write(tmp, f"{lang}.devtest", lay_out(sentences, layout)[0])
        assert read_multiway(tmp) == table
        pairs = read_parallel(tmp, pivot=langs[0])
        assert len(pairs) == n * (len(langs) - 1)
        assert {(p.src, p.tgt) for p in pairs} == {
            (table[lang][i], table[langs[0]][i]) for lang in langs[1:] for i in range(n)
        }


@FAST
@given(
    n=st.integers(1, 4),
    index=st.integers(0, 3),
    fault=st.sampled_from(["empty", "whitespace", "invalid_utf8", "short", "unsafe_name", "no_pivot", "all_empty"]),
)
def test_flores_folder_faults_name_file_and_line(n, index, fault):
    index = min(index, n - 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write(folder, "en.txt", "".join(f"e{i}\n" for i in range(n)))
        de = [f"d{i}" for i in range(n)]
        line = index + 1
        if fault == "empty":
            de[index] = ""
        elif fault == "whitespace":
            de[index] = " \t "
        elif fault == "short":
            de.pop()
        de_bytes = "".join(f"{s}\n" for s in de).encode()
        if fault == "invalid_utf8":
            de_bytes = de_bytes.replace(f"d{index}".encode(), b"d\xc3\x28")
        bad = write(folder, "de.txt", de_bytes)
        if fault == "unsafe_name":
            bad = write(folder, "-rf.txt", "x\n" * n)
        if fault == "all_empty":
            write(folder, "en.txt", "")
            write(folder, "de.txt", "")
        with pytest.raises(DataError) as info:
            read_parallel(folder, pivot="en" if fault != "no_pivot" else "fr")
        if fault in ("short", "all_empty"):
            check_error(info.value, folder)  # a folder-level fault: different counts, or nothing at all
        elif fault == "no_pivot":
            check_error(info.value, folder, field="fr")
        elif fault == "unsafe_name":
            check_error(info.value, bad, field="file name")
        else:
            check_error(info.value, bad, line)


def test_parallel_multiway_rows_refuse_unsafe_codes_and_missing_pivot():
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "m.jsonl", dumps({"en": "a", "de": "b"}) + "\n" + dumps({"en": "a", "../../evil": "b"}))
        with pytest.raises(DataError, match=r"language code '\.\./\.\./evil' may only hold") as info:
            read_parallel(path)
        check_error(info.value, path, 2, "../../evil")
        with pytest.raises(DataError) as info:
            read_multiway(path)
        check_error(info.value, path, 2, "../../evil")
        path = write(tmp, "m.jsonl", dumps({"de": "a", "fr": "b"}) + "\n")
        with pytest.raises(DataError, match="pivot language 'en' missing") as info:
            read_parallel(path)
        check_error(info.value, path, 1, "en")


# ---------------------------------------------------------------- MASSIVE annot_utt and slot outputs

BRACKETY = st.text(alphabet="[]: ab", max_size=20) | st.text(max_size=20)
SLOT_TYPE = st.from_regex(r"[a-z_]{1,8}", fullmatch=True)
WORDS = st.lists(st.from_regex(r"[a-zäöü0-9:']{1,6}", fullmatch=True), min_size=1, max_size=3).map(" ".join)


@FAST
@given(text=BRACKETY)
@example(text="[a : [b : c]]")
@example(text="[[[[[[[[[[[[[[[[ a : b ]]]]]]]]]]]]]]]]")
@example(text="[time : 9:30]")
@example(text="[ : x]")
def test_annot_utt_any_text_parses_or_is_refused(text):
    try:
        plain, slots = parse_annot_utt(text)
    except DataError as e:
        assert "bracket" in str(e) or "empty slot type or value" in str(e)
        return
    assert "[" not in plain and "]" not in plain
    assert len(slots) == text.count("[") == text.count("]")
    assert all(t and v and ":" not in t for t, v in slots)


@FAST
@given(parts=st.lists(st.tuples(WORDS, st.none() | SLOT_TYPE), min_size=1, max_size=5))
def test_annot_utt_round_trips(parts):
    annotated = " ".join(f"[{t} : {w}]" if t else w for w, t in parts)
    plain, slots = parse_annot_utt(annotated)
    assert plain == " ".join(w for w, _ in parts)
    assert slots == [(t, w) for w, t in parts if t]
    assert parse_slot_output(format_slots(slots)).slots == tuple(slots)


@FAST
@given(text=st.text(max_size=60) | BRACKETY)
def test_slot_and_json_outputs_never_raise(text):
    frame = parse_slot_output(text)
    assert all(t and v for t, v in frame.slots)
    ok, value = parse_json_output(text)
    assert ok or value is None
    score_json([text], [{"a": 1}])


JSON_OUTPUT_EDGES = {
    "unclosed_100k_brackets": "[" * 100_000,
    "nested_5000_deep": "[" * 5000 + "]" * 5000,
    "5000_digit_number": "1" * 5000,
    "duplicate_key": '{"a": 1, "a": 2}',
    "lone_surrogate": '["\\ud800"]',
    "nan": "NaN",
    "unclosed_fence": "```json\n[1\n```",
}


@pytest.mark.parametrize("output", list(JSON_OUTPUT_EDGES.values()), ids=list(JSON_OUTPUT_EDGES))
def test_json_output_edge_cases_are_unparsable_not_crashes(output):
    assert parse_json_output(output) == (False, None)
    assert score_json([output], [{"a": 1}])["parse_rate"] == 0.0


MASSIVE_ROW = st.builds(
    lambda parts, locale, intent: {
        "id": "1",
        "locale": locale,
        "partition": "test",
        "intent": intent,
        "utt": " ".join(w for w, _ in parts),
        "annot_utt": " ".join(f"[{t} : {w}]" if t else w for w, t in parts),
    },
    st.lists(st.tuples(WORDS, st.none() | SLOT_TYPE), min_size=1, max_size=4),
    st.sampled_from(["de-DE", "en-US", "ja-JP"]),
    SLOT_TYPE,
)


@FAST
@given(rows=st.lists(MASSIVE_ROW, min_size=1, max_size=5), layout=LAYOUT, with_intent=st.booleans())
def test_massive_jsonl_valid_files_lose_nothing(rows, layout, with_intent):
    raw, _ = lay_out([dumps(r) for r in rows], layout)
    with tempfile.TemporaryDirectory() as tmp:
        examples = load_massive_jsonl(write(tmp, "m.jsonl", raw), with_intent=with_intent)
        assert [e["utt"] for e in examples] == [r["utt"] for r in rows]
        for e, r in zip(examples, rows, strict=True):
            gold = format_slots(parse_annot_utt(r["annot_utt"])[1], intent=r["intent"] if with_intent else None)
            assert e["gold"] == gold


@FAST
@given(
    rows=st.lists(MASSIVE_ROW, min_size=1, max_size=4),
    index=st.integers(0, 3),
    layout=LAYOUT,
    fault=st.sampled_from(
        [
            *("nested", "unbalanced", "empty_value", "locale_type", "partition_type", "unsafe_locale"),
            "utt_missing",
            *LINE_FAULTS,
            *("duplicate_key", "deep", "lone_surrogate"),
        ]
    ),
)
def test_massive_jsonl_one_bad_line_is_named(rows, index, layout, fault):
    index = min(index, len(rows) - 1)
    row = dict(rows[index])
    edits = {
        "nested": ("annot_utt", "[a : [b : c]]"),
        "unbalanced": ("annot_utt", row["annot_utt"] + " ["),
        "empty_value": ("annot_utt", "x [time :  ]"),
        "locale_type": ("locale", ["de-DE"]),
        "partition_type": ("partition", None),
        "unsafe_locale": ("locale", "de/../DE"),
    }
    if fault in edits or fault == "utt_missing":
        field, value = edits.get(fault, ("utt", None))
        if fault == "utt_missing":
            row.pop("utt")
        else:
            row[field] = value
        if fault == "partition_type":
            row.pop("partition")
        lines = [dumps(r) for r in rows]
        lines[index] = dumps(row)
        raw, numbers = lay_out(lines, layout)
        line = numbers[index]
    else:
        raw, line, field = corrupt_file(rows, layout, index, fault, "annot_utt")
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "m.jsonl", raw)
        with pytest.raises(DataError) as info:
            load_massive_jsonl(path)
        check_error(info.value, path, line, field)


# ---------------------------------------------------------------- evaluation JSONL, predictions, text files

EVAL_ROWS = {
    "slot": st.fixed_dictionaries({"lang": CODE, "prompt": NONBLANK, "gold": st.just("time: nine")}),
    "mt": st.fixed_dictionaries(
        {"lang": st.just("de-en"), "prompt": NONBLANK, "gold": NONBLANK, "tgt_lang": st.sampled_from(["en", "de"])}
    ),
    "json": st.fixed_dictionaries({"lang": CODE, "prompt": NONBLANK, "gold": st.just('{"a": [1, "x"]}')}),
}


@FAST
@given(
    data=st.data(),
    task=st.sampled_from(sorted(EVAL_ROWS)),
    layout=LAYOUT,
    kind=st.sampled_from([*LINE_FAULTS, *FIELD_FAULTS, "unsafe_lang", "gold_duplicate_key", "gold_not_json", None]),
    key=st.sampled_from(["lang", "prompt", "gold"]),
)
def test_eval_jsonl_each_task(data, task, layout, kind, key):
    rows = data.draw(st.lists(EVAL_ROWS[task], min_size=1, max_size=4))
    index = data.draw(st.integers(0, len(rows) - 1))
    if kind == "empty" and key == "gold" and task == "slot":
        kind = None  # a blank slot gold is a gold without slots, like "None": it loads
    with tempfile.TemporaryDirectory() as tmp:
        if kind is None:
            raw, _ = lay_out([dumps(r) for r in rows], layout)
            examples = load_examples(write(tmp, "e.jsonl", raw), task)
            assert [e["prompt"] for e in examples] == [r["prompt"] for r in rows]
            return
        if kind in ("unsafe_lang", "gold_duplicate_key", "gold_not_json"):
            if kind != "unsafe_lang" and task != "json":
                return
            edited = {
                "unsafe_lang": ("lang", "../../evil"),
                "gold_duplicate_key": ("gold", '{"a": 1, "a": 2}'),
                "gold_not_json": ("gold", '{"a": '),
            }[kind]
            lines = [dumps(r) for r in rows]
            lines[index] = dumps({**rows[index], edited[0]: edited[1]})
            raw, numbers = lay_out(lines, layout)
            line, field = numbers[index], edited[0]
        else:
            raw, line, field = corrupt_file(rows, layout, index, kind, key)
        path = write(tmp, "e.jsonl", raw)
        with pytest.raises(DataError) as info:
            load_examples(path, task)
        check_error(info.value, path, line, field)


@FAST
@given(
    predictions=st.lists(ANY_TEXT, min_size=1, max_size=5),
    layout=LAYOUT.map(lambda x: {**x, "blanks": []}),
    extra=st.integers(-1, 1),
)
def test_prediction_files_align_or_name_the_line(predictions, layout, extra):
    rows = [{"lang": "en", "prompt": "p", "gold": "None", "system": "s", "prediction": p} for p in predictions]
    with tempfile.TemporaryDirectory() as tmp:
        raw, _ = lay_out([dumps(r) for r in rows], layout)
        path = write(tmp, "p.jsonl", raw)
        examples, got = load_predictions(path, "slot")
        assert got == predictions and len(examples) == len(predictions)
        expected = len(predictions) + extra
        try:
            assert read_prediction_lines(path, expected) == predictions
            assert extra == 0
        except DataError as e:
            check_error(e, path, min(expected, len(predictions)) + 1)
        # plain text: one prediction per line, a BOM dropped, CRLF handled, U+2028 and U+0085 kept inside a line
        lines = [p.replace("\r", " ").replace("\n", " ") for p in predictions]
        assume(not lines[0].startswith("\ufeff"))
        text_path = write(tmp, "p.txt", lay_out(lines, {**layout, "final_newline": True})[0])
        assert read_prediction_lines(text_path, len(lines)) == lines


@FAST
@given(
    rows=st.lists(st.just({"lang": "en", "prompt": "p", "gold": "None", "prediction": "x"}), min_size=1, max_size=4),
    index=st.integers(0, 3),
    fault=st.sampled_from(["missing", "number", "duplicate_key"]),
)
def test_prediction_jsonl_bad_prediction_is_named(rows, index, fault):
    index = min(index, len(rows) - 1)
    lines = [dumps(r) for r in rows]
    if fault == "missing":
        lines[index] = dumps({k: v for k, v in rows[index].items() if k != "prediction"})
    elif fault == "number":
        lines[index] = dumps({**rows[index], "prediction": 3})
    else:
        lines[index] = lines[index][:-1] + ', "prediction": "y"}'
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "p.jsonl", "\n".join(lines))
        for read in (lambda: load_predictions(path, "slot"), lambda: read_prediction_lines(path, len(rows))):
            with pytest.raises(DataError) as info:
                read()
            check_error(info.value, path, index + 1, "prediction")


@FAST
@given(
    pairs=st.lists(st.tuples(SENTENCE, SENTENCE), min_size=1, max_size=5),
    layout=LAYOUT.map(lambda x: {**x, "blanks": [], "final_newline": True}),
    fault=st.sampled_from([None, "empty", "invalid_utf8", "short"]),
    index=st.integers(0, 4),
)
def test_text_pairs_read_every_line_or_name_it(pairs, layout, fault, index):
    index = min(index, len(pairs) - 1)
    sources, references = [s for s, _ in pairs], [r for _, r in pairs]
    with tempfile.TemporaryDirectory() as tmp:
        write(tmp, "test.de", lay_out(sources, layout)[0])
        refs = list(references)
        if fault == "empty":
            refs[index] = "  "
        if fault == "short":
            refs.pop()
        raw = lay_out(refs, layout)[0] if refs else b""
        if fault == "invalid_utf8":
            raw = lay_out([*refs[:index], "\x00BAD\x00", *refs[index + 1 :]], layout)[0]
            raw = raw.replace(b"\x00BAD\x00", b"\xed\xa0\x80")  # an encoded surrogate: not UTF-8
        reference = write(tmp, "test.en", raw)
        pattern = str(Path(tmp) / "test.{lang}")
        if fault is None:
            examples = load_text_pairs(pattern, ["de-en"])
            assert [(e["source"], e["gold"]) for e in examples] == pairs
            return
        with pytest.raises(DataError) as info:
            load_text_pairs(pattern, ["de-en"])
        check_error(info.value, reference, len(refs) + 1 if fault == "short" else index + 1)


@FAST
@given(pattern=st.text(alphabet="{}!:.lang/srctgx0", max_size=16), pair=st.text(max_size=12))
@example(pattern="{lang.upper}", pair="de-en")
@example(pattern="{lang}{", pair="de-en")
@example(pattern="{lang!r}", pair="de-en")
@example(pattern="{lang}", pair="../../x-en")
def test_text_pair_patterns_and_pairs_never_crash(pattern, pair):
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.suppress(ConfigError, DataError):
            load_text_pairs(str(Path(tmp) / pattern), [pair])
        with contextlib.suppress(ConfigError):
            assert all(a and b for a, b in parse_pairs([pair]))


# ---------------------------------------------------------------- configuration files


@FAST
@given(text=st.text(max_size=80) | JSON_VALUE.map(dumps))
@example(text='{"high": ["en"], "high": ["de"]}')
@example(text='{"high": [["en"]]}')
def test_groups_file_loads_or_names_the_fault(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "groups.json", text)
        try:
            groups = load_groups(path, ["de", "en"])
        except DataError as e:
            check_error(e, path)
            return
        assert all(set(members) <= {"de", "en"} for members in groups.values())


@FAST
@given(
    schema=JSON_VALUE
    | st.dictionaries(
        st.sampled_from(["type", "enum", "required", "properties", "items", "additionalProperties"]),
        JSON_VALUE,
        max_size=3,
    ),
    value=JSON_VALUE,
)
@example(schema={"type": 5}, value=1)
@example(schema={"required": 3}, value={})
@example(schema={"properties": []}, value={})
@example(schema={"enum": 1}, value=1)
def test_schema_is_checked_or_refused_and_then_never_crashes(schema, value):
    try:
        check_schema_keywords(schema)
    except ConfigError:
        return
    assert isinstance(schema_errors(value, schema), list)


@FAST
@given(data=st.binary(max_size=120) | st.text(alphabet="ab:- \n[]{}&*!#'\"%@?|>,0123", max_size=80).map(str.encode))
@example(data=b"a: 1\na: 2\n")
@example(data=b"a: !!python/object/apply:os.system ['echo pwned']\n")
@example(data=b"a: 2024-02-31\n")
@example(data=b"\xef\xbb\xbfa: 1\r\nb: [1, 2]\r\n")
@example(data=b"- a\n- b\n")
def test_yaml_config_loads_or_names_the_fault(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = write(tmp, "run.yaml", data)
        try:
            config = read_yaml_file(path)
        except DataError as e:
            check_error(e, path)
            if e.line is not None:  # YAML also breaks lines at CR, NEL, U+2028 and U+2029
                assert 1 <= e.line <= len(re.split(rb"\r\n|\r|\n|\xc2\x85|\xe2\x80[\xa8\xa9]", data))
            return
        assert isinstance(config, dict) and all(isinstance(k, str) for k in config)


# ---------------------------------------------------------------- duplicate keys: refused everywhere, pinned


def test_duplicate_keys_are_refused_naming_the_key():
    with tempfile.TemporaryDirectory() as tmp:
        dup = '{"prompt": "p", "completion": "a", "completion": "b"}\n'
        cases = [
            (lambda p: read_task_examples(p), "t.jsonl", dup, 1, "completion"),
            (lambda p: read_parallel(p), "p.jsonl", '{"en": "a", "de": "b", "de": "c"}\n', 1, "de"),
            (lambda p: load_examples(p, "slot"), "e.jsonl", '{"lang": "en", "lang": "de", "prompt": "p"}', 1, "lang"),
            (lambda p: load_groups(p, ["en"]), "g.json", '{\n"a": ["en"],\n"a": []}', None, "a"),
            (read_json_file, "schema.json", '{"type": "object", "type": "array"}', None, "type"),
            (read_yaml_file, "run.yaml", "lora_r: 8\nmode: baseline\nlora_r: 16\n", 3, "lora_r"),
        ]
        for read, name, text, line, field in cases:
            path = write(tmp, name, text)
            with pytest.raises(DataError, match=f"duplicate key '{field}'") as info:
                read(path)
            check_error(info.value, path, line, field)
