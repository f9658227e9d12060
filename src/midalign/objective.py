"""The middle-layer alignment objective (Liu & Niehues 2025, section 2 of docs/method.md).

`h(x)` is the masked mean of the states after decoder block `layer`; `logits[i, j] = cos(h(s_i), h(t_j)) / tau`;
the loss is `mean_i CE(logits[i, :], i)` with the source sentences as queries and in-batch negatives.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from midalign.layers import forward_to_layer
from midalign.losses import info_nce, retrieval_accuracy
from midalign.pooling import Pooling, pool


def _pad_right(ids: torch.Tensor, mask: torch.Tensor, length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - ids.shape[1]
    if extra == 0:
        return ids, mask
    return F.pad(ids, (0, extra), value=pad_id), F.pad(mask, (0, extra), value=0)  # [B, T] -> [B, length]


def pair_embeddings(
    model: nn.Module,
    src_input_ids: torch.Tensor,
    src_attention_mask: torch.Tensor,
    tgt_input_ids: torch.Tensor,
    tgt_attention_mask: torch.Tensor,
    *,
    layer: int,
    pooling: Pooling = "mean",
    src_pool_mask: torch.Tensor | None = None,
    tgt_pool_mask: torch.Tensor | None = None,
    one_forward: bool = True,
    early_exit: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled states after block `layer` of both sides of a batch of pairs.

    Args:
        src_input_ids, src_attention_mask, tgt_input_ids, tgt_attention_mask: `[B, Ts]`, `[B, Tt]`.
        pool_mask: which tokens enter the mean (defaults to the attention mask; the trainer passes the
            attention mask with special tokens such as BOS zeroed).
        one_forward: run both sides as one batch of `2B` rows (padded on the right to a common length,
            which changes no real token's state in a causal model) instead of two forwards.

    Returns:
        `(src [B, H], tgt [B, H], keepalive)`: `keepalive` is a zero scalar; under DDP it is tied to every
        parameter the forward touched. Add it to the loss so that DDP sees a gradient for each of them.
    """
    src_pool_mask = src_attention_mask if src_pool_mask is None else src_pool_mask
    tgt_pool_mask = tgt_attention_mask if tgt_pool_mask is None else tgt_pool_mask
    batch = src_input_ids.shape[0]
    if tgt_input_ids.shape[0] != batch:
        raise ValueError(f"src has {batch} sentences but tgt has {tgt_input_ids.shape[0]}")
    if one_forward:
        length = max(src_input_ids.shape[1], tgt_input_ids.shape[1])
        s_ids, s_mask = _pad_right(src_input_ids, src_attention_mask, length, 0)
        t_ids, t_mask = _pad_right(tgt_input_ids, tgt_attention_mask, length, 0)
        _, s_pool = _pad_right(src_input_ids, src_pool_mask, length, 0)
        _, t_pool = _pad_right(tgt_input_ids, tgt_pool_mask, length, 0)
        ids = torch.cat([s_ids, t_ids])  # [2B, T]
        hidden, out = forward_to_layer(model, ids, torch.cat([s_mask, t_mask]), layer, early_exit=early_exit)
        pooled = pool(hidden, torch.cat([s_pool, t_pool]), pooling)  # [2B, T, H] -> [2B, H]
        src, tgt = pooled[:batch], pooled[batch:]  # [2B, H] -> [B, H], [B, H]
        keepalive = _zero_from(model, out)
    else:
        h_s, out_s = forward_to_layer(model, src_input_ids, src_attention_mask, layer, early_exit=early_exit)
        h_t, out_t = forward_to_layer(model, tgt_input_ids, tgt_attention_mask, layer, early_exit=early_exit)
        src, tgt = pool(h_s, src_pool_mask, pooling), pool(h_t, tgt_pool_mask, pooling)  # [B, H] each
        keepalive = _zero_from(model, out_s) + _zero_from(model, out_t)
    return src, tgt, keepalive


def is_distributed_wrapper(model: nn.Module) -> bool:
    """Whether `model` is wrapped by an engine that synchronises gradients: DDP, FSDP (1 or 2) or DeepSpeed."""
    names = {cls.__name__ for cls in type(model).__mro__}
    return isinstance(model, DistributedDataParallel) or bool(
        names & {"FullyShardedDataParallel", "FSDPModule", "DeepSpeedEngine"}
    )


