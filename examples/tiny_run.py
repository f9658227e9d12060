"""Train a tiny baseline and a tiny mid-align adapter on the sample data, from nothing, on a CPU (~15 s).

No weights can be downloaded, so a tiny Llama and a BPE tokenizer are built first (`examples/tiny_base.py`:
random weights, so the numbers only show that the pipeline runs: both losses fall, the adapters load). The
synthetic-world demo is where the method is shown working. Running it again rebuilds the same base and
replaces the two adapters (`overwrite_output_dir` in examples/train_tiny.yaml).

    python examples/tiny_run.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_base import build_base

from midalign.cli import main as midalign

ROOT = Path(__file__).resolve().parent

if __name__ == "__main__":
    torch.set_num_threads(1)
    build_base()
    for mode in ("baseline", "mid-align"):
        code = midalign(
            ["train", "--config", str(ROOT / "train_tiny.yaml"), "--mode", mode, "--output_dir", f"runs/tiny-{mode}"]
        )
        if code:
            raise SystemExit(code)
    print("adapters in runs/tiny-baseline and runs/tiny-mid-align; logs: tensorboard --logdir runs")
