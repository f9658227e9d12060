"""Pretraining throughput of the synthetic world's base model on this CPU: what deeper models cost, and what
threads, bf16 autocast, `torch.compile` and larger batches buy (issue #16: "use what makes CPU pretraining faster
where you measure that it helps").

Every variant trains the same tiny Llama shape as `midalign.synthetic.pretrain` (tied embeddings, 4 heads) on
random tokens for `--steps` timed optimizer steps after `--warmup` untimed ones, in this one process, one after the
other, so the ratios compare like with like. Prints tokens per second and the ratio to the first variant.

    python benchmarks/pretrain_throughput.py --steps 20
    python benchmarks/pretrain_throughput.py --only "i256, 2 threads" --vocab 3000 --fresh_processes   # compile cost
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# The `default` pretraining preset's shape (PretrainConfig), on the demo's 2 threads.
DEFAULT_SHAPE = dict(hidden=64, blocks=12, intermediate=256, threads=2, batch=16)


def build(hidden: int, blocks: int, intermediate: int, vocab: int, seq_len: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=intermediate,
            num_hidden_layers=blocks,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=4 * seq_len,
            tie_word_embeddings=True,
            use_cache=False,  # no KV cache in training; with it, compiled blocks recompile per layer index
        )
    )


def measure(variant: dict, args: argparse.Namespace) -> dict:
    torch.set_num_threads(variant["threads"])
    intermediate = variant.get("intermediate", 2 * variant["hidden"])
    model = build(variant["hidden"], variant["blocks"], intermediate, args.vocab, args.seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=variant.get("fused"))
    step_fn = model
    if variant.get("compile"):
        # A fresh inductor cache per variant, so that its warm-up is the compile time a new machine pays.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
        torch._dynamo.reset()
    if variant.get("compile") == "regional":  # each block compiled alone: one graph serves all twelve
        for layer in model.model.layers:
            layer.compile()
    elif variant.get("compile"):
        step_fn = torch.compile(model)
    batch = torch.randint(4, args.vocab, (variant["batch"], args.seq_len))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if variant.get("bf16") else contextlib.nullcontext()

    def step():
        with autocast:
            loss = step_fn(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    compile_s = time.perf_counter() - start if variant.get("compile") else 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    return {
        "tokens_per_s": args.steps * variant["batch"] * args.seq_len / seconds,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "warmup_s": compile_s,
    }


def measure_in_new_process(index: int, variant: dict) -> dict:
    """`measure` in a child process with an empty inductor cache (the same arguments, this variant only)."""
    argv = [a for a in sys.argv[1:] if a != "--fresh_processes"]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": tempfile.mkdtemp(prefix="inductor-")}
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--index", str(index)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="only the first three variants (smoke test)")
    parser.add_argument("--only", help="only the variants whose name contains this text, e.g. 'h64'")
    parser.add_argument(
        "--fresh_processes",
        action="store_true",
        help="each variant in a new process with an empty inductor cache: the compile time a fresh machine pays "
        "(in one process, later variants reuse what the first compile loaded)",
    )
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)  # one variant, for --fresh_processes
    args = parser.parse_args()
    variants = [
        dict(name="h128 x8 (the first world), 1 thread, fp32, batch 16", hidden=128, blocks=8, threads=1, batch=16),
        dict(name="h128 x12, 1 thread, fp32, batch 16", hidden=128, blocks=12, threads=1, batch=16),
        dict(name="h128 x12, 2 threads", hidden=128, blocks=12, threads=2, batch=16),
        dict(name="h128 x12, 2 threads, batch 32", hidden=128, blocks=12, threads=2, batch=32),
        dict(name="h128 x12, 1 thread, batch 32", hidden=128, blocks=12, threads=1, batch=32),
        dict(name="h128 x12, 1 thread, bf16 autocast", hidden=128, blocks=12, threads=1, batch=16, bf16=True),
        dict(name="h128 x12, 2 threads, bf16 autocast", hidden=128, blocks=12, threads=2, batch=16, bf16=True),
        dict(name="h128 x12, 1 thread, torch.compile", hidden=128, blocks=12, threads=1, batch=16, compile=True),
        dict(name="h128 x12, 2 threads, torch.compile", hidden=128, blocks=12, threads=2, batch=16, compile=True),
        dict(name="h192 x12, 2 threads", hidden=192, blocks=12, threads=2, batch=16),
        dict(name="h96 x16, 2 threads", hidden=96, blocks=16, threads=2, batch=16),
        # The `default` preset's shape, where per-operation overhead weighs more than at h128.
        dict(name="h64 x12, 2 threads, bf16 autocast", hidden=64, blocks=12, threads=2, batch=16, bf16=True),
        dict(name="h64 x12, 2 threads, fp32", hidden=64, blocks=12, threads=2, batch=16),
        dict(name="h64 x12, 2 threads, bf16, batch 32", hidden=64, blocks=12, threads=2, batch=32, bf16=True),
        dict(name="h64 x12, 2 threads, bf16, batch 64", hidden=64, blocks=12, threads=2, batch=64, bf16=True),
        dict(name="h64 x12, 2 threads, torch.compile", hidden=64, blocks=12, threads=2, batch=16, compile=True),
        dict(
            name="h64 x12, 2 threads, torch.compile, bf16",
            hidden=64,
            blocks=12,
            threads=2,
            batch=16,
            compile=True,
            bf16=True,
        ),
        # The `default` preset as it is (intermediate 4 x hidden) and what could make it cheaper (issue #19).
        dict(DEFAULT_SHAPE, name="h64 x12 i256, 2 threads, torch.compile", compile=True),
        dict(DEFAULT_SHAPE, name="h64 x12 i256, 2 threads, regional compile", compile="regional"),
        dict(DEFAULT_SHAPE, name="h64 x12 i256, 2 threads, torch.compile, fused AdamW", compile=True, fused=True),
        dict(DEFAULT_SHAPE, name="h64 x12 i128, 2 threads, torch.compile", intermediate=128, compile=True),
    ]
    if args.quick:
        variants = variants[:3]
    if args.only:
        variants = [v for v in variants if args.only in v["name"]]
    if args.index is not None:  # a child of --fresh_processes: one variant, one JSON line
        print(json.dumps(measure(variants[args.index], args)), flush=True)
        return
    print(f"torch {torch.__version__}; seq_len {args.seq_len}; vocab {args.vocab}; {args.steps} timed steps")
    print("| variant | parameters (M) | tokens/s | ratio to the first | warm-up s (compile) |")
    print("|---|---|---|---|---|")
    first = None
    for index, variant in enumerate(variants):
        result = measure_in_new_process(index, variant) if args.fresh_processes else measure(variant, args)
        first = first or result["tokens_per_s"]
        print(
            f"| {variant['name']} | {result['params_m']:.2f} | {result['tokens_per_s']:.0f} | "
            f"{result['tokens_per_s'] / first:.2f} | {result['warmup_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
