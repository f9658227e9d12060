"""The Python examples in the README and the docs run as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def run_block(block: str, name: str, capsys) -> None:
    exec(compile(block, name, "exec"), {"__name__": "__doc_example__"})
    assert capsys.readouterr().out.strip()  # every example prints what it shows


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A copy of examples/ with runs/ built by examples/tiny_run.py (tiny base model and two adapters)."""
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "examples/tiny_run.py"], cwd=work, check=True, capture_output=True, env=env)
    return work


@pytest.mark.parametrize("block", python_blocks(ROOT / "README.md"))
def test_readme_python_blocks_run(block, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_block(block, "README.md", capsys)


@pytest.mark.parametrize("doc", ["training.md", "analysis.md", "scaling.md"])
def test_doc_python_blocks_run(doc, workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    blocks = python_blocks(ROOT / "docs" / doc)
    assert blocks
    for block in blocks:
        run_block(block, f"docs/{doc}", capsys)
