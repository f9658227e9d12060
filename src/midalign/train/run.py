"""Build a `MidAlignTrainer` from a `MidAlignConfig`: load and validate everything before training starts."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from datasets import Dataset

from midalign.data.readers import read_parallel, read_task_examples
from midalign.data.sources import parse_columns
from midalign.errors import ConfigError, TrainingInterrupted
from midalign.files import LOCK_FILE, folder_lock, read_json_file
from midalign.layers import num_layers
from midalign.modeling import check_tokenizer_fits, load_model, load_tokenizer
from midalign.train.checkpoints import checkpoints, last_checkpoint, step
from midalign.train.config import MidAlignConfig, resolve_align_layer
from midalign.train.trainer import CONFIG_FILE, MidAlignTrainer, check_eval_data

logger = logging.getLogger(__name__)


def _task_dataset(rows: list[dict] | None, path: str | None, tokenizer) -> Dataset | None:
    if rows is None:
        return None
    chat = "messages" in rows[0] or isinstance(rows[0].get("prompt"), list)
    if chat and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"{path}: chat messages need a tokenizer with a chat template; this one has none")
    return Dataset.from_list(rows)


def _pairs(sources: list[str] | None, config: MidAlignConfig):
    if not sources:
        return []
    return read_parallel(sources, pivot=config.pivot_language, languages=config.parallel_languages)


def build_trainer(config: MidAlignConfig, *, model=None, tokenizer=None) -> MidAlignTrainer:
    """Load the model, tokenizer and data named in `config` (or use the given ones) and build the trainer.

    All input is read and validated here, so bad data, an unsupported model or a layer out of range fail
    before the first step.
    """
    # Data first: it is cheap to read, and a malformed line should not wait for an 8B model to load.
    if config.mode in ("baseline", "mid-align") and not config.task_data:
        raise ConfigError(f"mode {config.mode} needs task_data")
    if config.mode in ("mid-align", "align-only") and not config.parallel_data:
        raise ConfigError(f"mode {config.mode} needs parallel_data")
    task_eval = config.task_eval_data if config.mode != "align-only" else None
    check_eval_data(config, bool(task_eval or config.parallel_eval_data))
    columns = parse_columns(config.task_columns, "--task_columns")
    task_rows = eval_rows = None
    if config.mode != "align-only":
        task_rows = read_task_examples(config.task_data, columns=columns)
        if task_eval:
            eval_rows = read_task_examples(task_eval, columns=columns)
    pairs = _pairs(config.parallel_data, config) if config.mode != "baseline" else None
    eval_pairs = _pairs(config.parallel_eval_data, config) or None
    if model is None or tokenizer is None:
        if not config.model_name_or_path:
            raise ConfigError("model_name_or_path is required")
        tokenizer = tokenizer or load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
        model = model or load_model(
            config.model_name_or_path,
            dtype=config.dtype,
            trust_remote_code=config.trust_remote_code,
            init_kwargs=config.model_init_kwargs,
        )
    check_tokenizer_fits(model, tokenizer, str(config.model_name_or_path or "the model"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    layer, curve = resolve_align_layer(config, model, tokenizer, pairs)  # raises for unsupported models, bad layers
    train = _task_dataset(task_rows, config.task_data, tokenizer)
    evals = _task_dataset(eval_rows, config.task_eval_data, tokenizer)
    logger.info("midalign: mode=%s align_layer=%d of %d", config.mode, layer, num_layers(model))
    trainer = MidAlignTrainer(
        model,
        args=config,
        train_dataset=train,
        eval_dataset=evals,
        processing_class=tokenizer,
        align_dataset=pairs,
        align_eval_dataset=eval_pairs,
        align_layer_index=layer,
        align_layer_curve=curve,
    )
    return trainer


def _set_aside_incomplete(output_dir: Path, resume_from: str | None) -> None:
    """Rename checkpoints newer than the one resumed from, so the resumed run never writes into or rotates them."""
    newest = step(resume_from) if resume_from else -1
    for path in checkpoints(output_dir):
        if step(path) > newest:
            aside, n = path.with_name(f"{path.name}.incomplete"), 1
            while aside.exists():  # an earlier crash left one already
                aside, n = path.with_name(f"{path.name}.incomplete{n}"), n + 1
            logger.warning("midalign: %s was interrupted while saving; moved to %s", path, aside.name)
            path.rename(aside)


# Settings that change what a run computes: a resumed run must use the ones its checkpoints were made with.
# (Logging, saving, evaluation cadence and the output folder may change.)
RUN_SETTINGS = (
    "model_name_or_path",
    "model_init_kwargs",
    "dtype",
    "mode",
    "task_data",
    "task_columns",
    "parallel_data",
    "parallel_languages",
    "pivot_language",
    "align_layer_index",
    "align_temperature",
    "align_weight",
    "align_symmetric",
    "align_detach_tgt",
    "align_pooling",
    "align_include_special_tokens",
    "align_schedule",
    "task_per_align",
    "align_batch_size",
    "align_language_sampling",
    "align_max_length",
    "align_gather_negatives",
    "finetuning",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "lora_layers",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "weight_decay",
    "optim",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "max_length",
    "truncate_task_rows",
    "completion_only_loss",
    "assistant_only_loss",
    "seed",
    "data_seed",
    "bf16",
    "fp16",
)


def check_resume_settings(current: dict, recorded_file: Path, *, checkpoint: bool = True) -> None:
    """Refuse to resume with settings that differ from those the checkpoint (or, without one, the finished run in
    the folder: `checkpoint=False`) was trained with."""
    if not recorded_file.is_file():  # a checkpoint written before midalign recorded its settings there
        logger.warning("midalign: %s is missing; the resumed settings cannot be checked", recorded_file)
        return
    recorded = read_json_file(recorded_file)
    changed = [k for k in RUN_SETTINGS if k in recorded and current.get(k) != recorded[k]]
    if changed:
        listed = ", ".join(f"{k} {recorded[k]!r} -> {current.get(k)!r}" for k in changed)
        advice = (
            "Resume with the recorded settings, or start a new output_dir"
            if checkpoint
            else "It has no checkpoint to resume from: pass --overwrite_output_dir to replace it, or choose a new "
            "output_dir"
        )
        raise ConfigError(f"--resume would change the run recorded in {recorded_file}: {listed}. {advice}")


def _remove_earlier_run(output_dir: Path) -> None:
    """Remove everything in `output_dir` but the lock: the earlier run is replaced as a whole, so no file of it
    (an adapter that `evaluate` would load, a log, an evaluation of the old weights) outlives its record."""
    for entry in output_dir.iterdir():
        if entry.name == LOCK_FILE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def train(config: MidAlignConfig, *, model=None, tokenizer=None) -> MidAlignTrainer:
    """Train as configured and save the adapter (or full model), the tokenizer and the resolved config.

    A folder that already holds checkpoints or a finished run is continued only with `config.resume` (from its
    newest complete checkpoint; a finished run without one is trained again, and only with the settings it
    recorded), or replaced with
    `config.overwrite_output_dir` (everything in it is removed once the new run's model and data have loaded);
    otherwise the run is refused, so old and new results never mix. A checkpoint whose save was interrupted is
    renamed `checkpoint-N.incomplete`. The folder is locked for the run and checked writable before anything loads.
    """
    output_dir = Path(config.output_dir)
    # One process per run takes the lock (under torchrun every rank calls train(); rank 0 speaks for the run).
    main_process = int(os.environ.get("RANK", "0")) == 0
    with folder_lock(output_dir, "training run") if main_process else contextlib.nullcontext():
        checkpoint = last_checkpoint(output_dir)
        finished = (output_dir / CONFIG_FILE).is_file()
        started = bool(checkpoints(output_dir)) or finished
        replace = started and config.overwrite_output_dir  # MidAlignConfig refuses it together with resume
        if started and not config.resume and not replace:
            hint = "pass --resume to continue that run, " if checkpoint else ""
            what = (
                Path(checkpoint).name if checkpoint else "the output of an earlier run (no checkpoint to resume from)"
            )
            raise ConfigError(
                f"{config.output_dir} already holds {what}; {hint}"
                "pass --overwrite_output_dir to replace it, or choose a new output_dir"
            )
        trainer = build_trainer(config, model=model, tokenizer=tokenizer)
        if replace:
            checkpoint = None
            if main_process:  # the other ranks see the same folder
                logger.warning("midalign: replacing the earlier run in %s (--overwrite_output_dir)", output_dir)
                _remove_earlier_run(output_dir)
        if config.resume and checkpoint is not None:
            check_resume_settings(trainer.resolved_settings(), Path(checkpoint) / CONFIG_FILE)
        elif config.resume and finished:
            # Nothing to continue: the run can only be trained again from step 0, and only as it was recorded (the
            # demo reruns a stage killed between its save and its own log so); other settings would replace it.
            check_resume_settings(trainer.resolved_settings(), output_dir / CONFIG_FILE, checkpoint=False)
            logger.warning("midalign: %s has no checkpoint; training the recorded run again from step 0", output_dir)
        elif config.resume:
            logger.warning("midalign: --resume given but %s has no checkpoint; starting from scratch", output_dir)
        if config.resume and trainer.args.should_save:
            _set_aside_incomplete(output_dir, checkpoint)
        try:
            trainer.train(resume_from_checkpoint=checkpoint if config.resume else None)
        except KeyboardInterrupt:
            saved = last_checkpoint(output_dir)
            raise TrainingInterrupted(
                f"training interrupted at step {trainer.state.global_step}; "
                + (f"last checkpoint: {saved}; continue with --resume" if saved else "no checkpoint was saved yet")
            ) from None
        trainer.save_model(config.output_dir)
    return trainer
