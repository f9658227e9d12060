"""The tiny random Llama the benchmarks measure (hidden, blocks and vocabulary chosen per run)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama(vocab: int, hidden: int, blocks: int, *, max_positions: int = 256, seed: int = 0, **token_ids):
    """A `LlamaForCausalLM` with 4 heads and an MLP 4x the hidden size; `token_ids`: pad / bos / eos ids."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=blocks,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=max_positions,
        **token_ids,
    )
    return LlamaForCausalLM(config)
