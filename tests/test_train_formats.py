"""What a user's configuration trains: the answer-only loss of every task format, rows that do not fit
`max_length`, LoRA built from the config, fused projections, and a record of what actually ran."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from datasets import Dataset
from peft import LoraConfig
from trl import TrlParser

from midalign.errors import ConfigError
from midalign.train import MidAlignConfig, MidAlignTrainer, build_trainer, train
from midalign.train.lora import warn_unmatched_lora_targets
from tests.conftest import make_model
from tests.test_train import PAIRS, config, make_data, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
SYSTEM, USER, ANSWER = "the big red house", "play song by artist", "city : paris"
CHAT = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": USER},
    {"role": "assistant", "content": ANSWER},
]
FORMATS = {
    "prompt-completion": {"prompt": USER, "completion": " " + ANSWER},
    "authors-prefix-text": {"prefix": USER, "text": " " + ANSWER},
    "messages": {"messages": CHAT},
    "conversational-prompt-completion": {"prompt": CHAT[:2], "completion": CHAT[2:]},
}


@pytest.fixture()
def data(tmp_path):
    return make_data(tmp_path)


def trained_tokens(trainer, tokenizer, row=0) -> list[str]:
    example = trainer.train_dataset[row]
    return tokenizer.convert_ids_to_tokens(
        [i for i, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_documented_format_puts_the_loss_on_the_answer_only(data, tokenizer, fmt):
    task = write_jsonl(data["dir"] / "task.jsonl", [FORMATS[fmt]] * 4)
    trainer = build_trainer(config(data, "baseline", task_data=task), model=make_model(), tokenizer=tokenizer)
    assert trained_tokens(trainer, tokenizer) == ["city", ":", "paris", "</s>"]


def test_a_messages_dataset_from_python_trains_on_the_answer_only(data, tokenizer):
    trainer = MidAlignTrainer(
        make_model(),
        args=config(data, "baseline"),
        train_dataset=Dataset.from_list([{"messages": CHAT}] * 4),
        processing_class=tokenizer,
    )
    assert trained_tokens(trainer, tokenizer) == ["city", ":", "paris", "</s>"]


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs" / "paper").glob("*slots.yaml")), ids=lambda p: p.stem)
def test_paper_recipes_with_the_documented_chat_data_train_the_answer_only(data, tokenizer, recipe):
    task = write_jsonl(data["dir"] / "chat.jsonl", [{"messages": CHAT}] * 4)
    pairs = [{"src": s, "tgt": t, "src_lang": lang, "tgt_lang": "en"} for s, t, lang in PAIRS]
    data["parallel_data"] = write_jsonl(data["dir"] / "pairs32.jsonl", pairs * 6)  # the recipes' batch is 32 pairs
    overrides = ["--bf16", "false", "--activation_checkpointing", "false", "--report_to", "none", "--align_layer", "2"]
    for key, value in dict(
        task_data=task,
        task_eval_data=task,
        parallel_data=data["parallel_data"],
        parallel_eval_data=data["parallel_data"],
        output_dir=str(data["dir"] / "out"),
    ).items():
        overrides += [f"--{key}", value]
    (args,) = TrlParser((MidAlignConfig,)).parse_args_and_config(["--config", str(recipe), *overrides])
    trainer = build_trainer(args, model=make_model(), tokenizer=tokenizer)
    assert trained_tokens(trainer, tokenizer) == ["city", ":", "paris", "</s>"]
    evaluated = trainer.eval_dataset[0]
    assert sum(label != -100 for label in evaluated["labels"]) == 4


def test_rows_longer_than_max_length_are_refused_with_their_count(data, tokenizer):
    long = {"prompt": " ".join(["the big red house"] * 10), "completion": " city : paris"}
    short = {"prompt": "play song", "completion": " city : paris"}
    task = write_jsonl(data["dir"] / "long.jsonl", [long, short, long, short])
    with pytest.raises(
        ConfigError,
        match=r"task_data: 2 of 4 rows are longer than max_length 16 tokens \(the longest, "
        r"row 1, has 45\).*--max_length to 45 or pass --truncate_task_rows",
    ):
        build_trainer(config(data, task_data=task, max_length=16), model=make_model(), tokenizer=tokenizer)
    # Every prompt too long: refused too (TRL would drop every row and a mid-align run would train alignment only).
    all_long = write_jsonl(data["dir"] / "all-long.jsonl", [long] * 4)
    with pytest.raises(ConfigError, match="4 of 4 rows"):
        build_trainer(config(data, task_data=all_long, max_length=16), model=make_model(), tokenizer=tokenizer)
    evals = write_jsonl(data["dir"] / "eval.jsonl", [long])
    with pytest.raises(ConfigError, match="task_eval_data: 1 of 1 rows"):
        build_trainer(config(data, task_eval_data=evals, max_length=16), model=make_model(), tokenizer=tokenizer)


def test_truncation_when_asked_cuts_and_drops_with_a_count(data, tokenizer, caplog):
    long = {"prompt": " ".join(["the big red house"] * 10), "completion": " city : paris"}
    long_answer = {"prompt": "play", "completion": " " + " ".join(["city : paris"] * 10)}
    short = {"prompt": "play song", "completion": " city : paris"}
    task = write_jsonl(data["dir"] / "long.jsonl", [long, long_answer, short, short])
    with caplog.at_level(logging.WARNING, logger="midalign"):
        trainer = build_trainer(
            config(data, task_data=task, max_length=16, truncate_task_rows=True),
            model=make_model(),
            tokenizer=tokenizer,
        )
    assert "cut 2 of 4 rows to max_length 16; dropped 1 left without an answer token" in caplog.text
    assert len(trainer.train_dataset) == 3
    assert max(len(ids) for ids in trainer.train_dataset["input_ids"]) == 16
    with pytest.raises(ConfigError, match="no row keeps an answer token"):
        build_trainer(
            config(
                data, task_data=write_jsonl(data["dir"] / "l.jsonl", [long] * 4), max_length=16, truncate_task_rows=True
            ),
            model=make_model(),
            tokenizer=tokenizer,
        )


def test_the_python_api_builds_the_lora_the_config_names_and_records_what_ran(data, tokenizer, tmp_path):
    args = config(data, "baseline", lora_r=2, lora_alpha=4, output_dir=str(tmp_path / "out"), max_steps=1)
    model = make_model()
    trainer = MidAlignTrainer(
        model,
        args=args,
        train_dataset=Dataset.from_list([FORMATS["prompt-completion"]] * 4),
        processing_class=tokenizer,
    )
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # not every parameter of the model
    ranks = {p.shape[0] for n, p in trainer.model.named_parameters() if "lora_A" in n}
    assert ranks == {2}
    trainer.train()
    trainer.save_model()
    recorded = json.loads((tmp_path / "out" / "midalign_config.json").read_text())
    assert (recorded["finetuning"], recorded["lora_r"], recorded["lora_alpha"]) == ("lora", 2, 4)
    assert recorded["lora_target_modules"] == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


def test_a_given_peft_config_is_what_gets_recorded(data, tokenizer, tmp_path):
    args = config(data, "baseline", lora_r=8, output_dir=str(tmp_path / "out"), max_steps=1)
    given = LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = MidAlignTrainer(
        make_model(),
        args=args,
        train_dataset=Dataset.from_list([FORMATS["prompt-completion"]] * 4),
        processing_class=tokenizer,
        peft_config=given,
    )
    trainer.train()
    trainer.save_model()
    recorded = json.loads((tmp_path / "out" / "midalign_config.json").read_text())
    assert (recorded["lora_r"], recorded["lora_target_modules"]) == (3, ["q_proj", "v_proj"])
    with pytest.raises(ConfigError, match="finetuning is 'full' but a peft_config"):
        MidAlignTrainer(
            make_model(),
            args=config(data, "baseline", finetuning="full"),
            train_dataset=Dataset.from_list([FORMATS["prompt-completion"]] * 4),
            processing_class=tokenizer,
            peft_config=given,
        )


def test_full_finetuning_is_recorded_as_full(data, tokenizer, tmp_path):
    args = config(data, "baseline", finetuning="full", output_dir=str(tmp_path / "out"), max_steps=1)
    train(args, model=make_model(), tokenizer=tokenizer)
    recorded = json.loads((tmp_path / "out" / "midalign_config.json").read_text())
    assert (recorded["finetuning"], recorded["lora_r"]) == ("full", None)


def tiny_phi3():
    return make_model("phi3", layers=2)


def test_default_targets_adapt_fused_projections(data, tokenizer):
    trainer = build_trainer(config(data, "baseline"), model=tiny_phi3(), tokenizer=tokenizer)
    adapted = {n.split(".lora_A")[0].split(".")[-1] for n, _ in trainer.model.named_parameters() if "lora_A" in n}
    assert adapted == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}


def test_named_targets_missing_from_blocks_are_warned(data, tokenizer, caplog):
    llama_names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    with caplog.at_level(logging.WARNING, logger="midalign"):
        trainer = build_trainer(
            config(data, "baseline", lora_target_modules=llama_names), model=tiny_phi3(), tokenizer=tokenizer
        )
    for name in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
        assert f"'{name}' matches no linear layer in 2 of 2 blocks" in caplog.text
    assert "'o_proj'" not in caplog.text and "qkv_proj" in caplog.text  # the fused names are suggested
    assert warn_unmatched_lora_targets(trainer.model, ["o_proj", "down_proj"], None) == []
    # On Llama the seven names cover every block: nothing to say.
    llama = build_trainer(
        config(data, "baseline", lora_target_modules=llama_names), model=make_model(), tokenizer=tokenizer
    )
    assert warn_unmatched_lora_targets(llama.model, llama_names, None) == []
