"""The Python examples in the README and docs/training.md run as written."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def run_block(block: str, name: str, capsys) -> None:
    exec(compile(block, name, "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.strip()  # every example prints what it shows


@pytest.mark.parametrize("block", python_blocks(ROOT / "README.md"))
def test_readme_python_blocks_run(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_block(block, "README.md", capsys)


@pytest.mark.parametrize("block", python_blocks(ROOT / "docs" / "training.md"))
def test_training_doc_python_blocks_run(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    sys.path.insert(0, str(tmp_path / "examples"))
    try:
        import tiny_run

        tiny_run.build_base()  # runs/tiny-base, which the examples train from
    finally:
        sys.path.remove(str(tmp_path / "examples"))
        sys.modules.pop("tiny_run", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run_block(block, "docs/training.md", capsys)
