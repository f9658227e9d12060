"""Pooling token states into one vector per sentence. Pure tensor functions.

Only mean and last-token pooling are offered. First-token pooling is deliberately absent: in a causal model
with a BOS token, the first position sees only BOS, so its state is the same vector for every sentence.
"""

from __future__ import annotations

from typing import Literal

import torch

Pooling = Literal["mean", "last"]
POOLINGS: tuple[str, ...] = ("mean", "last")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states whose mask is 1.

    Args:
        hidden: `[B, T, H]` token states.
        attention_mask: `[B, T]`, 1 for tokens to average, 0 for the rest (padding, or left-out special tokens).

    Returns:
        `[B, H]` in the dtype of `hidden`. The sum runs in fp32 so long bf16 sentences lose no precision.
        A row whose mask is all zero raises: its mean is undefined, and a silent zero vector would give NaN
        cosines later.
    """
    if hidden.dim() != 3 or attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden [B, T, H] and mask [B, T], got {tuple(hidden.shape)} and {tuple(attention_mask.shape)}"
        )
    mask = attention_mask.to(torch.float32).unsqueeze(-1)  # [B, T] -> [B, T, 1]
    counts = mask.sum(dim=1)  # [B, T, 1] -> [B, 1]
    if bool((counts == 0).any()):
        empty = (counts.squeeze(-1) == 0).nonzero().flatten().tolist()
        raise ValueError(f"rows {empty} have no token to pool (empty sentence after tokenization?)")
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)  # [B, T, H] -> [B, H]
    return (summed / counts).to(hidden.dtype)


def last_token_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """State of the last token whose mask is 1 in each row (works with left or right padding).

    Args:
        hidden: `[B, T, H]`.
        attention_mask: `[B, T]`.

    Returns:
        `[B, H]`.
    """
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)  # [T]
    masked = torch.where(attention_mask.bool(), positions, -1)  # [B, T]
    last = masked.max(dim=1).values  # [B, T] -> [B]
    if bool((last < 0).any()):
        raise ValueError("a row has no token to pool (empty sentence after tokenization?)")
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, T, H] -> [B, H]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, method: Pooling = "mean") -> torch.Tensor:
    """Pool with the named method (`"mean"` or `"last"`)."""
    if method == "mean":
        return mean_pool(hidden, attention_mask)
    if method == "last":
        return last_token_pool(hidden, attention_mask)
    raise ValueError(f"unknown pooling {method!r}; choose one of {POOLINGS}")
