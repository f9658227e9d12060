"""Run by `torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_DIR MODE FINETUNING [GATHER]` or the same through
`accelerate launch` (tests/test_distributed.py).

Trains a few steps of a tiny model under DDP (gloo on CPU), then every rank writes its trainable weights and the
log history, so the test can check that the replicas stayed identical and that both losses were logged.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midalign.train import build_trainer
from tests.conftest import make_model, make_tokenizer
from tests.test_train import PAIRS, TASK, config


def main(out: Path, mode: str, finetuning: str, gather: bool = False) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    # Each rank writes its own identical copy: no process group exists yet to synchronise on.
    task, pairs = out / f"task{rank}.jsonl", out / f"pairs{rank}.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in TASK * 4))
    rows = [{"src": s, "tgt": t, "src_lang": lang, "tgt_lang": "en"} for s, t, lang in PAIRS]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    data = {"task_data": str(task), "parallel_data": str(pairs), "dir": out}
    args = config(
        data,
        mode,
        output_dir=str(out / "run"),
        per_device_train_batch_size=2,
        align_batch_size=2,
        use_cpu=True,
        finetuning=finetuning,
        align_gather_negatives=gather,
    )
    trainer = build_trainer(args, model=make_model("llama"), tokenizer=make_tokenizer())
    trainer.train()
    weights = {n: p.detach().contiguous() for n, p in trainer.model.named_parameters() if p.requires_grad}
    save_file(weights, str(out / f"rank{rank}.safetensors"))
    accelerator = trainer.accelerator
    world = {"num_processes": accelerator.num_processes, "distributed": str(accelerator.distributed_type)}
    (out / f"rank{rank}.json").write_text(json.dumps({"log_history": trainer.state.log_history, **world}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3], gather=sys.argv[4:] == ["gather"])
