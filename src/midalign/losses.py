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
) -> torch.Tensor:
    """InfoNCE with in-batch negatives: candidate `i` is the positive for query `i`.

    `loss = mean_i CE(cos(q_i, c_:) / temperature, i)`, as in the paper's released code (one direction, the
    query side being the non-pivot sentence).

    Args:
        query: `[B, H]`.
        candidates: `[B, H]`; row `i` is the translation of query row `i`.
        temperature: divides the cosine similarities (0.1 in the released scripts).
        symmetric: also score candidates-as-queries against the queries and average the two directions.
        detach_candidates: stop the gradient into the candidate side (the queries are moved towards fixed
            targets).

    Returns:
        Scalar fp32 loss.
    """
    if query.shape != candidates.shape or query.dim() != 2:
        raise ValueError(f"expected two [B, H] tensors, got {tuple(query.shape)} and {tuple(candidates.shape)}")
    if detach_candidates:
        candidates = candidates.detach()
    logits = cosine_logits(query, candidates, temperature)  # [B, B]
    target = torch.arange(logits.shape[0], device=logits.device)  # [B], the diagonal
    loss = F.cross_entropy(logits, target)  # softmax over candidates (dim 1)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target)) / 2  # softmax over queries
    return loss


def retrieval_accuracy(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Fraction of queries whose most similar candidate (cosine) is their own translation; a scalar."""
    logits = cosine_logits(query, candidates, 1.0)  # [B, B]
    target = torch.arange(logits.shape[0], device=logits.device)
    return (logits.argmax(dim=1) == target).float().mean()
