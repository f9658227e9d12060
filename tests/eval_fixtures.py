"""Helpers for the evaluation tests: a tiny random Llama and a word-level tokenizer, built in memory."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

WORDS = [
    "wake", "me", "up", "at", "nine", "am", "on", "friday", "play", "some", "music", "by", "queen", "set", "an",
    "alarm", "for", "seven", "pm", "what", "is", "the", "weather", "in", "paris", "today", "book", "a", "table",
    "weck", "mich", "um", "neun", "uhr", "freitag",
]  # fmt: skip
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|system|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "<s>{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def make_tokenizer(*, chat: bool = False):
    """A word-level tokenizer that adds BOS like Llama's; with `chat`, a template that writes BOS itself."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS + sorted(set(WORDS)) + list(":;|"))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[4:],
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_model(*, seed: int = 0, hidden: int = 32, layers: int = 2):
    """A tiny random Llama whose vocabulary fits `make_tokenizer` (the suite's shared builder)."""
    from tests.conftest import make_model as build

    return build("llama", vocab_size=len(SPECIALS) + len(set(WORDS)) + 3, layers=layers, hidden=hidden, seed=seed)


@functools.cache
def saved_model_dir(root: str) -> Path:
    """The tiny model and tokenizer saved under `root`, with two LoRA adapters `lora_a` and `lora_b`.

    LoRA B starts non-zero so the adapters really change the outputs.
    """
    from peft import LoraConfig, get_peft_model

    path = Path(root)
    make_model().save_pretrained(path / "base")
    make_tokenizer().save_pretrained(path / "base")
    for name, seed in (("lora_a", 1), ("lora_b", 2)):
        torch.manual_seed(seed)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        get_peft_model(make_model(), config).save_pretrained(path / name)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


MASSIVE_ROWS = [
    {
        "id": "1",
        "locale": "en-US",
        "partition": "test",
        "intent": "alarm_set",
        "utt": "wake me up at nine am on friday",
        "annot_utt": "wake me up at [time : nine am] on [date : friday]",
    },
    {
        "id": "2",
        "locale": "en-US",
        "partition": "test",
        "intent": "play_music",
        "utt": "play some music",
        "annot_utt": "play some music",
    },
    {
        "id": "3",
        "locale": "en-US",
        "partition": "train",
        "intent": "weather_query",
        "utt": "what is the weather in paris",
        "annot_utt": "what is the weather in [place_name : paris]",
    },
    {
        "id": "1",
        "locale": "de-DE",
        "partition": "test",
        "intent": "alarm_set",
        "utt": "weck mich um neun uhr am freitag",
        "annot_utt": "weck mich um [time : neun uhr] am [date : freitag]",
    },
    {
        "id": "1",
        "locale": "zh-CN",
        "partition": "test",
        "intent": "alarm_set",
        "utt": "星期五早上九点叫醒我",
        "annot_utt": "[date : 星期五] [time : 早上九点]叫醒我",
    },
]
