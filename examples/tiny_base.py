"""A tiny random Llama and its BPE tokenizer in runs/tiny-base, built from the sample data (no download, ~2 s).

The same files every time (fixed seeds), so adapters trained on an earlier build still fit it.

    python examples/tiny_base.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from midalign.data import read_parallel, read_task_examples

ROOT = Path(__file__).resolve().parent
BASE = Path("runs/tiny-base")


def build_base(out: Path = BASE) -> Path:
    texts = [r["prompt"] + r["completion"] for r in read_task_examples(ROOT / "data/slots_en.jsonl")]
    texts += [s for p in read_parallel(ROOT / "data/pairs.jsonl") for s in (p.src, p.tgt)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<s>", "</s>", "<unk>"])
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok.decoder = decoders.Metaspace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    fast.save_pretrained(out)
    return out


if __name__ == "__main__":
    print(f"tiny base model and tokenizer in {build_base()}")
