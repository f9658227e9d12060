"""Run by `torchrun --nproc_per_node 2 tests/gather_worker.py OUT_DIR ENGINE` (tests/test_distributed.py).

ENGINE is `ddp` (DistributedDataParallel, unused parameters allowed) or `fsdp` (FSDP2 `fully_shard` per decoder
block and at the root). Each rank takes its half of 2 x B pairs and computes the alignment loss through the
engine: with negatives gathered from both ranks and with local negatives only, symmetric or not, with early exit
or through every block. Rank 0 then computes the single-process loss and gradient on all 2 x B pairs with an
unwrapped copy of the same model, and writes every figure for the test to compare.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from midalign import alignment_loss
from tests.conftest import make_model

B, LAYER = 3, 2


def pairs(n: int) -> dict[str, torch.Tensor]:
    """`n` pairs of random token ids with different lengths (right padding, pad id 0)."""
    g = torch.Generator().manual_seed(7)
    batch = {}
    for side, length in (("src", 9), ("tgt", 7)):
        ids = torch.randint(3, 128, (n, length), generator=g)
        lengths = torch.randint(2, length + 1, (n,), generator=g)
        mask = (torch.arange(length)[None, :] < lengths[:, None]).long()  # [n, T]
        batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"] = ids * mask, mask
    return batch


def loss_and_grads(model, batch, **kw) -> tuple[torch.Tensor, dict[str, list]]:
    model.zero_grad(set_to_none=True)
    loss = alignment_loss(model, **batch, layer=LAYER, **kw)
    loss.backward()
    grads = {}
    for name, p in model.named_parameters():
        if p.grad is not None:  # FSDP2 holds a shard (a DTensor): gather the whole gradient
            grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            grads[name.removeprefix("module.")] = grad.detach().tolist()
    return loss.detach(), grads


def wrap(model: torch.nn.Module, engine: str) -> torch.nn.Module:
    if engine == "ddp":
        return DistributedDataParallel(model, find_unused_parameters=True)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for block in model.model.layers:
        fully_shard(block, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def main(out: Path, engine: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model("llama", seed=0).train()
    reference = copy.deepcopy(model)
    wrapped = wrap(model, engine)
    everything = pairs(world * B)
    shard = {k: v[rank * B : (rank + 1) * B] for k, v in everything.items()}
    cases = {  # name: (gather_negatives, symmetric, early_exit)
        "global": (True, False, True),
        "local": (False, False, True),
        "global-symmetric": (True, True, True),
        "local-symmetric": (False, True, True),
        "global-every-block": (True, False, False),
    }
    result = {}
    for name, (gather, symmetric, early) in cases.items():
        loss, grads = loss_and_grads(wrapped, shard, gather_negatives=gather, symmetric=symmetric, early_exit=early)
        dist.all_reduce(loss)  # sum over ranks
        result[name] = {"loss": loss.item() / world, "grads": grads}
    if rank == 0:
        for symmetric in (False, True):
            loss, grads = loss_and_grads(reference, everything, symmetric=symmetric)
            result["single" + ("-symmetric" if symmetric else "")] = {"loss": loss.item(), "grads": grads}
    (out / f"gather{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
