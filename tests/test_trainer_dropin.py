"""`MidAlignTrainer` as a drop-in for TRL's `SFTTrainer`: SFTConfig's defaults kept, datasets and lists taken as
they are, no placeholder paths; the `midalign train` command keeps the paper's recipe."""

from __future__ import annotations

import dataclasses

import datasets
import pytest
import torch
from peft import LoraConfig
from trl import SFTConfig

from midalign.commands import parse
from midalign.errors import ConfigError
from midalign.train import MidAlignConfig, MidAlignTrainer
from midalign.train.config import PAPER_RECIPE
from tests.conftest import make_model

# Resolved for the machine instead (SFTConfig's would fail or only cost on a CPU): see `MidAlignConfig`.
MACHINE_RESOLVED = {"bf16", "activation_checkpointing", "gradient_checkpointing", "dataloader_pin_memory"}


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def test_every_inherited_default_is_sftconfigs():
    ours = {f.name: _default(f) for f in dataclasses.fields(MidAlignConfig)}
    changed = {f.name for f in dataclasses.fields(SFTConfig) if ours[f.name] != _default(f)}
    assert changed <= MACHINE_RESOLVED, changed - MACHINE_RESOLVED
    config = MidAlignConfig(output_dir="unused")
    assert (config.learning_rate, config.lr_scheduler_type, config.warmup_steps) == (2e-5, "linear", 0)
    assert not config.bf16 and not config.activation_checkpointing  # this CPU: neither


def test_the_command_line_trains_with_the_papers_recipe_unless_told_otherwise(tmp_path):
    args = ["--output_dir", str(tmp_path), "--task_data", "t.jsonl"]
    config = parse("train", args)
    assert {k: getattr(config, k) for k in PAPER_RECIPE} == {**PAPER_RECIPE, "lr_scheduler_type": "inverse_sqrt"}
    assert parse("train", [*args, "--learning_rate", "1e-4"]).learning_rate == 1e-4
    (tmp_path / "run.yaml").write_text("learning_rate: 3.0e-4\n", encoding="utf-8")
    assert parse("train", [*args, "--config", str(tmp_path / "run.yaml")]).learning_rate == 3e-4


PROMPTS = ["the cat sat on the mat", "a big red house", "the small blue dog", "a cat on a house"]
PAIRS = [
    ("el gato", "the cat", "es"),
    ("casa roja", "red house", "es"),
    ("perro azul", "blue dog", "es"),
    ("le chat", "the cat", "fr"),
    ("maison rouge", "red house", "fr"),
    ("chien bleu", "blue dog", "fr"),
]


@pytest.mark.parametrize("pairs_as", ["dataset", "list"])
def test_an_sfttrainer_script_with_two_lines_changed_trains_mid_align(tokenizer, tmp_path, pairs_as):
    """The migration in docs/training.md: the class, the config, and `align_dataset=`; no paths, no conversion."""
    train_dataset = datasets.Dataset.from_list([{"prompt": p, "completion": " the cat"} for p in PROMPTS * 2])
    rows = [{"src": s, "tgt": t, "src_lang": lang, "tgt_lang": "en"} for s, t, lang in PAIRS]
    pairs = datasets.Dataset.from_list(rows) if pairs_as == "dataset" else rows
    model = make_model("llama")
    trainer = MidAlignTrainer(
        model=model,
        args=MidAlignConfig(
            output_dir=str(tmp_path),
            max_steps=4,
            per_device_train_batch_size=4,
            learning_rate=1e-2,
            align_layer="2",
            logging_steps=1,
            save_strategy="no",
        ),
        train_dataset=train_dataset,
        align_dataset=pairs,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    logged = [h for h in trainer.state.log_history if "align_loss" in h]
    assert logged and all(torch.isfinite(torch.tensor(h["align_loss"])) for h in logged)
    assert any("task_loss" in h for h in trainer.state.log_history)
    moved = [n for n, p in trainer.model.named_parameters() if "lora_B" in n and not torch.equal(p, before[n])]
    assert moved  # the LoRA named by the given peft_config was trained
    assert trainer.model.peft_config["default"].r == 4


def test_a_mode_without_its_data_is_refused_by_name(tokenizer, tmp_path):
    args = MidAlignConfig(output_dir=str(tmp_path), mode="mid-align", align_layer="2")
    with pytest.raises(ConfigError, match=r"mode mid-align needs parallel pairs \(align_dataset\)"):
        MidAlignTrainer(make_model("llama"), args=args, train_dataset=None, processing_class=tokenizer)
    with pytest.raises(ConfigError, match=r"mode mid-align needs task examples \(train_dataset\)"):
        MidAlignTrainer(make_model("llama"), args=args, align_dataset=[], processing_class=tokenizer)
