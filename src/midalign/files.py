"""File input and output shared by the package.

- Atomic output: write to a temporary name in the same folder, then rename, so an interrupted write never
  leaves a file that looks complete.
- Names from users (systems, adapters, languages) that may become file names: `check_name`.
- Strict JSON and YAML reading (`loads_json`, `read_json_file`, `read_yaml_file`): duplicate keys, runaway
  nesting, lone surrogates and invalid UTF-8 are refused with a `DataError` naming the file, line and field,
  instead of being silently resolved (json keeps the last duplicate) or crashing (RecursionError).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from midalign.errors import ConfigError, DataError

# A name that is safe as (part of) a file name on every OS: no separator, no leading dot, no `..`.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_LENGTH = 100
# Deeper JSON/YAML is refused: no real record nests this far, and recursive code downstream stays far from
# Python's recursion limit.
MAX_DEPTH = 100
# YAML aliases can make a small file expand to billions of values when printed or copied.
MAX_YAML_VALUES = 100_000
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_name(name: str, what: str = "name", *, dots: bool = True) -> str:
    """Return `name` if it is safe as part of a file name (and as a PEFT adapter name when `dots=False`).

    Allowed: letters, digits, `_`, `-` and (with `dots`) `.`, starting with a letter or digit, at most
    `MAX_NAME_LENGTH` characters; so a name can never hold a path separator or be `.`/`..`.

    Raises:
        ConfigError: naming `what` and the name.
    """
    allowed = "letters, digits, '.', '_' and '-'" if dots else "letters, digits, '_' and '-'"
    ok = isinstance(name, str) and bool(_SAFE_NAME.fullmatch(name)) and len(name) <= MAX_NAME_LENGTH
    if not ok or (not dots and "." in name):
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:60] + "..."
        raise ConfigError(
            f"{what} {shown!r} may only hold {allowed}, starting with a letter or digit "
            f"(at most {MAX_NAME_LENGTH} characters)"
        )
    return name


def current_umask() -> int:
    """The process's umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Give a file or folder made by `tempfile` (always 0600 / 0700) the mode a plain `open`/`mkdir` would have."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def apply_umask_tree(folder: str | os.PathLike) -> None:
    """`apply_umask` to a folder and everything in it: safetensors' `save_file` (so PEFT's and transformers'
    `save_pretrained`) writes through a 0600 temporary file, whatever the umask."""
    apply_umask(folder, folder=True)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            apply_umask(os.path.join(root, name), folder=True)
        for name in files:
            apply_umask(os.path.join(root, name))


LOCK_FILE = ".midalign.lock"


def check_output_folder(folder: str | os.PathLike, what: str = "") -> Path:
    """Refuse, before any work, an output folder that is a file, lies under a file, or cannot be made or written;
    `what` names the option (`--output_dir`). Nothing is created: a command that writes its folder as a whole at
    the end (a merge) checks it with this first.
    """
    folder = Path(folder)
    label = f"{what} {folder}" if what else str(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{label} is a file, not a folder")
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        raise ConfigError(f"{label}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{label} is not writable: permission denied on {existing}")
    return folder


def check_writable(folder: str | os.PathLike) -> Path:
    """Create `folder` if needed and prove it takes a file now, not after hours of work."""
    folder = check_output_folder(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{folder} is not writable: {e.strerror}") from None
    return folder


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "run") -> Iterator[None]:
    """Hold an exclusive lock on `folder` for one run; a second run into it is refused, naming the holder.

    The lock is `fcntl.flock` on `folder/.midalign.lock` (released by the OS if the holder dies, so a killed run
    never leaves a stale lock); the file says who holds it. Where `fcntl` does not exist (Windows), no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    created = not Path(folder).exists()
    path = check_writable(folder) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 500, 0).decode("utf-8", "replace").strip() or "another process"
            raise ConfigError(
                f"{folder} is in use by another {what} ({holder}); wait for it to finish or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {stamp}".encode(), 0)
        try:
            yield
        except BaseException:
            if created and [p.name for p in Path(folder).iterdir()] == [LOCK_FILE]:
                path.unlink()  # a run refused before it wrote anything leaves no folder behind
                Path(folder).rmdir()
            raise
    finally:
        os.close(fd)  # releases the lock


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file in the same folder + `os.replace`), with the user's umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        apply_umask(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def strict_json(obj: Any) -> Any:
    """`obj` with every NaN or infinite float replaced by None: strict JSON has no such numbers (Python's `json`
    would write `NaN`, which other readers refuse), and each of them means "no value" where midalign makes one."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def dumps_json(obj: Any, *, indent: int | None = None) -> str:
    """`obj` as strict JSON text (`strict_json`; UTF-8 characters kept): the one way midalign writes JSON."""
    return json.dumps(strict_json(obj), indent=indent, ensure_ascii=False, allow_nan=False)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write `obj` as strict JSON (`dumps_json`) to `path` atomically."""
    return write_text_atomic(path, dumps_json(obj, indent=indent) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write one strict JSON object per line to `path` atomically."""
    return write_text_atomic(path, "".join(dumps_json(r) + "\n" for r in rows))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _check_tree(value: Any, surrogates: bool, path, line, field) -> None:
    """Refuse nesting deeper than MAX_DEPTH and (when `surrogates`) strings that are not valid Unicode."""
    stack = [(value, 1, field)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, dict):
            children = [(k, where or k) for k in item] + [(v, where or k) for k, v in item.items()]
        elif isinstance(item, list):
            children = [(v, where) for v in item]
        else:
            if surrogates and isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as e:
                    bad = item[e.start].encode("unicode_escape").decode("ascii")
                    raise DataError(
                        f"lone surrogate {bad} in a string (not valid Unicode)", path=path, line=line, field=where
                    ) from None
            continue
        if depth > MAX_DEPTH:
            raise DataError(f"nested deeper than {MAX_DEPTH} levels", path=path, line=line, field=where)
        stack += [(child, depth + 1, where) for child, where in children]


def loads_json(
    text: str,
    *,
    path: str | os.PathLike | None = None,
    line: int | None = None,
    field: str | None = None,
    allow_nan: bool = True,
) -> Any:
    """Parse one JSON value strictly; every refusal is a `DataError` at `path`, `line`, `field`.

    Refused (where `json.loads` would keep the last duplicate, crash or return unencodable text): invalid
    JSON, a repeated key in one object (the error names the key), nesting deeper than `MAX_DEPTH`, numbers
    too long for Python's int conversion, strings holding a lone surrogate (`"\\ud800"`) and, without
    `allow_nan`, `NaN`/`Infinity`. Without a given `line`, the line of a syntax error in a multi-line text
    is reported.
    """
    where = str(path) if path is not None else None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=None if allow_nan else _refuse_constant)
    except _DuplicateKey as e:
        message = f"duplicate key {e.key!r} (an object may name a key once)"
        raise DataError(message, path=where, line=line, field=field or e.key) from None
    except json.JSONDecodeError as e:
        message = f"invalid JSON: {e.msg} (column {e.colno})"
        raise DataError(message, path=where, line=line or e.lineno, field=field) from None
    except RecursionError:
        raise DataError(f"nested deeper than {MAX_DEPTH} levels", path=where, line=line, field=field) from None
    except ValueError as e:  # a number with too many digits, or a refused NaN/Infinity
        raise DataError(f"invalid JSON: {e}", path=where, line=line, field=field) from None
    _check_tree(value, bool(_SURROGATE_ESCAPE.search(text)), where, line, field)
    return value


