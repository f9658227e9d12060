"""Cost of one alignment micro-step vs a task micro-step, at the vocabulary sizes users have, in one run.

Tiny Llama (hidden 256, 8 blocks by default) with LoRA r 8 on every projection, alignment at block 4, for each
vocabulary in `--vocab` (default 2,000, 32,000 (Llama 2, Mistral), 128,256 (Llama 3), 151,936 (Qwen 2.5)).
Each variant does forward + backward on the same batch size B and sentence length T; the variants are timed
round-robin (interleaved, so machine noise hits all alike) and the median is reported. Two memory figures per
variant, both deterministic on the CPU:

- activation: the bytes autograd saves for the backward pass (`saved_tensors_hooks`), each storage counted once
  and the model's own parameters left out (a product saves its weight, which costs no memory);
- peak: the highest total of bytes allocated during forward + backward above what was live before, from the
  allocator's events recorded by `torch.profiler` (`profile_memory=True`).

    OMP_NUM_THREADS=1 python benchmarks/step_cost.py [--vocab 2000 32000 128256 151936] [--batch 16]
        [--length 32] [--repeats 20] [--hidden 256] [--blocks 8] [--layer 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from tiny_llama import tiny_llama
from torch.profiler import ProfilerActivity, profile
from trl.trainer.utils import add_fused_lm_head

from midalign import distributed
from midalign.losses import info_nce
from midalign.objective import pair_embeddings

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
VOCABS = [2000, 32000, 128256, 151936]


def build(vocab: int, hidden: int, blocks: int, seed: int = 0):
    base = tiny_llama(vocab, hidden, blocks, seed=seed)
    # The trainer's task step: TRL's SFTTrainer patches the forward so that `fused_lm_head=True` returns per-token
    # log-probabilities computed in vocabulary chunks, without the [B, T, V] logits (other calls are unchanged).
    add_fused_lm_head(base, outputs=("log_probs", "entropy", "is_top1"))
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=ALL))
    return model.train()


def saved_bytes(model, fn) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t):
        nonlocal total
        storage = t.untyped_storage()
        if storage.data_ptr() not in params and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return total


def peak_bytes(fn) -> int:
    """Peak of (bytes allocated - bytes freed) during forward + backward, from the profiler's allocator events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn().backward()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:  # positive: an allocation, negative: a free
        live += nbytes
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def patched_engine():
    """Make `pair_embeddings` build its keep-alive as it does under a data-parallel engine."""
    original = distributed.is_distributed_wrapper
    distributed.is_distributed_wrapper = lambda model: True
    try:
        yield
    finally:
        distributed.is_distributed_wrapper = original


def measure(vocab: int, args) -> dict[str, dict[str, float]]:
    """`{variant: {"ms": median, "activation": bytes, "peak": bytes}}` for one vocabulary."""
    model = build(vocab, args.hidden, args.blocks)
    b, t, layer = args.batch, args.length, args.layer
    g = torch.Generator().manual_seed(0)
    src, tgt, task = (torch.randint(3, vocab, (b, t), generator=g) for _ in range(3))
    mask = torch.ones(b, t, dtype=torch.long)

    pairs = {"src_input_ids": src, "src_attention_mask": mask, "tgt_input_ids": tgt, "tgt_attention_mask": mask}

    def align(early_exit: bool, engine: bool = False):
        def step():
            # `engine`: the keep-alive as under DDP / FSDP / DeepSpeed, where a full forward's loss reaches every
            # block (zero gradients above the alignment layer); that is how the trainer runs it (ZeRO-3 only).
            with patched_engine() if engine else contextlib.nullcontext():
                s, c, keep = pair_embeddings(model, pairs, layer=layer, early_exit=early_exit)
            return info_nce(s, c) + keep

        return step

    def task_logits():
        logits = model(input_ids=task, attention_mask=mask).logits  # [B, T, V]
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), task[:, 1:].reshape(-1))

    def task_trainer():
        out = model(input_ids=task, attention_mask=mask, labels=task, fused_lm_head=True)  # [B, T - 1] log-probs
        return -out.log_probs.sum() / out.label_mask.sum()

    variants = {
        "align, early exit": align(True),
        "align, full forward": align(False),
        "align, full forward, engine keep-alive": align(False, engine=True),
        "task step, logits + cross-entropy": task_logits,
        "task step, as the trainer (TRL fused head)": task_trainer,
    }
    out = {name: {"activation": float(saved_bytes(model, fn))} for name, fn in variants.items()}  # also a warm-up
    for name, fn in variants.items():
        model.zero_grad(set_to_none=True)
        out[name]["peak"] = float(peak_bytes(fn))
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            fn().backward()
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        out[name]["ms"] = 1e3 * statistics.median(values)
    return out


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, nargs="+", default=VOCABS)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--layer", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"tiny Llama: hidden {args.hidden}, {args.blocks} blocks, LoRA r 8 on every projection; B={args.batch} "
        f"pairs/examples, T={args.length}, align layer {args.layer}, {torch.get_num_threads()} thread(s), "
        f"median of {args.repeats}, torch {torch.__version__}\n"
    )
    mib = 2**20
    ratios: dict[int, dict[str, float]] = {}
    for vocab in args.vocab:
        m = measure(vocab, args)
        print(f"vocabulary {vocab:,}\n")
        print("| variant | ms / micro-step | activation MiB | peak MiB |")
        print("|---|---:|---:|---:|")
        for name, row in m.items():
            print(f"| {name} | {row['ms']:.1f} | {row['activation'] / mib:.1f} | {row['peak'] / mib:.1f} |")
        print()
        early, full = m["align, early exit"], m["align, full forward"]
        task = m["task step, as the trainer (TRL fused head)"]
        ratios[vocab] = {
            "align / task (trainer's task step)": early["ms"] / task["ms"],
            "align / task (logits + cross-entropy)": early["ms"] / m["task step, logits + cross-entropy"]["ms"],
            "early exit / full forward": early["ms"] / full["ms"],
            "early exit / full forward, engine keep-alive": early["ms"]
            / m["align, full forward, engine keep-alive"]["ms"],
            "activation, align / task (trainer's)": early["activation"] / task["activation"],
            "peak, align / task (trainer's)": early["peak"] / task["peak"],
            "activation, early exit / full forward": early["activation"] / full["activation"],
        }
    names = list(next(iter(ratios.values())))
    targets = {
        "align / task (trainer's task step)": " (target <= 0.35 at 128k)",
        "early exit / full forward": " (target <= 0.5 at 128k)",
    }
    print("| ratio | " + " | ".join(f"{v:,}" for v in ratios) + " |")
    print("|---|" + "---:|" * len(ratios))
    for name in names:
        print(f"| {name}{targets.get(name, '')} | " + " | ".join(f"{r[name]:.2f}" for r in ratios.values()) + " |")
    return ratios


if __name__ == "__main__":
    main()
