"""Faults during training: SIGKILL and resume, interrupted saves, refusing to mix runs, non-finite losses."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from midalign import alignment_loss
from midalign.errors import ConfigError
from midalign.train import NonFiniteLossError, build_trainer, train
from tests.conftest import make_model
from tests.test_train import PAIRS, TASK, config, make_data, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
STEPS = 8
LOGGED = ("loss", "task_loss", "align_loss", "align_acc", "grad_norm", "learning_rate")


@pytest.fixture()
def data(tmp_path):
    return make_data(tmp_path)


@pytest.fixture(scope="module")
def run_config(tmp_path_factory, tiny_model_dir) -> Path:
    """A CLI run config: mid-align, 2 task micro-batches per alignment one with 2 micro-batches per step, so the
    alternation phase shifts from one optimizer step to the next; a checkpoint after every step."""
    folder = tmp_path_factory.mktemp("kill")
    pairs = [{"src": s, "tgt": t, "src_lang": lang, "tgt_lang": "en"} for s, t, lang in PAIRS]
    cfg = {
        "model_name_or_path": str(tiny_model_dir),
        "task_data": write_jsonl(folder / "task.jsonl", TASK * 4),
        "parallel_data": write_jsonl(folder / "pairs.jsonl", pairs * 2),
        "align_layer": "2",
        "per_device_train_batch_size": 4,
        "align_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "task_per_align": 2,
        "max_steps": STEPS,
        "save_strategy": "steps",
        "save_steps": 1,
        "logging_steps": 1,
        "learning_rate": 1e-2,
        "warmup_steps": 0,
        "lora_r": 4,
        "lora_dropout": 0.0,
        "report_to": "none",
        "use_cpu": True,
        "seed": 0,
    }
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def launch(run_config: Path, output_dir: Path, *extra: str, kill: tuple[str, int] = ("step", 10**6)):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    where, step = kill
    cmd = [sys.executable, str(ROOT / "tests" / "kill_worker.py"), where, str(step), "--"]
    cmd += ["--config", str(run_config), "--output_dir", str(output_dir), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def history(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    return [{k: h[k] for k in LOGGED if k in h} | {"step": h["step"]} for h in state["log_history"] if "loss" in h]


@pytest.fixture(scope="module")
def uninterrupted(run_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = launch(run_config, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize("where", ["step", "save"])
def test_sigkill_and_resume_equal_the_uninterrupted_run(run_config, uninterrupted, tmp_path, where):
    step = random.SystemRandom().randint(2, STEPS - 2)  # a different step each time; named in every message
    out = tmp_path / "run"
    killed = launch(run_config, out, kill=(where, step))
    assert killed.returncode == -signal.SIGKILL, f"step {step}: {killed.stderr[-2000:]}"
    if where == "save":  # killed while writing checkpoint-{step}: weights on disk, no trainer state
        assert (out / f"checkpoint-{step}" / "adapter_model.safetensors").is_file()
        assert not (out / f"checkpoint-{step}" / "trainer_state.json").exists()
    refused = launch(run_config, out)
    assert refused.returncode == 2 and "--resume" in refused.stderr, f"step {step}"
    resumed = launch(run_config, out, "--resume", "true")
    assert resumed.returncode == 0, f"step {step}: {resumed.stderr[-3000:]}"
    if where == "save":
        assert (out / f"checkpoint-{step}.incomplete").is_dir()
    a, b = load_file(uninterrupted / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) > 0
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6, msg=f"step {step}: {key}")
    expected, got = history(uninterrupted), history(out)
    assert [h["step"] for h in got] == list(range(1, STEPS + 1)), f"step {step}"
    for e, g in zip(expected, got, strict=True):
        assert e.keys() == g.keys() and {"task_loss", "align_loss"} & e.keys(), f"step {step}"
        for key in e:
            assert g[key] == pytest.approx(e[key], rel=1e-5, abs=1e-7), f"killed at {step}: {key} of {e['step']}"


def test_final_save_is_atomic_and_a_finished_run_is_not_overwritten(data, tokenizer):
    out = data["dir"] / "finished"
    cfg = config(data, output_dir=str(out), max_steps=1)
    train(cfg, model=make_model(), tokenizer=tokenizer)
    assert (out / "adapter_model.safetensors").is_file() and (out / "midalign_config.json").is_file()
    assert not (out / ".saving").exists()
    before = (out / "adapter_model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds the output of an earlier run"):
        train(config(data, output_dir=str(out), max_steps=1), model=make_model(), tokenizer=tokenizer)
    assert (out / "adapter_model.safetensors").read_bytes() == before


@pytest.mark.parametrize("kind", ["alignment loss", "task loss", "gradient"])
def test_non_finite_values_stop_training_and_keep_the_last_good_checkpoint(data, tokenizer, kind):
    out = data["dir"] / "nan"
    cfg = config(data, output_dir=str(out), max_steps=6, save_strategy="steps", save_steps=1)
    trainer = build_trainer(cfg, model=make_model(), tokenizer=tokenizer)
    bad_step = 3
    model = trainer.model
    decoder_layer = model.base_model.model.model.layers[0]

    def poison(module, args, output):
        if trainer.state.global_step + 1 != bad_step:
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        is_align = hidden.shape[0] == 2 * cfg.align_batch_size  # both sides of the pairs in one forward
        if (kind == "alignment loss") == is_align and kind != "gradient":
            return hidden * float("nan")
        return None

    handles = [decoder_layer.register_forward_hook(poison)]
    if kind == "gradient":  # finite losses, a NaN gradient in one LoRA weight
        lora = next(p for n, p in model.named_parameters() if "lora_B" in n)
        handles = [lora.register_hook(lambda g: g * float("nan") if trainer.state.global_step + 1 == bad_step else g)]
    with pytest.raises(NonFiniteLossError, match=f"non-finite {kind} at step {bad_step}") as error:
        trainer.train()
    for handle in handles:
        handle.remove()
    assert f"checkpoint-{bad_step - 1}" in str(error.value)
    assert not (out / f"checkpoint-{bad_step}").exists()
    saved = load_file(out / f"checkpoint-{bad_step - 1}" / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step never reached the weights


def test_fp16_overflow_stops_with_a_hint(data, tokenizer):
    model = make_model().half()
    with torch.no_grad():  # the first block's attention output exceeds fp16's largest value, 65504
        model.model.layers[0].self_attn.v_proj.weight.fill_(1.0)
        model.model.layers[0].self_attn.o_proj.weight.fill_(1000.0)
    trainer = build_trainer(config(data, output_dir=str(data["dir"] / "fp16")), model=model, tokenizer=tokenizer)
    with pytest.raises(NonFiniteLossError, match=r"non-finite task loss at step 1.*fp16 overflow"):
        trainer.train()


def test_one_pair_per_alignment_batch_is_refused(data):
    with pytest.raises(ConfigError, match="no negatives; set align_batch_size to 2 or more"):
        config(data, align_batch_size=1)
    with pytest.raises(ConfigError, match="no negatives"):
        config(data, mode="align-only", align_batch_size=None, per_device_train_batch_size=1)


def test_identical_sentences_in_a_batch_give_a_finite_loss_and_gradient(tokenizer):
    """Duplicates are false negatives: the loss cannot reach 0, but stays finite (log of the duplicate count)."""
    model = make_model().train()
    same = tokenizer(["the cat sat"] * 4, return_tensors="pt")
    ids, mask = same["input_ids"], same["attention_mask"]
    loss = alignment_loss(model, ids, mask, ids, mask, layer=2)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(4), abs=1e-4)  # four identical candidates, one of them right
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_the_final_save_keeps_the_users_umask(tmp_path):
    # safetensors' save_file (so PEFT's save_pretrained) writes 0600 whatever the umask; a trained adapter must
    # be readable by whoever the user's umask lets read it, as every other file midalign writes.
    from midalign.files import current_umask
    from midalign.train.checkpoints import save_through_staging

    def save(folder):
        folder.mkdir(parents=True)
        weights = folder / "adapter_model.safetensors"
        weights.write_bytes(b"x")
        weights.chmod(0o600)

    save_through_staging(tmp_path / "run", save, should_save=True)
    mode = (tmp_path / "run" / "adapter_model.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~current_umask()
