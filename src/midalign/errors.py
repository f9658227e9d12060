"""The errors midalign raises on bad input. Each names where the problem is, so users can fix it."""

from __future__ import annotations

# Exit codes of the `midalign` command line (docs/reliability.md).
EXIT_USAGE = 1  # no command given: the help is printed
EXIT_INPUT = 2  # bad data, configuration, model or flag (a MidalignError; usage errors are ConfigErrors)
EXIT_SYSTEM = 3  # the machine refused: disk full, permission denied, a file vanished
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it)


class MidalignError(Exception):
    """Base class of every error midalign raises on purpose."""

    exit_code = EXIT_INPUT


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


class TrainingInterrupted(MidalignError, KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); the message says where the last checkpoint is and how to resume."""

    exit_code = EXIT_INTERRUPTED


def report(command: str, error: BaseException) -> int:
    """Print a known failure as one line naming what to fix, and return its exit code.

    Known failures are midalign's own errors, operating-system errors (a full disk, a folder without permission)
    and Ctrl-C. Anything else is a bug and is raised with its traceback. With `MIDALIGN_DEBUG=1` (the CLI's
    `--debug`) the traceback of a known failure is printed too.
    """
    import os
    import sys
    import traceback

    if isinstance(error, MidalignError):
        message, code = str(error), error.exit_code
    elif isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        message, code = f"{error.strerror or error}{where}", EXIT_SYSTEM
    elif isinstance(error, KeyboardInterrupt):
        message, code = "interrupted", EXIT_INTERRUPTED
    else:
        raise error
    if os.environ.get("MIDALIGN_DEBUG"):
        traceback.print_exception(error, file=sys.stderr)
    print(f"midalign {command}: error: {message}", file=sys.stderr)
    return code
