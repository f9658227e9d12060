"""Data-parallel plumbing of the alignment objective: negatives gathered from every rank, and the zero
"keep-alive" that gives every parameter a gradient under DDP, FSDP and DeepSpeed."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def is_distributed_wrapper(model: nn.Module) -> bool:
    """Whether `model` is wrapped by an engine that synchronises gradients: DDP, FSDP (1 or 2) or DeepSpeed."""
    names = {cls.__name__ for cls in type(model).__mro__}
    return isinstance(model, DistributedDataParallel) or bool(
        names & {"FullyShardedDataParallel", "FSDPModule", "DeepSpeedEngine"}
    )


def keepalive(model: nn.Module, outputs) -> torch.Tensor:
    """Zero tied to the forward's output, under a data-parallel engine only.

    DDP (with unused parameters allowed), FSDP and DeepSpeed expect a gradient for every parameter the forward
    reached. The final norm ran and the LM head was called (on no position: the logits are `[B, 0, V]`, see
    `midalign.layers`), but the alignment loss does not depend on them; `0 * logits.sum()` still reaches both
    through the autograd graph and gives them (and, when the forward ran every block, the blocks above the
    alignment layer) a zero gradient, so every rank runs the same reductions. Outside those engines it would only
    make the backward pass run through those modules for nothing.
    """
    logits = getattr(outputs, "logits", None)
    if not is_distributed_wrapper(model) or logits is None or not logits.requires_grad:
        return torch.zeros((), device=logits.device if logits is not None else "cpu")
    return logits.float().sum() * 0.0


class _GatherWithGrad(torch.autograd.Function):
    """All-gather of `[B, H]` rows from every rank into `[W * B, H]`, differentiable.

    Backward: every rank's loss depends on every rank's rows, so the incoming gradients are summed over ranks
    (an all-reduce; the pooled vectors are small) and each rank keeps the slice of its own rows. With DDP's
    gradient averaging this gives exactly the gradient of the mean loss over the global batch.
    """

    @staticmethod
    def forward(ctx, rows: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.batch = dist.get_rank(), rows.shape[0]
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        return torch.cat(parts)  # W x [B, H] -> [W * B, H], rank-major

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)  # [W * B, H], summed over every rank's loss
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]  # [W * B, H] -> [B, H], own rows


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """`[B, H]` on each rank -> `[W * B, H]` (rank-major) on every rank; gradients reach each rank's own rows."""
    return _GatherWithGrad.apply(rows)


def gathering(requested: bool) -> bool:
    """Whether negatives are gathered: asked for, and more than one process of `torch.distributed` runs."""
    return requested and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
