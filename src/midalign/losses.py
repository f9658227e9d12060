"""Contrastive losses on pooled sentence vectors. Pure functions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_logits(query: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """`cos(query_i, candidate_j) / temperature` for every pair, in fp32.

    The similarities are computed in fp32 even when the model runs in bf16/fp16: dividing by a temperature
    of 0.1 multiplies rounding errors by 10, and bf16 has only 8 bits of mantissa.

    Args:
        query: `[B, H]`.
        candidates: `[N, H]`.

    Returns:
        `[B, N]` logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    q = F.normalize(query.float(), dim=-1)  # [B, H], unit rows
    c = F.normalize(candidates.float(), dim=-1)  # [N, H], unit rows
    return q @ c.T / temperature  # [B, H] @ [H, N] -> [B, N]


def info_nce(
    query: torch.Tensor,
    candidates: torch.Tensor,
    temperature: float = 0.1,
    *,
    symmetric: bool = False,
    detach_candidates: bool = False,
    positive_offset: int = 0,
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: candidate `positive_offset + i` is the positive for query `i`.

    `loss = mean_i CE(cos(q_i, c_:) / temperature, i)`, as in the paper's released code (one direction, the
    query side being the non-pivot sentence).

    Args:
        query: `[B, H]`.
        candidates: `[N, H]`, `N >= B`; row `positive_offset + i` is the translation of query row `i`. In-batch:
            `N == B`, offset 0. With negatives gathered from every device: the global batch, offset `rank * B`.
        temperature: divides the cosine similarities (0.1 in the released scripts).
        symmetric: also score candidates-as-queries against the queries and average the two directions.
        detach_candidates: stop the gradient into the candidate side (the queries are moved towards fixed
            targets).
        positive_offset: index of query 0's positive among the candidates.

    Returns:
        Scalar fp32 loss.
    """
    _check_candidates(query, candidates, positive_offset)
    if symmetric and query.shape != candidates.shape:
        raise ValueError("symmetric needs as many candidates as queries (the other direction's candidates)")
    if detach_candidates:
        candidates = candidates.detach()
    logits = cosine_logits(query, candidates, temperature)  # [B, N]
    target = positive_offset + torch.arange(logits.shape[0], device=logits.device)  # [B], the positives
    loss = F.cross_entropy(logits, target)  # softmax over candidates (dim 1)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target)) / 2  # softmax over queries
    return loss


def retrieval_accuracy(query: torch.Tensor, candidates: torch.Tensor, positive_offset: int = 0) -> torch.Tensor:
    """Fraction of queries whose most similar candidate (cosine) is their own translation; a scalar.

    `query` is `[B, H]`, `candidates` `[N, H]` with query `i`'s translation at row `positive_offset + i`.
    """
    _check_candidates(query, candidates, positive_offset)
    logits = cosine_logits(query, candidates, 1.0)  # [B, N]
    target = positive_offset + torch.arange(logits.shape[0], device=logits.device)
    return (logits.argmax(dim=1) == target).float().mean()


def _check_candidates(query: torch.Tensor, candidates: torch.Tensor, positive_offset: int) -> None:
    if query.dim() != 2 or candidates.dim() != 2 or query.shape[1] != candidates.shape[1]:
        raise ValueError(f"expected [B, H] and [N, H] tensors, got {tuple(query.shape)} and {tuple(candidates.shape)}")
    if not 0 <= positive_offset <= candidates.shape[0] - query.shape[0]:
        raise ValueError(
            f"{query.shape[0]} queries at offset {positive_offset} do not fit {candidates.shape[0]} candidates"
        )
