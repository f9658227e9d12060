"""Train a tiny baseline and a tiny mid-align adapter on the sample data, from nothing, on a CPU (~1 minute).

No weights can be downloaded, so a tiny Llama and a BPE tokenizer are built here first (random weights, so the
numbers only show that the pipeline runs: both losses fall, the adapters load). The synthetic-world demo is
where the method is shown working.

    python examples/tiny_run.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from midalign.cli import main as midalign
from midalign.data import read_parallel, read_task_examples

ROOT = Path(__file__).resolve().parent
BASE = Path("runs/tiny-base")


def build_base() -> None:
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
    LlamaForCausalLM(config).save_pretrained(BASE)
    fast.save_pretrained(BASE)


if __name__ == "__main__":
    torch.set_num_threads(1)
    build_base()
    for mode in ("baseline", "mid-align"):
        code = midalign(
            ["train", "--config", str(ROOT / "train_tiny.yaml"), "--mode", mode, "--output_dir", f"runs/tiny-{mode}"]
        )
        if code:
            raise SystemExit(code)
    print("adapters in runs/tiny-baseline and runs/tiny-mid-align; logs: tensorboard --logdir runs")