def _zero_from(model: nn.Module, outputs) -> torch.Tensor:
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


def contrastive_loss(
    src: torch.Tensor,
    tgt: torch.Tensor,
    *,
    temperature: float = 0.1,
    symmetric: bool = False,
    detach_tgt: bool = False,
    gather_negatives: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE of pooled pairs and in-batch retrieval accuracy, with local or global negatives.

    With `gather_negatives` under `torch.distributed` (every rank holding `B` pairs), each rank's queries are
    scored against the `W * B` candidates of all ranks; the loss of each rank is the mean over its own queries,
    so the mean over ranks equals the single-process loss on the global batch. Without it (or on one process)
    the candidates are the local batch, as in the paper (the authors' DeepSpeed runs used 32 pairs per device).

    Args:
        src, tgt: `[B, H]` pooled states; src are the queries.

    Returns:
        `(loss, accuracy)`: scalar fp32 loss, and the detached retrieval accuracy of this rank's queries.
    """
    if not (gather_negatives and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        loss = info_nce(src, tgt, temperature, symmetric=symmetric, detach_candidates=detach_tgt)
        return loss, retrieval_accuracy(src.detach(), tgt.detach())
    offset = dist.get_rank() * src.shape[0]
    tgt_candidates = tgt.detach() if detach_tgt else tgt
    all_tgt = gather_rows(tgt_candidates)  # [B, H] -> [W * B, H]
    loss = info_nce(src, all_tgt, temperature, positive_offset=offset)
    if symmetric:
        all_src = gather_rows(src)  # [B, H] -> [W * B, H]
        loss = (loss + info_nce(tgt_candidates, all_src, temperature, positive_offset=offset)) / 2
    return loss, retrieval_accuracy(src.detach(), all_tgt.detach(), positive_offset=offset)


def alignment_loss(
    model: nn.Module,
    src_input_ids: torch.Tensor,
    src_attention_mask: torch.Tensor,
    tgt_input_ids: torch.Tensor,
    tgt_attention_mask: torch.Tensor,
    *,
    layer: int,
    temperature: float = 0.1,
    symmetric: bool = False,
    detach_tgt: bool = False,
    pooling: Pooling = "mean",
    src_pool_mask: torch.Tensor | None = None,
    tgt_pool_mask: torch.Tensor | None = None,
    early_exit: bool = True,
    gather_negatives: bool = False,
) -> torch.Tensor:
    """The whole alignment objective on a batch of parallel pairs; src sentences are the queries.

    With the defaults (`symmetric=False`, mean pooling over the attention mask) this is the loss of the
    authors' released code: masked mean of the block-`layer` output before the final norm, cosine
    similarity divided by `temperature`, cross-entropy over the in-batch targets.

    Args:
        model: a decoder-only causal LM, plain or wrapped (PEFT, DDP).
        src_input_ids, src_attention_mask: `[B, Ts]` source side (queries).
        tgt_input_ids, tgt_attention_mask: `[B, Tt]` target side (candidates; row `i` translates src row `i`).
        layer: decoder block whose output is aligned (`hidden_states[layer]`).
        temperature: cosine similarities are divided by it.
        symmetric: average with the tgt-as-query direction.
        detach_tgt: no gradient into the target side.
        pooling: `"mean"` (default) or `"last"`.
        src_pool_mask, tgt_pool_mask: tokens that enter the pooling; default the attention masks.
        early_exit: run only blocks `1..layer`.
        gather_negatives: under `torch.distributed`, score against the pairs of every rank (`contrastive_loss`).

    Returns:
        Scalar fp32 loss.
    """
    src, tgt, keepalive = pair_embeddings(
        model,
        src_input_ids,
        src_attention_mask,
        tgt_input_ids,
        tgt_attention_mask,
        layer=layer,
        pooling=pooling,
        src_pool_mask=src_pool_mask,
        tgt_pool_mask=tgt_pool_mask,
        early_exit=early_exit,
    )
    loss, _ = contrastive_loss(
        src,
        tgt,
        temperature=temperature,
        symmetric=symmetric,
        detach_tgt=detach_tgt,
        gather_negatives=gather_negatives,
    )
    return loss + keepalive
