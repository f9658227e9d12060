"""Cost of one alignment micro-step vs a task micro-step, and what early exit and one shared forward save.

Tiny Llama (hidden 128, 8 blocks, vocabulary 2000) with LoRA r 8 on every projection, alignment at block 4.
Each variant does forward + backward on the same batch size B and sentence length T; the variants are timed
round-robin (interleaved, so machine noise hits all alike) and the median is reported. Activation memory is the
bytes autograd saves for the backward pass, counted with `saved_tensors_hooks` (deterministic on any device).

    python benchmarks/step_cost.py [--batch 16] [--length 32] [--repeats 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from midalign.losses import info_nce
from midalign.objective import pair_embeddings

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(seed: int = 0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=2000,
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
    )
    model = get_peft_model(LlamaForCausalLM(cfg), LoraConfig(r=8, lora_alpha=16, target_modules=ALL))
    return model.train()


def saved_bytes(fn) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return total


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--layer", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build()
    b, t, layer = args.batch, args.length, args.layer
    g = torch.Generator().manual_seed(0)
    src, tgt, task = (torch.randint(3, 2000, (b, t), generator=g) for _ in range(3))
    mask = torch.ones(b, t, dtype=torch.long)

    def align(early_exit: bool, one_forward: bool):
        def step():
            s, c, keep = pair_embeddings(
                model, src, mask, tgt, mask, layer=layer, early_exit=early_exit, one_forward=one_forward
            )
            return info_nce(s, c) + keep

        return step

    def task_step():
        logits = model(input_ids=task, attention_mask=mask).logits  # [B, T, V]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), task[:, 1:].reshape(-1))

    variants = {
        "align, early exit, one forward": align(True, True),
        "align, full forward, one forward": align(False, True),
        "align, early exit, two forwards": align(True, False),
        "task step": task_step,
    }
    memory = {name: saved_bytes(fn) for name, fn in variants.items()}  # also a warm-up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            fn().backward()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}

    print(
        f"tiny Llama: hidden 128, 8 blocks, vocab 2000, LoRA r 8; B={b} pairs/examples, T={t}, "
        f"align layer {layer}, {args.threads} thread(s), median of {args.repeats}\n"
    )
    print("| variant | ms / micro-step | activation MiB |")
    print("|---|---:|---:|")
    for name in variants:
        print(f"| {name} | {1e3 * med[name]:.1f} | {memory[name] / 2**20:.1f} |")
    ea, fa = med["align, early exit, one forward"], med["align, full forward, one forward"]
    ratios = {
        "early exit / full forward (target <= 0.8)": ea / fa,
        "align step / task step (target <= 1.0)": ea / med["task step"],
        "one forward / two forwards (target < 1.0)": ea / med["align, early exit, two forwards"],
        "activation memory, early exit / full forward": memory["align, early exit, one forward"]
        / memory["align, full forward, one forward"],
    }
    print("\n| ratio | value |")
    print("|---|---:|")
    for name, value in ratios.items():
        print(f"| {name} | {value:.2f} |")
    return ratios


if __name__ == "__main__":
    main()
