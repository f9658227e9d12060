"""Generation throughput of `midalign.evaluation.generate`: batched (left padding) vs one prompt at a time, and
data parallel over processes (as under `accelerate launch` or `torchrun`) vs one process with as many threads.

Runs the paths on the same prompts with a tiny random Llama on CPU, checks that they give the same greedy outputs,
and prints a Markdown snippet with examples/s and the ratios. With `--processes N` (N > 1), `torchrun` starts N
one-thread processes of this script (`--worker`), each generating every N-th prompt; their time is set beside one
process with N threads. With `--lora R`, a LoRA adapter of rank R on every linear layer is generated through PEFT's
layers and again folded into the weights (`merge_and_unload`, as the demo evaluates its systems). The vLLM backend
needs a CUDA GPU and has no row here (docs/evaluation.md).

    python benchmarks/eval_throughput.py [--prompts 64] [--batch_size 16] [--max_new_tokens 32] [--processes 2]
                                         [--hidden 64] [--layers 4] [--lora 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from midalign.evaluation import generate

VOCAB_WORDS = 500


def make_tokenizer():
    """A word-level tokenizer over synthetic words `w0 ... w499`, adding BOS like Llama's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials + [f"w{i}" for i in range(VOCAB_WORDS)])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def make_model(hidden: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB_WORDS + 4,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).eval()


def throughput(model, tokenizer, prompts, batch_size: int, max_new_tokens: int) -> tuple[float, list[str]]:
    """Examples per second (best of two runs, after a warm-up) and the outputs."""
    generate(model, tokenizer, prompts[:batch_size], batch_size=batch_size, max_new_tokens=2, progress=False)
    best, outputs = float("inf"), []
    for _ in range(2):
        start = time.perf_counter()
        outputs = generate(
            model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False
        )
        best = min(best, time.perf_counter() - start)
    return len(prompts) / best, outputs


def lora_rows(model, tokenizer, prompts, args) -> list[str]:
    """Generation through PEFT's LoRA layers against the same adapter merged into the weights."""
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    config = LoraConfig(r=args.lora, lora_alpha=2 * args.lora, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(model), config).eval()  # B is random, so the adapter changes outputs
    through, through_out = throughput(peft_model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    merged, merged_out = throughput(
        peft_model.merge_and_unload(), tokenizer, prompts, args.batch_size, args.max_new_tokens
    )
    same = sum(a == b for a, b in zip(through_out, merged_out, strict=True))
    return [
        f"| batched, LoRA r {args.lora} on every linear layer, through PEFT | {args.batch_size} | {through:.1f} |",
        f"| batched, the same LoRA merged into the weights | {args.batch_size} | {merged:.1f} |",
        f"| **merged / through PEFT** | | **{merged / through:.2f}x** |",
        "",
        f"Merged outputs equal PEFT's for {same} of {len(prompts)} prompts.",
    ]


def make_prompts(n: int) -> list[str]:
    rng = random.Random(0)
    return [" ".join(f"w{rng.randrange(VOCAB_WORDS)}" for _ in range(rng.randint(5, 40))) for _ in range(n)]


def data_parallel(args) -> tuple[float, list[str]]:
    """Examples/s and outputs of `--processes` one-thread processes under torchrun (this script, `--worker`)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
        command += [str(args.processes), __file__, "--worker", str(out), *sys.argv[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        record = json.loads(out.read_text())
    return record["examples_per_second"], record["outputs"]


def worker(args) -> None:
    torch.set_num_threads(1)
    tokenizer, model = make_tokenizer(), make_model(args.hidden, args.layers)
    rate, outputs = throughput(model, tokenizer, make_prompts(args.prompts), args.batch_size, args.max_new_tokens)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.worker).write_text(json.dumps({"examples_per_second": rate, "outputs": outputs}))


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    parser.add_argument("--processes", type=int, default=1, help="also run data parallel over this many processes")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--lora", type=int, default=0, help="also compare a LoRA adapter of this rank, merged or not")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a torchrun process of --processes, writing here
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    torch.set_num_threads(1)  # the benchmark machine is shared; one thread keeps runs comparable
    hidden, layers = args.hidden, args.layers
    tokenizer, model = make_tokenizer(), make_model(hidden, layers)
    prompts = make_prompts(args.prompts)

    single, single_out = throughput(model, tokenizer, prompts, 1, args.max_new_tokens)
    batched, batched_out = throughput(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
    parallel_rows = []
    if args.processes > 1:
        torch.set_num_threads(args.processes)
        threaded, threaded_out = throughput(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
        torch.set_num_threads(1)
        parallel, parallel_out = data_parallel(args)
        parallel_rows = [
            f"| batched, 1 process x {args.processes} threads | {args.batch_size} | {threaded:.1f} |",
            f"| batched, data parallel: {args.processes} processes x 1 thread (torchrun) | {args.batch_size} | "
            f"{parallel:.1f} |",
            f"| **data parallel / {args.processes} threads** | | **{parallel / threaded:.2f}x** |",
            "",
            f"Data-parallel outputs equal one process's: {parallel_out == batched_out}; {args.processes}-thread "
            f"outputs equal 1-thread outputs: {threaded_out == batched_out}.",
        ]
    snippet = "\n".join(
        [
            "### Evaluation generation throughput (`benchmarks/eval_throughput.py`)",
            "",
            f"Tiny random Llama (hidden {hidden}, {layers} blocks, vocabulary {VOCAB_WORDS + 4}), "
            f"{args.prompts} prompts of 5-40 tokens, up to {args.max_new_tokens} new tokens, greedy; CPU "
            f"({platform.processor() or platform.machine()}), 1 thread, torch {torch.__version__}, "
            f"transformers {transformers.__version__}. Batched outputs equal one-at-a-time outputs: "
            f"{batched_out == single_out}.",
            "",
            "| path | batch size | examples/s |",
            "|---|---|---|",
            f"| one at a time | 1 | {single:.1f} |",
            f"| batched, left padding | {args.batch_size} | {batched:.1f} |",
            f"| **ratio** | | **{batched / single:.2f}x** |",
            *parallel_rows,
            *(lora_rows(model, tokenizer, prompts, args) if args.lora else []),
        ]
    )
    print(snippet)
    return snippet


if __name__ == "__main__":
    main()
