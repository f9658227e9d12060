"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from midalign.errors import ConfigError
from midalign.io import check_name


def named_path(value: str) -> tuple[str, str]:
    """argparse type for `NAME=PATH`, as in `--adapter mid-align=runs/mid-align`."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def named_paths(
    pairs: Iterable[tuple[str, str]] | None, what: str = "adapter", *, dots: bool = False
) -> dict[str, str]:
    """Repeated `NAME=PATH` options as `{name: path}`, in order.

    A name given twice is refused (a dict would keep only the last path). Names become system names in reports
    and file names (`midalign.io.check_name`); adapter names hold no `.` (`dots=False`), which PEFT refuses.

    Raises:
        ConfigError: a name given twice, or one that is not safe as a file name.
    """
    out: dict[str, str] = {}
    for name, path in pairs or ():
        check_name(name, f"{what} name", dots=dots)
        if name in out:
            raise ConfigError(f"two {what}s share a name: {name!r} is given twice")
        out[name] = path
    return out
