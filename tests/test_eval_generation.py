"""Generation on a tiny random Llama: left padding, batched == one at a time, chat templates, adapters."""

from __future__ import annotations

import pytest
import torch
from eval_fixtures import make_model, make_tokenizer, saved_model_dir

from midalign.errors import ConfigError, DataError
from midalign.evaluation.generation import adapter_systems, generate, render_prompt, use_chat_template
from midalign.evaluation.runner import evaluate

PROMPTS = [
    "wake me up",
    "play some music by queen at nine am on friday",
    "set an alarm",
    "what is the weather in paris today",
    "book",
    "weck mich um neun uhr am freitag",
]


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def spy_generate(monkeypatch, model):
    """Record the inputs of every `model.generate` call."""
    calls = []
    original = model.generate

    def recording(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", recording)
    return calls


def test_batched_equals_one_at_a_time_and_keeps_order(model, tokenizer):
    batched = generate(model, tokenizer, PROMPTS, batch_size=4, max_new_tokens=8, progress=False)
    single = generate(model, tokenizer, PROMPTS, batch_size=1, max_new_tokens=8, progress=False)
    assert batched == single
    assert len(batched) == len(PROMPTS) and all(isinstance(p, str) for p in batched)
    reversed_outputs = generate(model, tokenizer, PROMPTS[::-1], batch_size=3, max_new_tokens=8, progress=False)
    assert reversed_outputs == batched[::-1]


def test_pads_on_the_left(monkeypatch, model, tokenizer):
    calls = spy_generate(monkeypatch, model)
    generate(model, tokenizer, PROMPTS, batch_size=3, max_new_tokens=2, progress=False)
    assert len(calls) == 2
    padded = 0
    for call in calls:
        for ids, mask in zip(call["input_ids"].tolist(), call["attention_mask"].tolist(), strict=True):
            n_pad = mask.count(0)
            assert mask == [0] * n_pad + [1] * (len(mask) - n_pad)  # padding only on the left
            assert ids[:n_pad] == [tokenizer.pad_token_id] * n_pad
            assert ids[n_pad] == tokenizer.bos_token_id  # raw prompts get the tokenizer's BOS
            padded += n_pad > 0
        assert call["do_sample"] is False and call["num_beams"] == 1
    assert padded > 0


def test_chat_template_is_used_without_a_second_bos(monkeypatch, model):
    chat_tokenizer = make_tokenizer(chat=True)
    assert use_chat_template(chat_tokenizer, None) and not use_chat_template(make_tokenizer(), None)
    assert not use_chat_template(chat_tokenizer, False)
    text = render_prompt(chat_tokenizer, "wake me up", system_prompt="be brief", chat=True)
    assert text == "<s><|system|> be brief <|user|> wake me up <|assistant|> "
    assert render_prompt(chat_tokenizer, "wake me up", system_prompt="be brief", chat=False) == "be brief\nwake me up"
    calls = spy_generate(monkeypatch, model)
    generate(model, chat_tokenizer, ["wake me up"], system_prompts=["be brief"], max_new_tokens=2, progress=False)
    ids = calls[0]["input_ids"][0].tolist()
    assert ids.count(chat_tokenizer.bos_token_id) == 1
    assert ids[-1] == chat_tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_errors(model, tokenizer):
    with pytest.raises(ConfigError, match="no chat template"):
        generate(model, tokenizer, ["wake"], chat_template=True, progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        generate(model, tokenizer, ["wake"], batch_size=0, progress=False)
    chat_tokenizer = make_tokenizer(chat=True)
    chat_tokenizer.chat_template = "{{ messages[0]['content'] }}"  # renders "" for an empty prompt: no tokens
    with pytest.raises(DataError, match="prompt #0 encodes to no tokens"):
        generate(model, chat_tokenizer, [""], progress=False)


class _ScriptedLM(torch.nn.Module):
    """A stand-in model whose `generate` appends fixed tokens: pins cutting and decoding."""

    def __init__(self, new_tokens):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.new_tokens = new_tokens
        self.generation_config = type("Config", (), {"eos_token_id": [2, 5]})()

    def generate(self, input_ids, attention_mask, **kwargs):
        new = torch.tensor([self.new_tokens] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)


def test_outputs_are_cut_at_the_first_eos_of_model_or_tokenizer(tokenizer):
    words = [tokenizer.convert_tokens_to_ids(w) for w in ("time", ":", "nine")]
    words[0] = tokenizer.convert_tokens_to_ids("at")
    scripted = _ScriptedLM([*words, 5, words[2], 2])  # 5 is an EOS only in the model's generation config
    assert generate(scripted, tokenizer, ["wake me"], progress=False) == ["at : nine"]
    scripted = _ScriptedLM([words[2], tokenizer.pad_token_id, 2, words[2]])
    assert generate(scripted, tokenizer, ["wake me"], progress=False) == ["nine"]


def test_progress_bar(model, tokenizer, capsys):
    generate(model, tokenizer, PROMPTS[:2], max_new_tokens=1, desc="mid-align")
    assert "mid-align" in capsys.readouterr().err
    generate(model, tokenizer, PROMPTS[:2], max_new_tokens=1, progress=False)
    assert capsys.readouterr().err == ""


def test_evaluate_returns_predictions_and_per_language_scores(model, tokenizer):
    examples = [
        {"lang": "en", "prompt": "wake me up at nine am", "gold": "time: nine am"},
        {"lang": "de", "prompt": "weck mich um neun uhr", "gold": "None"},
        {"lang": "en", "prompt": "play some music", "gold": "None"},
    ]
    result = evaluate(model, tokenizer, examples, "slot", max_new_tokens=4, progress=False)
    assert len(result.predictions) == 3 and list(result.scores) == ["en", "de"]
    assert result.scores["en"]["n"] == 2 and {"slot_f1", "slot_type_f1", "exact_match"} <= set(result.scores["en"])
    assert result.examples[0]["utt"] == "wake me up at nine am"
    assert result.rows("baseline")[1] | {} == {
        **result.examples[1],
        "system": "baseline",
        "prediction": result.predictions[1],
    }
    with pytest.raises(DataError, match="example #1: field 'lang': missing"):
        evaluate(model, tokenizer, [examples[0], {"prompt": "p", "gold": "None"}], "slot", progress=False)
    with pytest.raises(ConfigError, match="schema applies to the 'json' task"):
        evaluate(model, tokenizer, examples, "slot", schema={}, progress=False)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_adapter_systems_load_the_base_once_and_switch_adapters(tmp_path_factory):
    from peft import PeftModel

    root = saved_model_dir(str(tmp_path_factory.mktemp("eval-models")))
    ids = torch.tensor([[1, 10, 11, 12, 13]])
    expected = {"base": _logits(make_model(), ids)}
    for name in ("lora_a", "lora_b"):
        fresh = PeftModel.from_pretrained(make_model(), str(root / name))
        expected[name] = _logits(fresh, ids)
    assert not torch.allclose(expected["lora_a"], expected["base"])

    base = make_model()
    seen = []
    adapters = {"lora_a": root / "lora_a", "lora_b": root / "lora_b"}
    for name, system_model in adapter_systems(base, adapters, include_base=True):
        seen.append(name)
        torch.testing.assert_close(_logits(system_model, ids), expected[name])
    assert seen == ["base", "lora_a", "lora_b"]

    assert [name for name, _ in adapter_systems(make_model(), {"lora_b": root / "lora_b"})] == ["lora_b"]
    with pytest.raises(ConfigError, match="named 'base'"):
        next(adapter_systems(make_model(), {"base": root / "lora_a"}, include_base=True))
    systems = adapter_systems(make_model(), {"a": root / "lora_a", "b": tmp_path_factory.mktemp("empty")})
    next(systems)
    with pytest.raises(ConfigError, match="not a PEFT adapter folder"):
        next(systems)


def test_throughput_benchmark_runs(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_throughput.py"
    spec = importlib.util.spec_from_file_location("eval_throughput", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    snippet = module.main(["--prompts", "4", "--batch_size", "2", "--max_new_tokens", "2"])
    assert "| **ratio** |" in snippet and "equal one-at-a-time outputs: True" in snippet
    assert snippet in capsys.readouterr().out
