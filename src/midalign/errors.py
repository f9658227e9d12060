"""The errors midalign raises on bad input. Each names where the problem is, so users can fix it."""

from __future__ import annotations


class MidalignError(Exception):
    """Base class of every error midalign raises on purpose."""


class DataError(MidalignError, ValueError):
    """A data file (or in-memory record) is malformed: names the file, the 1-based line and the field."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        self.reason = message  # the message without the location, to re-raise it elsewhere
        where = ":".join(str(x) for x in (path, line) if x is not None)
        prefix = f"{where}: " if where else ""
        field_part = f"field '{field}': " if field else ""
        super().__init__(f"{prefix}{field_part}{message}")


class ConfigError(MidalignError, ValueError):
    """A configuration value is invalid (unknown choice, layer out of range, missing path, ...)."""


class UnsupportedModelError(MidalignError, TypeError):
    """The model is not a decoder-only model whose decoder exposes its blocks as a `layers` list."""
