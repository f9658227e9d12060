"""Reliability, second round: file modes, data that is not what it seems, settings that cannot be right."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from midalign.errors import ConfigError
from midalign.files import apply_umask, write_json_atomic
from midalign.train import build_trainer, train
from tests.conftest import make_model
from tests.test_train import config, make_data, write_jsonl


@pytest.fixture()
def data(tmp_path):
    return make_data(tmp_path)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_keep_the_users_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = write_json_atomic(tmp_path / "sub" / "x.json", {"a": 1})
        folder = tmp_path / "made-by-tempfile"
        folder.mkdir(mode=0o700)
        apply_umask(folder, folder=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask


# ------------------------------------------------------------------ data that is not what it seems
def test_multiway_metadata_fields_are_not_languages(tmp_path):
    from midalign.data import read_multiway, read_parallel

    rows = [
        {
            "id": 1,
            "URL": "https://x",
            "domain": "wiki",
            "topic": "t",
            "has_image": 0,
            "en": "the cat",
            "de": "die Katze",
        },
        {"id": 2, "URL": "https://y", "domain": "news", "topic": "t", "has_image": 1, "en": "a dog", "de": "ein Hund"},
    ]
    path = tmp_path / "multi.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert sorted(read_multiway(path)) == ["de", "en"]
    assert {(p.src_lang, p.tgt_lang) for p in read_parallel(path, pivot="en")} == {("de", "en")}


def test_tsv_is_recognised_whatever_the_case_of_its_suffix(tmp_path):
    from midalign.data import read_parallel

    path = tmp_path / "pairs.TSV"
    path.write_text("src\ttgt\tsrc_lang\ttgt_lang\ndie Katze\tthe cat\tde\ten\n", encoding="utf-8")
    assert [(p.src, p.tgt) for p in read_parallel(path)] == [("die Katze", "the cat")]


def test_parallel_set_smaller_than_the_batch_is_refused(data, tokenizer):
    small = write_jsonl(
        data["dir"] / "small.jsonl", [{"src": "le chat", "tgt": "the cat", "src_lang": "fr", "tgt_lang": "en"}] * 3
    )
    with pytest.raises(ConfigError, match="parallel_data holds 3 pairs, fewer than align_batch_size 4"):
        build_trainer(config(data, parallel_data=small), model=make_model(), tokenizer=tokenizer)


def test_no_pair_repeats_within_an_alignment_batch():
    from midalign.data.batching import ScheduleBatchSampler

    # Direction `sw-en` has one pair: drawn uniformly over directions it would fill half of every batch.
    directions = ["sw-en"] + ["de-en"] * 7
    sampler = ScheduleBatchSampler(0, directions, task_batch_size=4, align_batch_size=8, seed=3)
    for batch in sampler:
        assert len(batch) == 8 and len(set(batch)) == 8
    with pytest.raises(ValueError, match="cannot fill an alignment batch of 9"):
        ScheduleBatchSampler(0, directions, task_batch_size=4, align_batch_size=9)


# ------------------------------------------------------------------ settings that cannot be right
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"align_weight": -0.5}, "--align_weight must be a finite number >= 0, got -0.5"),
        ({"align_weight": float("nan")}, "--align_weight must be a finite number >= 0"),
        ({"num_train_epochs": 0, "max_steps": -1}, "--num_train_epochs must be > 0 when --max_steps is not set"),
        ({"align_batch_size": 0}, "--align_batch_size must be >= 2"),
        ({"per_device_train_batch_size": 0}, "--per_device_train_batch_size must be >= 1, got 0"),
        ({"learning_rate": float("inf")}, "--learning_rate must be a finite number > 0"),
        ({"lora_r": 0}, "--lora_r must be >= 1, got 0"),
        ({"lora_dropout": 1.0}, r"--lora_dropout must be in \[0, 1\)"),
        ({"align_temperature": 0}, "--align_temperature must be a finite number > 0"),
        ({"max_length": 0}, "--max_length must be >= 1"),
        # a YAML value of the wrong type (the command line converts flags; YAML and Python do not)
        ({"lora_r": [1, 2]}, r"--lora_r must be an integer, got \[1, 2\]"),
        ({"lora_r": {"a": 1}}, "--lora_r must be an integer"),
        ({"lora_r": 8.7}, "--lora_r must be an integer, got 8.7"),
        ({"per_device_train_batch_size": True}, "--per_device_train_batch_size must be an integer, got True"),
        ({"align_weight": True}, "--align_weight must be a number, got True"),
        ({"lora_layers": [1.5]}, "--lora_layers must be a list of integers"),
        ({"lora_layers": [-1]}, r"--lora_layers takes block numbers counted from 0 .*got \[-1\]"),
        ({"lora_layers": []}, "--lora_layers takes block numbers counted from 0"),
        ({"lora_target_modules": []}, "--lora_target_modules names no module"),
        ({"mode": "align-only", "align_weight": 0}, "--align_weight 0 in mode align-only trains nothing"),
        # inherited options midalign would ignore
        ({"resume_from_checkpoint": "runs/x/checkpoint-1"}, "--resume_from_checkpoint is not taken .* use --resume"),
        ({"do_predict": True}, "--do_predict is not taken .* midalign evaluate"),
        ({"do_eval": True}, "--do_eval alone evaluates nothing: set --eval_strategy"),
        ({"dataloader_drop_last": True}, "--dataloader_drop_last is not used in mode mid-align"),
        ({"train_sampling_strategy": "sequential"}, "--train_sampling_strategy is not used in mode mid-align"),
        ({"resume": True, "overwrite_output_dir": True}, "--resume continues .* --overwrite_output_dir replaces"),
        ({"model_init_kwargs": "{bad"}, "--model_init_kwargs is not a valid JSON object: invalid JSON"),
        ({"lr_scheduler_kwargs": '{"a": 1, "a": 2}'}, "--lr_scheduler_kwargs is not a valid JSON object: .*'a'"),
    ],
)
def test_settings_that_cannot_be_right_are_refused_naming_the_flag(data, setting, message):
    with pytest.raises(ConfigError, match=message):
        config(data, **setting)


def test_settings_are_taken_as_their_type_says(data):
    assert config(data, lora_r=8.0).lora_r == 8  # a whole float is its int
    assert config(data, "baseline", dataloader_drop_last=True).dataloader_drop_last  # baseline's loader takes it
    assert config(data, model_init_kwargs='{"dtype": "float32"}').model_init_kwargs == {"dtype": "float32"}


@pytest.mark.parametrize("value", ["[1, 2]", "{a: 1}", "true", "8.7"])
def test_a_yaml_value_of_the_wrong_type_is_one_line_naming_the_field(data, tmp_path, capsys, value):
    from midalign.cli import main

    run = tmp_path / "run.yaml"
    run.write_text(f"task_data: {data['task_data']}\nlora_r: {value}\n")
    assert main(["train", "--config", str(run), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # 8.7 used to train with r 8 (int() cut it), while the flag --lora_r 8.7 was refused.
    assert len(err) == 1 and "run.yaml: lora_r " in err[0] and "is not a valid int" in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"align_layer": "0"}, "align_layer 0 has no trainable parameter at or below it .*embedding output"),
        # LoRA only above the alignment layer: was a PyTorch error at the first step, with a lock and an empty log
        ({"lora_target_modules": ["q_proj"], "lora_layers": [3], "align_layer": "1"}, "align_layer 1 has no trainable"),
        ({"mode": "align-only", "lora_layers": [2, 3], "align_layer": "2"}, "align_layer 2 has no trainable"),
    ],
)
def test_an_alignment_layer_with_nothing_to_train_below_it_is_refused_before_training(
    data, tokenizer, setting, message
):
    with pytest.raises(ConfigError, match=message):
        build_trainer(config(data, **setting), model=make_model(), tokenizer=tokenizer)
    build_trainer(config(data, lora_layers=[0], align_layer="1"), model=make_model(), tokenizer=tokenizer)


@pytest.mark.parametrize("targets", [["all-linear"], ["q_proj"]])
def test_lora_layers_beyond_the_model_are_refused_naming_its_depth(data, tokenizer, targets):
    refused = r"--lora_layers \[7, 9\] name no block: LlamaForCausalLM has 4 blocks, numbered 0-3"
    with pytest.raises(ConfigError, match=refused):
        build_trainer(
            config(data, lora_target_modules=targets, lora_layers=[1, 7, 9]), model=make_model(), tokenizer=tokenizer
        )


def test_all_linear_on_some_blocks_adapts_every_linear_layer_of_those_blocks(data, tokenizer):
    # PEFT takes no layer list with `all-linear` (was a ValueError traceback): it is spelled out per block.
    trainer = build_trainer(config(data, lora_layers=[1, 2]), model=make_model(), tokenizer=tokenizer)
    adapted = {name.split(".lora_A")[0] for name, _ in trainer.model.named_parameters() if ".lora_A." in name}
    blocks = {int(name.split(".layers.")[1].split(".")[0]) for name in adapted}
    leaves = {name.rsplit(".", 1)[1] for name in adapted}
    assert blocks == {1, 2}
    assert leaves == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert trainer.resolved_settings()["lora_layers"] == [1, 2]


def test_evaluation_without_held_out_data_is_refused_before_the_model_loads(data, tmp_path):
    args = config(data, eval_strategy="steps", eval_steps=1, model_name_or_path=str(tmp_path / "never-loaded"))
    with pytest.raises(ConfigError, match="--eval_strategy steps needs held-out data: --task_eval_data or"):
        build_trainer(args)


def test_held_out_pairs_alone_are_evaluated_during_training(data, tokenizer):
    # Trainer asks for a task eval set whenever evaluation is on; align-only runs have pairs only.
    args = config(
        data, "align-only", eval_strategy="steps", eval_steps=1, max_steps=2, parallel_eval_data=data["parallel_data"]
    )
    trainer = build_trainer(args, model=make_model(), tokenizer=tokenizer)
    trainer.train()
    assert len([h for h in trainer.state.log_history if "eval_align_loss" in h]) == 2


def test_an_align_max_length_that_leaves_no_token_names_the_flag(data, tokenizer):
    # The tokenizer adds BOS: one token leaves no word of any sentence (was blamed on the data).
    with pytest.raises(
        ConfigError, match=r"--align_max_length 1 leaves no token of the src sentence of .*pairs\.jsonl:1"
    ):
        build_trainer(config(data, align_max_length=1), model=make_model(), tokenizer=tokenizer)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"align_layer": "1"}, "align_layer_index 2 -> 1"),
        ({"lora_r": 2}, "lora_r 4 -> 2"),
        ({"learning_rate": 5e-3}, "learning_rate 0.01 -> 0.005"),
    ],
)
def test_resume_with_changed_settings_is_refused(data, tokenizer, change, named):
    first = config(data, max_steps=2, save_strategy="steps", save_steps=1)
    train(first, model=make_model(), tokenizer=tokenizer)
    shutil.rmtree(first.output_dir + "/checkpoint-2")  # as if killed after the first checkpoint
    for name in ("adapter_model.safetensors", "midalign_config.json"):
        Path(first.output_dir, name).unlink()
    changed = config(data, max_steps=2, save_strategy="steps", save_steps=1, resume=True, **change)
    with pytest.raises(ConfigError, match=f"--resume would change the run recorded in .*checkpoint-1.*{named}"):
        train(changed, model=make_model(), tokenizer=tokenizer)
    same = config(data, max_steps=2, save_strategy="steps", save_steps=1, resume=True, logging_steps=2)
    assert train(same, model=make_model(), tokenizer=tokenizer).state.global_step == 2  # logging may change


# ------------------------------------------------------------------ adapters on the wrong base
@pytest.fixture(scope="module")
def adapter_on_tiny_base(tmp_path_factory, tiny_model_dir, tokenizer):
    """A LoRA adapter trained on `tiny_model_dir` (its base as the training command named it)."""
    root = tmp_path_factory.mktemp("adapter")
    data = make_data(root)
    args = config(
        data, "baseline", model_name_or_path=str(tiny_model_dir), output_dir=str(root / "adapter"), max_steps=1
    )
    train(args)
    return root / "adapter"


def test_every_command_refuses_an_adapter_trained_on_another_base(adapter_on_tiny_base, tmp_path, tokenizer):
    from midalign.analysis.run import system_models
    from midalign.evaluation.generation import adapter_systems
    from midalign.modeling import load_model

    other = tmp_path / "other-base"
    make_model(seed=1).save_pretrained(other)
    tokenizer.save_pretrained(other)
    model = load_model(other)
    for loop in (adapter_systems, system_models):
        with pytest.raises(ConfigError, match=r"the adapter was trained on .*tiny-llama.*, not on the base model"):
            list(loop(model, {"a": str(adapter_on_tiny_base)}, include_base=False))
    with pytest.raises(ConfigError, match="the adapter was trained on"):
        from midalign.merging import load_adapters

        load_adapters(str(other), {"task": str(adapter_on_tiny_base)})


def test_an_adapter_folder_given_as_the_model_is_refused(adapter_on_tiny_base, tmp_path, capsys):
    from midalign.cli import main
    from midalign.modeling import load_model

    with pytest.raises(ConfigError, match=r"is a PEFT adapter, not a base model: pass its base model \(.*tiny-llama"):
        load_model(adapter_on_tiny_base)
    data = make_data(tmp_path)
    code = main(
        [
            "train",
            "--model_name_or_path",
            str(adapter_on_tiny_base),
            "--task_data",
            data["task_data"],
            "--parallel_data",
            data["parallel_data"],
            "--output_dir",
            str(tmp_path / "out"),
            "--report_to",
            "none",
        ]
    )
    assert code == 2 and "is a PEFT adapter, not a base model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_relative_base_path_matches_from_another_directory(tmp_path):
    from midalign.modeling import same_base

    base = tmp_path / "runs" / "x" / "base"
    base.mkdir(parents=True)
    assert same_base(str(base), "runs/x/base")  # recorded relative to where training ran
    assert not same_base(str(base), "runs/y/base")
    assert same_base("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B/")
    assert not same_base("Qwen/Qwen2.5-7B", "meta-llama/Meta-Llama-3-8B")


# ------------------------------------------------------------------ two runs, one folder
def test_a_second_run_into_a_locked_folder_is_refused_naming_the_holder(data, tokenizer):
    from midalign.files import folder_lock

    args = config(data)
    busy = r"is in use by another training run \(pid \d+ on .*, since "
    with folder_lock(args.output_dir, "training run"), pytest.raises(ConfigError, match=busy):
        train(args, model=make_model(), tokenizer=tokenizer)
    assert not any(Path(args.output_dir).glob("checkpoint-*"))
    train(args, model=make_model(), tokenizer=tokenizer)  # free again once the holder is done
    assert (Path(args.output_dir) / "adapter_model.safetensors").is_file()


def test_an_output_folder_that_takes_no_file_is_refused_before_the_first_step(data, tokenizer, monkeypatch):
    import midalign.files

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(midalign.files.tempfile, "TemporaryFile", refuse)
    with pytest.raises(ConfigError, match=r"out-mid-align is not writable: Permission denied"):
        train(config(data), model=make_model(), tokenizer=tokenizer)


def test_an_output_dir_that_is_a_file_is_refused_as_such(data, tokenizer):
    afile = data["dir"] / "afile"
    afile.write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"afile is a file, not a folder"):  # was "is not writable: File exists"
        train(config(data, output_dir=str(afile)), model=make_model(), tokenizer=tokenizer)
    assert afile.read_text(encoding="utf-8") == "mine"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_is_refused_before_the_first_step(data, tokenizer):
    args = config(data)
    Path(args.output_dir).mkdir()
    os.chmod(args.output_dir, 0o500)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            train(args, model=make_model(), tokenizer=tokenizer)
    finally:
        os.chmod(args.output_dir, 0o700)


# ------------------------------------------------------------------ one line, a documented exit code
def test_ctrl_c_during_training_says_where_the_last_checkpoint_is(data, tokenizer, monkeypatch, capsys):
    from transformers import TrainerCallback

    import midalign.train.run as run_module
    from midalign.errors import TrainingInterrupted

    class CtrlC(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    build = run_module.build_trainer

    def build_with_ctrl_c(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.add_callback(CtrlC())
        return trainer

    monkeypatch.setattr(run_module, "build_trainer", build_with_ctrl_c)
    args = config(data, max_steps=4, save_strategy="steps", save_steps=1)
    with pytest.raises(TrainingInterrupted, match=r"interrupted at step 2; last checkpoint: .*checkpoint-1; continue"):
        train(args, model=make_model(), tokenizer=tokenizer)


def test_known_failures_are_one_line_with_their_exit_code(tmp_path, capsys, monkeypatch):
    from midalign.cli import main

    data = make_data(tmp_path)
    common = ["--task_data", data["task_data"], "--parallel_data", data["parallel_data"], "--report_to", "none"]

    def run(model, *extra):
        code = main(["train", "--model_name_or_path", str(model), *common, "--output_dir", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return code, err.strip().splitlines()[-1]

    code, line = run(tmp_path / "no" / "such" / "model")
    assert code == 2 and "no such model folder" in line
    code, line = run("./missing-model")
    assert code == 2 and line.endswith("./missing-model: no such model folder")

    corrupt = tmp_path / "corrupt"
    make_model().save_pretrained(corrupt)
    (corrupt / "config.json").write_text("{not json", encoding="utf-8")
    code, line = run(corrupt)
    assert code == 2 and "midalign train: error: cannot load the tokenizer of" in line

    from transformers import T5Config, T5ForConditionalGeneration

    t5 = tmp_path / "t5"
    T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        t5
    )
    from tests.conftest import make_tokenizer

    make_tokenizer().save_pretrained(t5)
    code, line = run(t5)
    assert code == 2 and "cannot load" in line and "as a causal LM" in line

    model_dir = tmp_path / "tiny"
    make_model().save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    code, line = run(model_dir, "--lora_target_modules", "c_attn", "c_proj")
    assert code == 2 and "lora_target_modules ['c_attn', 'c_proj'] name no linear layer" in line and "q_proj" in line

    import midalign.train.trainer as trainer_module

    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "o" / "adapter_model.safetensors"))

    monkeypatch.setattr(trainer_module.MidAlignTrainer, "save_model", disk_full)
    code, line = run(model_dir, "--max_steps", "1", "--output_dir", str(tmp_path / "full"))
    assert code == 3 and "midalign train: error: No space left on device: " in line  # after the progress bar

    monkeypatch.delenv("MIDALIGN_DEBUG", raising=False)
    code = main(["--debug", "train", "--model_name_or_path", str(tmp_path / "no" / "model"), *common])
    assert code == 2 and "Traceback" in capsys.readouterr().err
    assert "MIDALIGN_DEBUG" not in os.environ  # the flag ends with its call


def test_overwrite_output_dir_replaces_an_earlier_run_and_only_when_asked(data, tokenizer):
    first = config(data, max_steps=2, save_strategy="steps", save_steps=1)
    train(first, model=make_model(), tokenizer=tokenizer)
    assert (Path(first.output_dir) / "checkpoint-2").is_dir()
    with pytest.raises(ConfigError, match=r"already holds checkpoint-2; pass --resume .* --overwrite_output_dir"):
        train(config(data, max_steps=1), model=make_model(), tokenizer=tokenizer)
    again = train(config(data, max_steps=1, overwrite_output_dir=True), model=make_model(), tokenizer=tokenizer)
    assert again.state.global_step == 1
    assert not any(Path(first.output_dir).glob("checkpoint-*"))  # the earlier run's checkpoints are gone


def test_overwrite_output_dir_replaces_the_earlier_run_as_a_whole(data, tokenizer, monkeypatch):
    import midalign.train.trainer as trainer_module

    out = Path(config(data).output_dir)
    train(config(data, max_steps=1), model=make_model(), tokenizer=tokenizer)
    (out / "eval").mkdir()
    (out / "eval" / "scores.json").write_text("{}", encoding="utf-8")  # an evaluation of the earlier adapter
    before = {p.name for p in out.iterdir()}
    # A replacement refused on its input loses nothing of the earlier run.
    with pytest.raises(ConfigError, match="align_layer"):
        train(
            config(data, max_steps=1, overwrite_output_dir=True, align_layer="9"),
            model=make_model(),
            tokenizer=tokenizer,
        )
    assert {p.name for p in out.iterdir()} == before

    def crash(self, *args, **kwargs):
        raise RuntimeError("killed during training")

    monkeypatch.setattr(trainer_module.MidAlignTrainer, "train", crash)
    with pytest.raises(RuntimeError, match="killed during training"):
        train(config(data, max_steps=1, overwrite_output_dir=True), model=make_model(), tokenizer=tokenizer)
    # Once the new run starts, no file of the earlier one is left: no adapter that `evaluate` would load as
    # this run's, no log or record of it, no evaluation of its weights.
    assert [p.name for p in out.iterdir()] == [".midalign.lock"]


def test_resume_never_replaces_a_finished_run_with_another(data, tokenizer):
    """A finished run without checkpoints (save_strategy no) has nothing to resume: --resume may only train it
    again as recorded, never with other settings, and a plain rerun does not suggest --resume."""
    out = Path(config(data).output_dir)
    train(config(data, "align-only", output_dir=str(out), max_steps=1), model=make_model(), tokenizer=tokenizer)

    def run_files():
        return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".midalign.lock"}

    before = run_files()
    with pytest.raises(ConfigError) as refused:
        train(config(data, "baseline", output_dir=str(out), max_steps=1), model=make_model(), tokenizer=tokenizer)
    assert "no checkpoint to resume from" in str(refused.value) and "--resume" not in str(refused.value)
    changed = config(data, "baseline", output_dir=str(out), max_steps=1, resume=True)
    with pytest.raises(
        ConfigError, match=r"would change the run recorded in .*mode 'align-only' -> 'baseline'.*no checkpoint"
    ):
        train(changed, model=make_model(), tokenizer=tokenizer)
    assert run_files() == before
    same = config(data, "align-only", output_dir=str(out), max_steps=1, resume=True)
    assert train(same, model=make_model(), tokenizer=tokenizer).state.global_step == 1  # trained again, as recorded
