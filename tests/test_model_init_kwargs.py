"""Loading the base model as users do: `model_init_kwargs` reach `from_pretrained` in train, evaluate and analyze;
QLoRA (bitsandbytes 4-bit) trains mid-align where bitsandbytes runs, as it does on this CPU."""

from __future__ import annotations

import datasets
import pytest
import torch
import transformers
from peft import LoraConfig

from midalign.commands import parse
from midalign.errors import ConfigError
from midalign.modeling import load_model, model_init_kwargs
from midalign.train import MidAlignConfig, MidAlignTrainer, build_trainer
from tests.conftest import make_tokenizer
from tests.test_train import config, make_data


def test_init_kwargs_reach_from_pretrained(tiny_model_dir):
    model = load_model(tiny_model_dir, init_kwargs='{"attn_implementation": "eager", "dtype": "bfloat16"}')
    assert model.config._attn_implementation == "eager"
    assert next(model.parameters()).dtype == torch.bfloat16
    assert next(load_model(tiny_model_dir, dtype="float32").parameters()).dtype == torch.float32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{attn_implementation: eager}", "not JSON"),
        ('["eager"]', "expected a JSON object"),
        ('{"trust_remote_code": true}', "use --trust_remote_code"),
        ('{"use_safetensors": false}', "safetensors only"),
    ],
)
def test_bad_init_kwargs_are_refused_before_loading(value, message):
    with pytest.raises(ConfigError, match=message):
        model_init_kwargs(value)
    argv = ["--model_name_or_path", "m", "--data", "d", "--output_dir", "o", "--model_init_kwargs", value]
    with pytest.raises(ConfigError, match=message):
        parse("analyze", argv)
    with pytest.raises(ConfigError, match=message):
        parse("evaluate", ["--task", "slot", *argv])


def test_every_command_passes_them(tiny_model_dir, tmp_path, monkeypatch):
    seen = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("attn_implementation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    data = make_data(tmp_path)
    cfg = config(data, model_name_or_path=str(tiny_model_dir), model_init_kwargs={"attn_implementation": "eager"})
    trainer = build_trainer(cfg)
    assert trainer.model.config._attn_implementation == "eager"
    from midalign.cli import main

    multiway = tmp_path / "multiway.jsonl"
    multiway.write_text('{"en": "the cat", "es": "el gato"}\n{"en": "a dog", "es": "un perro"}\n', encoding="utf-8")
    kwargs = ["--model_init_kwargs", '{"attn_implementation": "eager"}']
    common = ["--model_name_or_path", str(tiny_model_dir), *kwargs]
    assert main(["analyze", *common, "--data", str(multiway), "--output_dir", str(tmp_path / "an")]) == 0
    slots = tmp_path / "slots.jsonl"
    slots.write_text('{"lang": "en", "prompt": "the cat", "gold": "None"}\n', encoding="utf-8")
    argv = ["evaluate", "--task", "slot", *common, "--data", str(slots), "--max_new_tokens", "2"]
    assert main([*argv, "--output_dir", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    assert seen == ["eager"] * 3


def test_qlora_trains_mid_align_with_bitsandbytes_4bit(tiny_model_dir, tmp_path):
    pytest.importorskip("bitsandbytes")
    quantization = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}
    model = load_model(tiny_model_dir, init_kwargs={"quantization_config": quantization})
    assert model.is_loaded_in_4bit
    pairs = [
        {"src": s, "tgt": t, "src_lang": "es", "tgt_lang": "en"}
        for s, t in [("el gato", "the cat"), ("casa", "house"), ("perro", "dog"), ("rojo", "red")]
    ]
    trainer = MidAlignTrainer(
        model=model,
        args=MidAlignConfig(
            output_dir=str(tmp_path),
            max_steps=4,
            per_device_train_batch_size=4,
            align_layer="2",
            logging_steps=1,
            save_strategy="no",
            learning_rate=1e-2,
        ),
        train_dataset=datasets.Dataset.from_list([{"prompt": "the cat sat", "completion": " on the mat"}] * 8),
        align_dataset=pairs,
        processing_class=make_tokenizer(),
        peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    losses = [h["align_loss"] for h in trainer.state.log_history if "align_loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if "lora_B" in n)
    assert type(trainer.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == "Linear4bit"
