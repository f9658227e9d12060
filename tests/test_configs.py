"""The shipped launch configs (Accelerate) and the paper's run configs parse and say what the docs promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from trl import TrlParser

from midalign.train import MidAlignConfig

ROOT = Path(__file__).resolve().parents[1]
PAPER_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RECIPES = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
LAUNCH = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_every_model_and_task_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert names == {f"{m}-{t}" for m in ("llama3-8b-instruct", "qwen2.5-7b-instruct") for t in ("slots", "mt")}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_paper_recipe_has_the_paper_hyperparameters(path):
    # bf16 is the recipe's choice on a GPU; this machine has none, and TrainingArguments refuses bf16 here.
    (config,) = TrlParser((MidAlignConfig,)).parse_args_and_config(["--config", str(path), "--bf16", "false"])
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.1)
    # Every projection of the Llama / Qwen2 blocks, as the paper (`all-linear` resolves to the same seven there).
    assert sorted(config.lora_target_modules) == sorted(PAPER_PROJECTIONS)
    assert (config.learning_rate, config.lr_scheduler_type.value, config.warmup_steps) == (5e-4, "inverse_sqrt", 0.03)
    assert config.align_temperature == 0.1 and config.mode == "mid-align"
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps == 128  # on one GPU
    assert config.align_layer == ("16" if "llama3" in path.stem else "14")  # the middle of 32 / 28 blocks
    assert yaml.safe_load(path.read_text())["bf16"] is True
    assert config.activation_checkpointing


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.stem)
def test_accelerate_config_loads(path):
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.mixed_precision == "bf16" and config.num_processes == 8
    engine = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero2": "DEEPSPEED"}[path.stem]
    assert config.distributed_type.value == engine


def test_launch_configs_cover_ddp_fsdp_and_zero2():
    assert {p.stem for p in LAUNCH} == {"ddp", "fsdp", "deepspeed_zero2"}
    zero = yaml.safe_load((ROOT / "configs" / "accelerate" / "deepspeed_zero2.yaml").read_text())
    assert zero["deepspeed_config"]["zero_stage"] == 2
