"""Two CPU processes under torchrun (gloo DDP): training runs, replicas stay identical, both losses logged."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launch(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def check_replicas(out: Path) -> None:
    """Both ranks ran as one DDP job, ended with identical weights and logged both losses."""
    a, b = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert torch.equal(a[k], b[k]), k
    record = json.loads((out / "rank0.json").read_text())
    assert record["num_processes"] == 2 and record["distributed"].endswith("MULTI_CPU")
    steps = [h for h in record["log_history"] if "loss" in h]
    assert len(steps) == 3
    assert all("task_loss" in h and "align_loss" in h for h in steps)


@pytest.mark.parametrize(
    ("mode", "finetuning", "gather"),
    [("mid-align", "lora", ""), ("mid-align", "full", ""), ("mid-align", "lora", "gather")],
)
def test_torchrun_two_processes(tmp_path, mode, finetuning, gather):
    launch([*TORCHRUN, str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path), mode, finetuning, gather])
    check_replicas(tmp_path)


def test_accelerate_launch_with_the_shipped_ddp_config(tmp_path):
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = ROOT / "configs" / "accelerate" / "ddp.yaml"
    launch(
        [
            *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)),
            *("--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port)),
            *(str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path), "mid-align", "lora", "gather"),
        ]
    )
    check_replicas(tmp_path)


@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_gathered_negatives_equal_the_single_process_global_batch(tmp_path, engine):
    """2 ranks x B pairs with gather_negatives: the mean loss and the synchronised gradients equal one process on
    the 2B pairs, under DDP and FSDP2, with early exit and through every block."""
    launch([*TORCHRUN, str(ROOT / "tests" / "gather_worker.py"), str(tmp_path), engine])
    ranks = [json.loads((tmp_path / f"gather{r}.json").read_text()) for r in range(2)]
    for case, reference in [("", ""), ("-symmetric", "-symmetric"), ("-every-block", "")]:
        single, gathered = ranks[0]["single" + reference], ranks[0]["global" + case]
        assert gathered["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert single["grads"].keys() <= gathered["grads"].keys() and len(single["grads"]) > 0
        for name, expected in single["grads"].items():
            expected, got = torch.tensor(expected), torch.tensor(gathered["grads"][name])
            assert (got - expected).norm() <= 1e-5 * expected.norm() + 1e-8, name
        # the engine kept the replicas' gradients identical
        assert ranks[0]["global" + case]["grads"] == ranks[1]["global" + case]["grads"]
    for suffix in ("", "-symmetric"):  # local negatives are a different (the paper's) loss
        assert abs(ranks[0]["local" + suffix]["loss"] - ranks[0]["single" + suffix]["loss"]) > 1e-3


def test_evaluate_generates_data_parallel_with_the_outputs_of_one_process(tmp_path, tiny_model_dir):
    """`torchrun -m midalign.cli evaluate` on 2 processes: each generates half the prompts, the main one writes, and
    the predictions equal a one-process run's (greedy, one prompt per batch, so no padding differs)."""
    from midalign.cli import main

    words = ["the cat sat", "a big red house", "the dog", "on the mat", "a small blue cat", "the house"]
    data = tmp_path / "slots.jsonl"
    rows = [{"lang": lang, "prompt": w, "gold": "None"} for lang in ("en", "de") for w in words]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    common = ["evaluate", "--task", "slot", "--model_name_or_path", str(tiny_model_dir), "--data", str(data)]
    common += ["--chat_template", "off", "--batch_size", "1", "--max_new_tokens", "4", "--device", "auto"]
    assert main([*common, "--output_dir", str(tmp_path / "one")]) == 0
    launch([*TORCHRUN, "-m", "midalign.cli", *common, "--output_dir", str(tmp_path / "two")])
    one, two = ((tmp_path / d / "predictions-base.jsonl").read_text() for d in ("one", "two"))
    assert one == two and len(one.splitlines()) == len(rows)
    assert (tmp_path / "two" / "scores.json").is_file()
