"""Argument types shared by the subcommands."""

from __future__ import annotations

import argparse


def named_path(value: str) -> tuple[str, str]:
    """argparse type for `NAME=PATH`, as in `--adapter mid-align=runs/mid-align`."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path
