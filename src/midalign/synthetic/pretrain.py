"""Pretrain the synthetic world's base model: a character-level BPE tokenizer and a tiny Llama, on the CPU.

The model is the substrate the method is tested on, so this is a plain, readable loop (AdamW, warm-up, a constant
rate, then a linear decay; packed sequences), not a trainer. The caller sets the thread count
(`torch.set_num_threads`); docs/synthetic-world.md records each preset's time on 1 and 2 threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from midalign.errors import ConfigError, DataError
from midalign.files import write_json_atomic
from midalign.progress import bar

logger = logging.getLogger(__name__)
PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
INFO_FILE = "pretrain.json"  # written last: its presence with a matching key marks a finished model


@dataclass(frozen=True)
class PretrainConfig:
    """Tokenizer, model shape and optimisation of the base model.

    `PretrainConfig.preset("ci" | "default" | "bench")` gives the measured budgets: `ci` for plumbing (seconds),
    `default` for the demo (hidden 64, 2,000 steps, about 4M tokens) and `bench` for the transfer benchmark (hidden
    128, untied embeddings, 5,400 steps on a larger corpus, pretrained once and cached). Both are 12 blocks deep; at
    the demo's budget a narrow model learned to copy and translate where a hidden size of 128 did not
    (docs/synthetic-world.md).
    """

    vocab_size: int = 3000
    hidden_size: int = 64
    num_layers: int = 12
    num_heads: int = 4
    intermediate_size: int = 256
    seq_len: int = 128
    batch_size: int = 16
    steps: int = 2000
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    # `torch.compile` (inductor, which needs a C++ compiler; without one the run goes on uncompiled, with a warning):
    # 1.45x the tokens per second of the uncompiled bf16 step in the real `default` run on 2 threads, a minute of
    # compiling included (benchmarks/RESULTS.md, "Pretraining throughput"). bf16 autocast costs time at this size,
    # compiled or not, so it is off (it gave 1.2x at hidden 128 on one thread, uncompiled).
    compile: bool = True
    bf16: bool = False
    seed: int = 0
    # One table for the input embeddings and the LM head (as Llama 3.2 1B, Qwen2.5 0.5B), or two (as Llama 3 8B).
    tie_embeddings: bool = True

    @classmethod
    def preset(cls, name: Literal["ci", "default", "bench"], **overrides) -> PretrainConfig:
        """The `ci` or `default` configuration, with field overrides."""
        presets = {
            "ci": dict(vocab_size=1500, steps=90, num_layers=8, compile=False),  # compiling takes longer than 90 steps
            "default": {},
            # Pretrained once and cached; every seed and layer run of the transfer benchmark reuses it.
            # Twice as wide as `default`: at hidden 64 this budget put the retrieval peak at block 1, at 128 at block 4.
            # Untied, as Llama 3 8B: a tied table is both the input and the output layer, and it aligned the embeddings
            # almost as well as the middle blocks (1.19-1.28 times; docs/synthetic-world.md, "What was tried").
            "bench": dict(hidden_size=128, steps=5400, warmup_steps=100, tie_embeddings=False),
        }
        if name not in presets:
            raise ConfigError(f"unknown pretraining preset {name!r}; choose one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


def train_tokenizer(lines: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A character-level BPE tokenizer (Llama-2 style: `▁` marks a space) that adds BOS and never EOS.

    Characters, not bytes, are the base symbols, so every letter of every script is at least one whole token. With
    byte-level BPE, rarer Hangul syllables stayed as three byte tokens shared by many syllables, and copying a novel
    name in Hangul or Devanagari then needs more than matching the previous token (measured: far lower copy rates).
    A character that is neither printable ASCII nor in `lines` becomes `<unk>`; the world uses a small alphabet.

    Args:
        lines: the training text.
        vocab_size: the vocabulary size including the characters and the special tokens.
    """
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, UNK],
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation),  # e.g. "_" in intents
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK
    )


