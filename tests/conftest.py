"""Shared fixtures: tiny random decoder models built from config and a tokenizer made in memory."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded in tests; fail fast instead of retrying

torch.set_num_threads(1)  # tests share a 2-core machine; one thread each keeps parallel jobs from crawling
# Two test workers share the cores (pyproject.toml): a property test is judged by its examples, not their speed.
settings.register_profile("shared-cores", deadline=None)
settings.load_profile("shared-cores")

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "a",
    "house",
    "big",
    "small",
    "red",
    "blue",
    "green",
    "wake",
    "me",
    "up",
    "at",
    "nine",
    "am",
    "on",
    "friday",
    "play",
    "song",
    "by",
    "artist",
    "set",
    "alarm",
    "for",
    "seven",
    "pm",
    "in",
    "kitchen",
    "weather",
    "today",
    "tomorrow",
    "city",
    "paris",
    "london",
    "book",
    "table",
    "el",
    "gato",
    "perro",
    "casa",
    "grande",
    "rojo",
    "azul",
    "despierta",
    "me",
    "a",
    "las",
    "nueve",
    "viernes",
    "le",
    "chat",
    "chien",
    "maison",
    "rouge",
    "bleu",
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}{% if m['role'] == 'assistant' %}</s>"
    "{% endif %} {% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def make_tokenizer():
    """A word-level tokenizer that adds BOS like Llama's, with a pad token and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(WORDS)) + list(":;.,?!|"))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(
    arch: str = "llama", *, vocab_size: int = 128, layers: int = 4, hidden: int = 32, seed: int = 0, **overrides
):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    common.update(overrides)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif arch == "gemma2":
        from transformers import Gemma2Config, Gemma2ForCausalLM

        model = Gemma2ForCausalLM(Gemma2Config(**common))
    elif arch == "phi3":  # fused projections: qkv_proj, gate_up_proj
        from transformers import Phi3Config, Phi3ForCausalLM

        model = Phi3ForCausalLM(Phi3Config(**common))
    else:
        raise ValueError(arch)
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session", params=["llama", "qwen2"])
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A tiny Llama and its tokenizer saved to disk (safetensors), as a user's local model folder."""
    path = tmp_path_factory.mktemp("tiny-llama")
    make_model("llama").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def pytest_collection_modifyitems(items):
    """The docs test first: it is the longest (every example, twice), so one worker starts on it at once while the
    other takes the rest of the suite (`--dist loadfile` hands out files in collection order)."""
    items.sort(key=lambda item: item.path.name != "test_docs.py")  # stable: the rest keep their order
