"""Progress bars, one way for the whole library.

A process can be given its own terminal row (`set_row`): the demo fine-tunes and evaluates two systems at a time
in two processes, and each draws its bars on its own line instead of over the other's.
"""

from __future__ import annotations

from tqdm.auto import tqdm

_row: int | None = None


def set_row(row: int | None) -> None:
    """Draw this process's bars on terminal row `row` (0: the current line; None: tqdm's own placement)."""
    global _row
    _row = row


def bar(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar (same arguments) on this process's row."""
    return tqdm(iterable, position=_row, **kwargs)
