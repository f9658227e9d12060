"""The middle-layer alignment objective (Liu & Niehues 2025; docs/method.md, section 2).

`h(x)` is the masked mean of the states after decoder block `layer`; `logits[i, j] = cos(h(s_i), h(t_j)) / tau`;
the loss is `mean_i CE(logits[i, :], i)` with the source sentences as queries and in-batch negatives.

`AlignmentObjective` is the one place this is computed: the trainer calls it on every alignment batch, and
`alignment_loss` (the functional form in the README) builds one and calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from midalign.distributed import gather_rows, gathering, keepalive
from midalign.layers import forward_to_layer
from midalign.losses import info_nce, retrieval_accuracy
from midalign.pooling import Pooling, pool


def _pad_right(ids: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    extra = length - ids.shape[1]
    return F.pad(ids, (0, extra)), F.pad(mask, (0, extra))  # [B, T] -> [B, length]; pad id 0 is masked out


def pair_embeddings(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    *,
    layer: int,
    pooling: Pooling = "mean",
    early_exit: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled states after block `layer` of both sides of a batch of pairs, in one forward of `2B` rows.

    The sides are padded on the right to a common length, which changes no real token's state in a causal model.
    `batch` holds `src_input_ids`, `src_attention_mask`, `tgt_input_ids`, `tgt_attention_mask` (`[B, T]`) and
    optionally `src_pool_mask`, `tgt_pool_mask`: the tokens that enter the mean (default: the attention masks;
    the trainer passes them with BOS zeroed).

    Returns:
        `(src [B, H], tgt [B, H], keepalive)`: `keepalive` is a zero scalar tied, under a data-parallel engine, to
        every parameter the forward touched (`midalign.distributed.keepalive`); add it to the loss.
    """
    src_ids, tgt_ids = batch["src_input_ids"], batch["tgt_input_ids"]
    if tgt_ids.shape[0] != src_ids.shape[0]:
        raise ValueError(f"src has {src_ids.shape[0]} sentences but tgt has {tgt_ids.shape[0]}")
    length = max(src_ids.shape[1], tgt_ids.shape[1])
    sides = [
        (
            *_pad_right(batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"], length),
            _pad_right(
                batch[f"{side}_input_ids"], batch.get(f"{side}_pool_mask", batch[f"{side}_attention_mask"]), length
            )[1],
        )
        for side in ("src", "tgt")
    ]  # (ids, attention mask, pool mask) of each side, each [B, length]
    ids, masks, pools = (torch.cat(parts) for parts in zip(*sides, strict=True))  # [2B, length] each
    hidden, outputs = forward_to_layer(model, ids, masks, layer, early_exit=early_exit)
    pooled = pool(hidden, pools, pooling)  # [2B, T, H] -> [2B, H]
    src, tgt = pooled.chunk(2)  # [2B, H] -> [B, H], [B, H]
    return src, tgt, keepalive(model, outputs)


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
    scored against the `W * B` candidates of all ranks; the mean over ranks of each rank's loss equals the
    single-process loss on the global batch. Otherwise the candidates are the local batch, as in the paper.

    Returns:
        `(loss, accuracy)`: scalar fp32 loss, and the detached retrieval accuracy of this rank's queries.
    """
    if not gathering(gather_negatives):
        loss = info_nce(src, tgt, temperature, symmetric=symmetric, detach_candidates=detach_tgt)
        return loss, retrieval_accuracy(src.detach(), tgt.detach())
    offset = torch.distributed.get_rank() * src.shape[0]
    candidates = tgt.detach() if detach_tgt else tgt
    all_tgt = gather_rows(candidates)  # [B, H] -> [W * B, H]
    loss = info_nce(src, all_tgt, temperature, positive_offset=offset)
    if symmetric:
        all_src = gather_rows(src)  # [B, H] -> [W * B, H]
        loss = (loss + info_nce(candidates, all_src, temperature, positive_offset=offset)) / 2
    return loss, retrieval_accuracy(src.detach(), all_tgt.detach(), positive_offset=offset)


@dataclass(frozen=True)
class AlignmentObjective:
    """The alignment loss of one layer with its settings (`from_config` reads them from a `MidAlignConfig`)."""

    layer: int
    temperature: float = 0.1
    symmetric: bool = False
    detach_tgt: bool = False
    pooling: Pooling = "mean"
    early_exit: bool = True
    gather_negatives: bool = False

    @classmethod
    def from_config(cls, config, layer: int, *, early_exit: bool | None = None) -> AlignmentObjective:
        return cls(
            layer=layer,
            temperature=config.align_temperature,
            symmetric=config.align_symmetric,
            detach_tgt=config.align_detach_tgt,
            pooling=config.align_pooling,
            early_exit=config.align_early_exit if early_exit is None else early_exit,
            gather_negatives=config.align_gather_negatives,
        )

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], *, evaluating: bool = False):
        """`(loss with the keep-alive, retrieval accuracy)` of one batch of pairs.

        Held-out batches are the same on every rank, so evaluation never gathers negatives (the copies of each
        positive would be counted as negatives).
        """
        src, tgt, zero = pair_embeddings(
            model, batch, layer=self.layer, pooling=self.pooling, early_exit=self.early_exit
        )
        loss, accuracy = contrastive_loss(
            src,
            tgt,
            temperature=self.temperature,
            symmetric=self.symmetric,
            detach_tgt=self.detach_tgt,
            gather_negatives=self.gather_negatives and not evaluating,
        )
        return loss + zero, accuracy


def alignment_loss(
    model: nn.Module,
    src_input_ids: torch.Tensor,
    src_attention_mask: torch.Tensor,
    tgt_input_ids: torch.Tensor,
    tgt_attention_mask: torch.Tensor,
    *,
    layer: int,
    src_pool_mask: torch.Tensor | None = None,
    tgt_pool_mask: torch.Tensor | None = None,
    **settings,
) -> torch.Tensor:
    """The alignment objective on a batch of parallel pairs as a function; src sentences are the queries.

    With the defaults (`symmetric=False`, mean pooling over the attention mask) this is the loss of the
    authors' released code: masked mean of the block-`layer` output before the final norm, cosine
    similarity divided by `temperature`, cross-entropy over the in-batch targets.

    Args:
        model: a decoder-only causal LM, plain or wrapped (PEFT, DDP).
        src_input_ids, src_attention_mask: `[B, Ts]` source side (queries).
        tgt_input_ids, tgt_attention_mask: `[B, Tt]` target side (candidates; row `i` translates src row `i`).
        layer: decoder block whose output is aligned (`hidden_states[layer]`).
        src_pool_mask, tgt_pool_mask: tokens that enter the pooling; default the attention masks.
        **settings: the other fields of `AlignmentObjective` (`temperature`, `symmetric`, `detach_tgt`,
            `pooling`, `early_exit`, `gather_negatives`).

    Returns:
        Scalar fp32 loss.
    """
    batch = {
        "src_input_ids": src_input_ids,
        "src_attention_mask": src_attention_mask,
        "tgt_input_ids": tgt_input_ids,
        "tgt_attention_mask": tgt_attention_mask,
    }
    for side, mask in (("src", src_pool_mask), ("tgt", tgt_pool_mask)):
        if mask is not None:
            batch[f"{side}_pool_mask"] = mask
    return AlignmentObjective(layer=layer, **settings)(model, batch)[0]
