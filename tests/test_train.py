"""Training in every mode on a tiny model: what must change, what must not, what is logged, resume, CLI."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from midalign.cli import main
from midalign.errors import ConfigError, DataError, UnsupportedModelError
from midalign.layers import unwrap_model
from midalign.train import MidAlignConfig, build_trainer, train
from tests.conftest import make_model

TASK = [
    {"prompt": "wake me up at nine am", "completion": " time : nine am"},
    {"prompt": "play song by artist", "completion": " None"},
    {"prompt": "set alarm for seven pm", "completion": " time : seven pm"},
    {"prompt": "weather in paris today", "completion": " city : paris ; date : today"},
]
PAIRS = [
    ("el gato perro", "the cat dog", "es"),
    ("casa grande rojo", "big red house", "es"),
    ("despierta me a las nueve", "wake me up at nine", "es"),
    ("le chat rouge", "the cat red", "fr"),
    ("maison bleu", "house blue", "fr"),
    ("le chien", "the dog", "fr"),
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture()
def data(tmp_path):
    return make_data(tmp_path)


def make_data(tmp_path: Path) -> dict:
    """Task and parallel JSONL files in `tmp_path`, as `config` takes them."""
    task = write_jsonl(tmp_path / "task.jsonl", TASK * 4)
    pairs = [{"src": s, "tgt": t, "src_lang": lang, "tgt_lang": "en"} for s, t, lang in PAIRS]
    par = write_jsonl(tmp_path / "pairs.jsonl", pairs * 2)
    return {"task_data": task, "parallel_data": par, "dir": tmp_path}


def config(data, mode="mid-align", **kw):
    base = dict(
        output_dir=str(data["dir"] / f"out-{mode}"),
        mode=mode,
        task_data=data["task_data"],
        parallel_data=data["parallel_data"],
        align_layer="2",
        per_device_train_batch_size=4,
        align_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=3,
        logging_steps=1,
        report_to="none",
        lora_r=4,
        save_strategy="no",
        learning_rate=1e-2,
        warmup_steps=0,
        lora_dropout=0.0,
        seed=0,
    )
    base.update(kw)
    return MidAlignConfig(**base)


def lora_state(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}


def logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def run(data, tokenizer, mode="mid-align", arch="llama", **kw):
    trainer = build_trainer(config(data, mode, **kw), model=make_model(arch), tokenizer=tokenizer)
    before = lora_state(trainer)
    trainer.train()
    return trainer, before, lora_state(trainer)


def test_baseline_trains_task_only(data, tokenizer):
    trainer, before, after = run(data, tokenizer, "baseline")
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert len(logged(trainer, "task_loss")) == 3
    assert logged(trainer, "align_loss") == []


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_mid_align_logs_both_losses_and_weights_them(data, tokenizer, arch):
    trainer, before, after = run(data, tokenizer, arch=arch, align_weight=0.5)
    assert any(not torch.equal(before[n], after[n]) for n in before)
    task, align = logged(trainer, "task_loss"), logged(trainer, "align_loss")
    assert len(task) == len(align) == 3 and len(logged(trainer, "align_acc")) == 3
    # One window = 1 task + 1 alignment micro-batch; the backpropagated step loss is task + w * align.
    for total, t, a in zip(logged(trainer, "loss"), task, align, strict=True):
        assert total == pytest.approx(t + 0.5 * a, rel=1e-4)


def test_align_only_leaves_blocks_above_the_layer_untouched(data, tokenizer):
    trainer, before, after = run(data, tokenizer, "align-only")
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    above = {n for n in before if ".layers.2." in n or ".layers.3." in n}
    below = {n for n in before if ".layers.0." in n or ".layers.1." in n}
    assert above and not (changed & above)
    assert below & changed
    assert len(logged(trainer, "align_loss")) == 3 and logged(trainer, "task_loss") == []


def test_alignment_loss_falls(data, tokenizer):
    trainer, *_ = run(data, tokenizer, "align-only", max_steps=12, gradient_accumulation_steps=1)
    losses = logged(trainer, "align_loss")
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3


def test_joint_schedule_and_task_ratio(data, tokenizer):
    trainer, *_ = run(data, tokenizer, align_schedule="joint", gradient_accumulation_steps=1, align_weight=2.0)
    for total, t, a in zip(
        logged(trainer, "loss"), logged(trainer, "task_loss"), logged(trainer, "align_loss"), strict=True
    ):
        assert total == pytest.approx(t + 2.0 * a, rel=1e-4)
    trainer, *_ = run(data, tokenizer, task_per_align=2, gradient_accumulation_steps=3, max_steps=2)
    assert len(logged(trainer, "task_loss")) == 2 and len(logged(trainer, "align_loss")) == 2


def test_full_finetuning(data, tokenizer):
    trainer = build_trainer(config(data, finetuning="full", max_steps=2), model=make_model(), tokenizer=tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])


def test_eval_reports_both_losses(data, tokenizer):
    trainer = build_trainer(
        config(data, task_eval_data=data["task_data"], parallel_eval_data=data["parallel_data"]),
        model=make_model(),
        tokenizer=tokenizer,
    )
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_align_loss", "eval_align_acc"} <= set(metrics)
    assert 0.0 <= metrics["eval_align_acc"] <= 1.0


def test_resume_reproduces_the_uninterrupted_run(data, tokenizer):
    full = config(data, max_steps=4, save_strategy="steps", save_steps=2, output_dir=str(data["dir"] / "full"))
    train(full, model=make_model(), tokenizer=tokenizer)
    resumed_dir = data["dir"] / "resumed"
    resumed_dir.mkdir()
    shutil.copytree(data["dir"] / "full" / "checkpoint-2", resumed_dir / "checkpoint-2")  # "killed" after step 2
    again = config(data, max_steps=4, save_strategy="steps", save_steps=2, output_dir=str(resumed_dir))
    with pytest.raises(ConfigError, match="--resume"):
        train(again, model=make_model(), tokenizer=tokenizer)
    again.resume = True
    trainer = train(again, model=make_model(), tokenizer=tokenizer)
    assert trainer.state.global_step == 4
    a = load_file(data["dir"] / "full" / "adapter_model.safetensors")
    b = load_file(resumed_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_cli_trains_and_saves_a_peft_adapter(data, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model_name_or_path": str(tiny_model_dir),
                "task_data": data["task_data"],
                "parallel_data": data["parallel_data"],
                "align_layer": 0.5,
                "per_device_train_batch_size": 4,
                "max_steps": 2,
                "report_to": "none",
                "save_strategy": "no",
                "lora_r": 4,
            }
        )
    )
    out = tmp_path / "cli-out"
    assert main(["train", "--config", str(cfg), "--output_dir", str(out), "--align_layer", "-2"]) == 0
    saved = json.loads((out / "midalign_config.json").read_text())
    assert saved["align_layer_index"] == 3 and saved["mode"] == "mid-align"
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out)
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert (out / "tokenizer.json").is_file()


# ---------------------------------------------------------------- bad input fails before training
def test_bad_inputs_fail_before_training(data, tokenizer, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "a", "completion": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: invalid JSON"):
        build_trainer(config(data, task_data=str(bad)), model=make_model(), tokenizer=tokenizer)
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"src": "a", "tgt": "b", "src_lang": "es"}])
    with pytest.raises(DataError, match=r"missing\.jsonl:1: field 'tgt_lang': missing"):
        build_trainer(config(data, parallel_data=missing), model=make_model(), tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="out of range"):
        build_trainer(config(data, align_layer="9"), model=make_model(), tokenizer=tokenizer)
    with pytest.raises(UnsupportedModelError):
        build_trainer(config(data), model=torch.nn.Linear(2, 2), tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="needs parallel_data"):  # paths are checked where files are read
        build_trainer(config(data, parallel_data=None), model=make_model(), tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="align_pooling"):
        config(data, align_pooling="first")
    chat = write_jsonl(
        tmp_path / "chat.jsonl",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    )
    plain = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, pad_token="<pad>", eos_token="</s>")
    with pytest.raises(ConfigError, match="chat template"):
        build_trainer(config(data, task_data=chat), model=make_model(), tokenizer=plain)


def test_cli_reports_errors_with_exit_code_2(data, tmp_path, capsys):
    bad = write_jsonl(tmp_path / "empty.jsonl", [{"src": " ", "tgt": "b", "src_lang": "es", "tgt_lang": "en"}])
    code = main(
        [
            "train",
            "--model_name_or_path",
            "unused",
            "--task_data",
            data["task_data"],
            "--parallel_data",
            bad,
            "--output_dir",
            str(tmp_path / "o"),
            "--report_to",
            "none",
        ]
    )
    assert code == 2
    assert "field 'src': empty" in capsys.readouterr().err


def test_losses_reach_tensorboard(data, tokenizer):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, *_ = run(data, tokenizer, report_to="tensorboard")
    (events,) = [p.parent for p in Path(trainer.args.output_dir).rglob("events.out.tfevents.*")]
    tags = set(EventAccumulator(str(events)).Reload().Tags()["scalars"])
    assert {"train/task_loss", "train/align_loss", "train/align_acc", "train/loss"} <= tags


# ---------------------------------------------------------------- precision and memory options
@pytest.mark.parametrize("reentrant", [True, False])
def test_gradient_checkpointing_with_lora_trains_the_lora_weights(data, tokenizer, reentrant):
    """Checkpointed blocks whose inputs come from frozen embeddings still pass gradients to LoRA (both modes)."""
    trainer, before, after = run(
        data,
        tokenizer,
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": reentrant},
    )
    assert unwrap_model(trainer.model).is_activation_checkpointing
    for block in range(4):
        names = [n for n in before if f".layers.{block}." in n and "lora_B" in n]
        assert names and all(not torch.equal(before[n], after[n]) for n in names), block
    assert len(logged(trainer, "align_loss")) == 3


def test_bf16_mixed_precision_keeps_the_similarities_in_fp32(data, tokenizer, monkeypatch):
    import midalign.objective

    seen = []
    original = midalign.objective.info_nce

    def spy(query, candidates, *args, **kw):
        loss = original(query, candidates, *args, **kw)
        seen.append((query.dtype, loss.dtype))
        return loss

    monkeypatch.setattr(midalign.objective, "info_nce", spy)
    # Under autocast alone the residual stream stays fp32; a model loaded in bf16 (dtype) gives bf16 states.
    model = make_model().to(torch.bfloat16)
    trainer = build_trainer(config(data, bf16=True, use_cpu=True), model=model, tokenizer=tokenizer)
    before = lora_state(trainer)
    trainer.train()
    after = lora_state(trainer)
    assert seen and all(query == torch.bfloat16 and loss == torch.float32 for query, loss in seen)
    assert all(math.isfinite(x) for x in logged(trainer, "align_loss") + logged(trainer, "task_loss"))
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_the_trainer_and_the_public_loss_compute_one_objective(data, tokenizer):
    from midalign import alignment_loss

    settings = dict(align_symmetric=True, align_temperature=0.2, align_detach_tgt=True, align_pooling="last")
    trainer = build_trainer(config(data, **settings), model=make_model(), tokenizer=tokenizer)
    batch = trainer.align_collator(trainer.align_rows[:4])
    got, _ = trainer.alignment_step(trainer.model, batch)
    expected = alignment_loss(
        trainer.model,
        batch["src_input_ids"],
        batch["src_attention_mask"],
        batch["tgt_input_ids"],
        batch["tgt_attention_mask"],
        layer=trainer.align_layer_index,
        src_pool_mask=batch["src_pool_mask"],
        tgt_pool_mask=batch["tgt_pool_mask"],
        temperature=0.2,
        symmetric=True,
        detach_tgt=True,
        pooling="last",
    )
    torch.testing.assert_close(got, expected)
