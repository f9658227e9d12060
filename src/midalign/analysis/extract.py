"""Pooled sentence vectors of every layer, one batched forward per language, cached on disk as safetensors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from midalign.data.batching import pad_batch, tokenize_sentence
from midalign.errors import DataError
from midalign.files import write_bytes_atomic
from midalign.layers import all_hidden_states
from midalign.pooling import Pooling, pool
from midalign.progress import bar


@torch.no_grad()
def pooled_states(
    model,
    tokenizer,
    sentences: list[str],
    *,
    batch_size: int = 32,
    max_length: int = 128,
    pooling: Pooling = "mean",
    include_special_tokens: bool = False,
    desc: str | None = None,
) -> torch.Tensor:
    """Pooled states after every block for each sentence: `[L + 1, N, H]`, fp32, on the CPU.

    Sentences are batched by length (right padding) and the result restored to the input order. Pooling is
    the training loss's: `midalign.pooling.pool` over the non-special tokens (all tokens with
    `include_special_tokens`).
    """
    encoded = [
        tokenize_sentence(s, tokenizer, max_length=max_length, include_special_tokens=include_special_tokens)
        for s in sentences
    ]
    for i, (_, mask) in enumerate(encoded):
        if not any(mask):
            raise DataError(f"sentence {i + 1} is empty after tokenization: {sentences[i]!r}")
    order = sorted(range(len(sentences)), key=lambda i: len(encoded[i][0]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chunks: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    for start in bar(range(0, len(order), batch_size), desc=desc, leave=False, disable=desc is None):
        rows = [encoded[i] for i in order[start : start + batch_size]]
        ids = pad_batch([x for x, _ in rows], pad).to(device)  # [b, T]
        attn = pad_batch([[1] * len(x) for x, _ in rows], 0).to(device)  # [b, T]
        pool_mask = pad_batch([m for _, m in rows], 0).to(device)  # [b, T]
        states = all_hidden_states(model, ids, attn)  # L + 1 tensors [b, T, H]
        pooled = torch.stack([pool(h.float(), pool_mask, pooling) for h in states])  # [L + 1, b, H]
        chunks.append(pooled.cpu())
    model.train(was_training)
    stacked = torch.cat(chunks, dim=1)  # [L + 1, N, H] in length order
    out = torch.empty_like(stacked)
    out[:, order] = stacked  # back to the input order
    return out


def cache_key(**parts) -> str:
    """A stable hash of everything the pooled vectors depend on."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def cached_pooled_states(cache_dir: str | Path | None, key_parts: dict, compute) -> torch.Tensor:
    """Return the cached `[L + 1, N, H]` tensor for `key_parts`, or compute, store (atomically) and return it."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"states-{cache_key(**key_parts)}.safetensors"
    if path.is_file():
        return load_file(path)["states"]
    states = compute()
    meta = {k: json.dumps(v, default=str) for k, v in key_parts.items() if k != "sentences"}
    write_bytes_atomic(path, save({"states": states.contiguous()}, metadata=meta))
    return states