@contextlib.contextmanager
def _deterministic_algorithms():
    """`torch.use_deterministic_algorithms(True)` inside the block, the caller's setting after it."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


# Part of the cache key: a base pretrained by an earlier version of the loop is pretrained again (2: deterministic
# compiled kernels).
LOOP_VERSION = 2


def _cache_key(config: PretrainConfig, corpus: Path) -> str:
    fields = dataclasses.asdict(config)
    if fields["tie_embeddings"]:  # added after bases were cached: at its default it leaves their keys as they were
        del fields["tie_embeddings"]
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    digest.update(f"loop {LOOP_VERSION}".encode())
    digest.update(hashlib.sha256(corpus.read_bytes()).digest())
    return digest.hexdigest()


def is_finished(out_dir: str | Path, config: PretrainConfig, corpus: str | Path) -> bool:
    """Whether `out_dir` holds a finished model pretrained with `config` on exactly this corpus."""
    info = Path(out_dir) / INFO_FILE
    return info.is_file() and json.loads(info.read_text())["key"] == _cache_key(config, Path(corpus))


def pack(tokenizer: PreTrainedTokenizerFast, lines: list[str], seq_len: int) -> torch.Tensor:
    """Tokenize lines as `BOS line EOS`, concatenate, and cut into `[N, seq_len]` blocks (the tail is dropped)."""
    ids = [i for row in tokenizer(lines)["input_ids"] for i in (*row, tokenizer.eos_token_id)]
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        raise DataError(f"the corpus holds {len(ids)} tokens, fewer than one sequence of {seq_len}")
    return torch.tensor(ids[: n_blocks * seq_len]).view(n_blocks, seq_len)  # [N * T] -> [N, T]


def pretrain(
    corpus: str | Path, out_dir: str | Path, config: PretrainConfig, *, progress: bool = True, device: str = "cpu"
) -> Path:
    """Train the tokenizer and the tiny Llama on `corpus` and save both to `out_dir` (safetensors).

    A folder that already holds a finished model for the same config and corpus is reused as it is.

    Args:
        corpus: text file, one line per document (`WorldPaths.corpus`).
        out_dir: the model folder, loadable with `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained`.
        config: tokenizer, model and optimisation settings.
        progress: show a tqdm progress bar.
        device: where to train (`"cpu"`, `"cuda"`). The presets' budgets and every documented base are CPU runs; a
            GPU run of the same config gives a different base (other kernels), which the cache does not tell apart.

    Returns:
        `out_dir`.
    """
    corpus, out = Path(corpus), Path(out_dir)
    if is_finished(out, config, corpus):
        return out
    (out / INFO_FILE).unlink(missing_ok=True)  # a run that stops half-way must not look finished
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    device = torch.device(device)
    lines = corpus.read_text(encoding="utf-8").splitlines()
    tokenizer = train_tokenizer(lines, config.vocab_size)
    blocks = pack(tokenizer, lines, config.seq_len)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_heads,
            max_position_embeddings=4 * config.seq_len,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=config.tie_embeddings,
        )
    ).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no weight decay on norms
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )

    def lr_factor(step: int) -> float:
        # Warm-up, a constant stretch, then a linear decay to a tenth over the last fifth (warmup-stable-decay).
        # In the first world copying (induction heads) appeared suddenly after about 500 of 800 steps, when a cosine
        # would already have halved the rate; no run with a cosine schedule learned to copy (docs/synthetic-world.md).
        decay_start = int(0.8 * config.steps)
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if step < decay_start:
            return 1.0
        return 1.0 - 0.9 * (step - decay_start) / max(1, config.steps - decay_start)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    forward = torch.compile(model) if config.compile else model

    def backward(fn, batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            loss = fn(input_ids=batch, labels=batch).loss
        loss.backward()
        return loss

    generator = torch.Generator().manual_seed(config.seed)
    order, cursor, losses = torch.randperm(len(blocks), generator=generator), 0, []
    model.train()
    loop_start = time.perf_counter()
    # Compiled kernels sum some gradients (the tied embedding's) with atomic adds across threads: two runs on 2
    # threads differed from about step 100. Deterministic algorithms make inductor emit ordered sums instead, at
    # about 5% of the speed (benchmarks/RESULTS.md, "Pretraining determinism"). A GPU run (used to explore world
    # variants quickly) is not promised to be deterministic.
    with _deterministic_algorithms() if device.type == "cpu" else contextlib.nullcontext():
        for step in bar(range(config.steps), desc="pretraining", disable=not progress):
            if cursor + config.batch_size > len(order):  # a new epoch in a new order
                order, cursor = torch.randperm(len(blocks), generator=generator), 0
            batch = blocks[order[cursor : cursor + config.batch_size]].to(device)  # [B, T]
            cursor += config.batch_size
            try:
                loss = backward(forward, batch)
            except Exception as error:  # compiling happens in the first forward and backward, and can fail there only
                if forward is model or step > 0:
                    raise
                logger.warning("torch.compile failed (%s); pretraining without it", str(error).strip().splitlines()[0])
                forward = model
                optimizer.zero_grad(set_to_none=True)
                loss = backward(model, batch)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    loop_seconds = time.perf_counter() - loop_start
    model.eval().cpu()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    seconds = time.perf_counter() - start
    tail = losses[-20:]
    write_json_atomic(
        out / INFO_FILE,
        {
            "key": _cache_key(config, corpus),
            "config": dataclasses.asdict(config),
            "parameters": sum(p.numel() for p in model.parameters()),
            "corpus_tokens": blocks.numel(),
            "tokens_seen": config.steps * config.batch_size * config.seq_len,
            "final_train_loss": sum(tail) / len(tail),
            "loss_curve": [
                round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 3) for i in range(0, len(losses), 50)
            ],
            "seconds": round(seconds, 1),
            "threads": torch.get_num_threads(),
            "device": device.type,
            "compiled": forward is not model,
            # Over the training loop, compiling included.
            "tokens_per_second": round(config.steps * config.batch_size * config.seq_len / loop_seconds),
        },
    )
    return out
