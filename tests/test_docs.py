"""Every example in the README and the docs runs as written, as a new user would run them: on a fresh copy of
the repository, pages in any order (each page top to bottom), and everything a second time in the same folder.

`bash` blocks run in bash, `python` blocks in this process; `sh` blocks are never run (they need a hub model or
GPUs). Three examples are left to CI and to the benchmarks because they take minutes: the README's install line
(CI runs it), the demo's default preset and the transfer benchmark (the demo tests run its smallest settings).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_IN_THE_SUITE = ("pip install", "midalign demo", "benchmarks/transfer.py")  # any block that holds one


def examples(page: Path) -> list[tuple[str, str]]:
    """`(language, code)` of each runnable block of `page`, in order."""
    blocks = re.findall(r"```(bash|python)\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    return [(lang, code) for lang, code in blocks if not any(slow in code for slow in NOT_IN_THE_SUITE)]


def run(page: Path, lang: str, code: str, work: Path, capsys) -> None:
    where = f"{page.relative_to(ROOT)}: {code.strip().splitlines()[0]}"
    if lang == "python":
        capsys.readouterr()
        exec(compile(code, str(page.relative_to(ROOT)), "exec"), {"__name__": "__doc_example__"})
        assert capsys.readouterr().out.strip(), f"{where}: printed nothing"  # every example shows its result
        return
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


def test_every_example_runs_in_any_page_order_and_twice(tmp_path, monkeypatch, capsys):
    work = tmp_path / "clone"

    def fresh_clone(folder, names):  # what a clone has: no outputs of earlier runs, no caches
        at_root = {".git", "runs", "data"} if Path(folder) == ROOT else set()
        return [n for n in names if n in at_root or n == "__pycache__" or n.endswith(".egg-info")]

    shutil.copytree(ROOT, work, ignore=fresh_clone)
    monkeypatch.chdir(work)
    assert sum(len(examples(page)) for page in PAGES) >= 15
    for seed in (0, 1):  # two orders, the second on top of the first's outputs
        pages = list(PAGES)
        random.Random(seed).shuffle(pages)
        for page in pages:
            for lang, code in examples(page):
                run(page, lang, code, work, capsys)