def read_bytes_checked(path: str | os.PathLike) -> bytes:
    """The bytes of `path`, or a `DataError` naming it when it is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        raise DataError("is a folder, not a file", path=str(path))
    if not path.is_file():
        raise DataError("file not found", path=str(path))
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror}", path=str(path)) from None


def _read_text(path: str | os.PathLike) -> str:
    data = read_bytes_checked(path)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"invalid UTF-8 ({e.reason} at byte {e.start})", path=str(path), line=line) from None


def read_json_file(path: str | os.PathLike) -> Any:
    """One JSON value from a UTF-8 file (a BOM is allowed), read with `loads_json`'s rules."""
    return loads_json(_read_text(path), path=path)


class _StrictYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no tag runs code), refusing a key repeated in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden, as YAML says
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable: SafeLoader refuses it with its own error
                continue
            if duplicate:
                line = key_node.start_mark.line + 1
                raise DataError(f"duplicate key {key!r} (a mapping may name a key once)", line=line, field=str(key))
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _count_values(value: Any) -> int:
    """How many values `value` holds once aliases are expanded (as printing it would), capped just above
    MAX_YAML_VALUES; nesting is checked on the way."""
    count, stack = 0, [(value, 1)]
    while stack and count <= MAX_YAML_VALUES:
        item, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH:
            raise DataError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack += [(x, depth + 1) for pair in item.items() for x in pair]
        elif isinstance(item, list | tuple | set):
            stack += [(x, depth + 1) for x in item]
    return count


def read_yaml_file(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping with string keys from a UTF-8 file, read with PyYAML's safe loader.

    No tag can run code (`!!python/object` is refused), and unlike plain `yaml.safe_load` a repeated key is
    refused instead of silently keeping the last; so are nesting deeper than `MAX_DEPTH` and aliases that
    expand to more than `MAX_YAML_VALUES` values.

    Raises:
        DataError: naming the file, the line (when YAML knows it) and the key at fault.
    """
    where = str(path)
    text = _read_text(path)
    try:
        value = yaml.load(text, Loader=_StrictYamlLoader)  # a SafeLoader: no tag runs code
    except DataError as e:  # a duplicate key
        raise DataError(e.reason, path=where, line=e.line, field=e.field) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise DataError(f"invalid YAML: {problem}", path=where, line=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise DataError(f"nested deeper than {MAX_DEPTH} levels", path=where) from None
    except (ValueError, TypeError, OverflowError) as e:  # a scalar YAML resolves but cannot build (2024-02-31)
        raise DataError(f"invalid YAML value: {e}", path=where) from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise DataError(f"expected a mapping of settings, got {type(value).__name__}", path=where, line=1)
    for key in value:
        if not isinstance(key, str):
            raise DataError(f"setting names must be strings, got {key!r}", path=where, field=str(key))
    try:
        count = _count_values(value)
    except DataError as e:
        raise DataError(e.reason, path=where) from None
    if count > MAX_YAML_VALUES:
        raise DataError(f"more than {MAX_YAML_VALUES} values once aliases are expanded", path=where)
    return value
