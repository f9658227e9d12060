"""Two CPU processes under torchrun (gloo DDP): training runs, replicas stay identical, both losses logged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("mode", "finetuning"), [("mid-align", "lora"), ("mid-align", "full")])
def test_torchrun_two_processes(tmp_path, mode, finetuning):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "ddp_worker.py"),
        str(tmp_path),
        mode,
        finetuning,
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    history = json.loads((tmp_path / "rank0.json").read_text())
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 3
    assert all("task_loss" in h and "align_loss" in h for h in steps)
