"""Checkpoint folders of a run: which exist, which are complete, which one to resume from."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from midalign.files import apply_umask_tree


def checkpoints(output_dir: str | Path) -> list[Path]:
    """Every `checkpoint-N` folder in `output_dir`, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-", 1)[1].isdigit()]
    return sorted(found, key=step)


def step(checkpoint: str | Path) -> int:
    """The `N` of `checkpoint-N`."""
    return int(Path(checkpoint).name.split("-", 1)[1])


def is_complete(checkpoint: Path) -> bool:
    """Trainer writes `trainer_state.json` last; a checkpoint without a readable one was interrupted."""
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-N` folder in `output_dir`, if any (interrupted saves are passed over)."""
    complete = [p for p in checkpoints(output_dir) if is_complete(p)]
    return str(complete[-1]) if complete else None


def save_through_staging(out: Path, save: Callable[[Path], None], should_save: bool) -> None:
    """Run `save` into `out/.saving`, then rename each file into `out`: an interrupted save never leaves weights
    under the final names that look finished. Every rank calls this (the engines save collectively); only the
    main process (`should_save`) moves files."""
    staging = out / ".saving"  # the same name on every rank
    if should_save and staging.exists():
        shutil.rmtree(staging)
    save(staging)
    if should_save:
        apply_umask_tree(staging)  # safetensors writes 0600 whatever the umask; the run's files keep the user's
        for entry in sorted(staging.iterdir()):
            target = out / entry.name
            if entry.is_dir() and target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)
        staging.rmdir()
