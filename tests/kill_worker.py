"""Run by tests/test_reliability.py: `python tests/kill_worker.py WHERE STEP -- <midalign train arguments>`.

Runs `midalign train` in this process and SIGKILLs it (no cleanup, no atexit, like the OOM killer or a
preempted node) at optimizer step STEP: WHERE is `step` (after checkpoint-STEP was saved, as step STEP + 1
begins) or `save` (while checkpoint-STEP is being written: weights and optimizer on disk, no trainer state).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from transformers import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midalign.cli import main
from midalign.train import MidAlignTrainer


def kill_at(where: str, step: int) -> None:
    def die(trainer) -> None:
        if trainer.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)

    if where == "step":
        original = MidAlignTrainer.training_step

        def training_step(self, *args, **kwargs):
            die(self)
            return original(self, *args, **kwargs)

        MidAlignTrainer.training_step = training_step
    else:
        original_rng = Trainer._save_rng_state

        def save_rng_state(self, output_dir):
            die(self)
            return original_rng(self, output_dir)

        Trainer._save_rng_state = save_rng_state


if __name__ == "__main__":
    torch.set_num_threads(1)
    where, step, _, *argv = sys.argv[1:]
    kill_at(where, int(step))
    sys.exit(main(["train", *argv]))
