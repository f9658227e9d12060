"""Generation throughput of `midalign.evaluation.generate`: batched (left padding) vs one prompt at a time.

Runs both paths on the same prompts with a tiny random Llama on CPU (one thread), checks that they give
the same greedy outputs, and prints a Markdown snippet with examples/s and the ratio.

    python benchmarks/eval_throughput.py [--prompts 64] [--batch_size 16] [--max_new_tokens 32]
"""

from __future__ import annotations

import argparse
import platform
import random
import time

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


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # the benchmark machine is shared; one thread keeps runs comparable
    hidden, layers = 64, 4
    tokenizer, model = make_tokenizer(), make_model(hidden, layers)
    rng = random.Random(0)
    prompts = [
        " ".join(f"w{rng.randrange(VOCAB_WORDS)}" for _ in range(rng.randint(5, 40))) for _ in range(args.prompts)
    ]

    single, single_out = throughput(model, tokenizer, prompts, 1, args.max_new_tokens)
    batched, batched_out = throughput(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
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
        ]
    )
    print(snippet)
    return snippet


if __name__ == "__main__":
    main()
