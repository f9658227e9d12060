"""`MidAlignConfig`: one dataclass extending TRL's `SFTConfig` (itself `TrainingArguments`).

It yields the Python API, the CLI flags (`midalign train --key value`) and the YAML file (`--config run.yaml`).
No `from __future__ import annotations` here: TRL's argument parser reads these annotations as real types.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Literal

from trl import SFTConfig

from midalign.errors import ConfigError
from midalign.layers import resolve_layer
from midalign.pooling import POOLINGS

MODES = ("baseline", "mid-align", "align-only")
# PEFT's name for every linear layer of the decoder blocks except the LM head: resolved per architecture, so
# fused projections (Phi-3's qkv_proj and gate_up_proj) are adapted as well as Llama's seven.
ALL_LINEAR = "all-linear"


# The paper's optimisation (Liu & Niehues 2025: lr 5e-4, inverse square-root decay, 3% warm-up): the defaults of
# `midalign train` and of configs/paper/*.yaml. `MidAlignConfig` itself keeps SFTConfig's defaults; in Python,
# `MidAlignConfig(**PAPER_RECIPE, ...)` asks for the paper's.
PAPER_RECIPE = {"learning_rate": 5e-4, "lr_scheduler_type": "inverse_sqrt", "warmup_steps": 0.03}


# Inherited options that `midalign train` does not take, with what to use instead: each would be ignored unseen.
NOT_TAKEN = {
    "resume_from_checkpoint": "use --resume, which continues from the newest checkpoint in output_dir",
    "do_predict": "predict and score with midalign evaluate",
}
# Inherited data-loader options that modes with alignment batches ignore: their loader is midalign's schedule
# (`MidAlignTrainer.get_train_dataloader`), not transformers' (`baseline` keeps transformers' and takes them).
SCHEDULE_IGNORES = (
    "train_sampling_strategy",
    "dataloader_drop_last",
    "dataloader_persistent_workers",
    "dataloader_prefetch_factor",
    "auto_find_batch_size",
)


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_type(annotation):
    """`(int or float, optional, is_list)` for a field annotated with a number type or `list[int]`, else None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:  # `int | str | None` and the like take text too
            return None
        found = _number_type(args[0])
        return found and (found[0], True, found[2])
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (int,):
        return int, False, True
    return (annotation, False, False) if annotation in (int, float) else None


def _as_number(value, kind):
    """`value` as a number of `kind`, or None when it is not one: a bool, a list, text, or a fraction for an int.
    (Python would take `True` as 1, and `int(8.7)` is 8: a YAML typo must not train another model unseen.)"""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if kind is int and isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


@dataclass
class MidAlignConfig(SFTConfig):
    """Training configuration. Defaults follow the paper where it states them (LoRA r 8, alpha 16, dropout 0.1
    on every projection; lr 5e-4 with inverse-sqrt decay and 3% warm-up; temperature 0.1; middle layer)."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "HF hub id or local model folder."})
    dtype: str = field(default="auto", metadata={"help": "Model dtype: auto, float32, bfloat16 or float16."})
    mode: Literal["baseline", "mid-align", "align-only"] = field(
        default="mid-align",
        metadata={"help": "baseline: task loss only; mid-align: task + alignment; align-only: alignment alone."},
    )
    task_data: str | None = field(
        default=None,
        metadata={
            "help": "Task data (prompt/completion, messages or MASSIVE rows): JSONL, parquet, CSV, a save_to_disk "
            "folder or a hub id owner/name[:config[:split]]."
        },
    )
    task_eval_data: str | None = field(default=None, metadata={"help": "Task data for evaluation, as task_data."})
    parallel_data: list[str] | None = field(
        default=None,
        metadata={
            "help": "Parallel data (one or more): JSONL, TSV, FLORES-style folders, or data sets as task_data "
            "(src/tgt, {lang: sentence}, translation dicts, FLORES+)."
        },
    )
    parallel_eval_data: list[str] | None = field(default=None, metadata={"help": "Held-out parallel data."})
    pivot_language: str = field(default="en", metadata={"help": "Pivot of multi-way data (the candidate side)."})

    align_layer: str = field(
        default="0.5",
        metadata={
            "help": "Block whose output is aligned: index (16), negative index (-8), fraction (0.5), or auto "
            "(the most aligned block of the base model on the parallel data, by translation retrieval)."
        },
    )
    align_temperature: float = field(default=0.1, metadata={"help": "Divides the cosine similarities."})
    align_weight: float = field(default=1.0, metadata={"help": "Weight of the mean alignment loss per step."})
    align_symmetric: bool = field(default=False, metadata={"help": "Also use tgt sentences as queries."})
    align_detach_tgt: bool = field(default=False, metadata={"help": "No gradient into the tgt (pivot) side."})
    align_pooling: Literal["mean", "last"] = field(default="mean", metadata={"help": "mean or last."})
    align_include_special_tokens: bool = field(
        default=False, metadata={"help": "Pool BOS/EOS too (the authors' code does for Llama 3)."}
    )
    align_schedule: Literal["alternate", "joint"] = field(
        default="alternate",
        metadata={"help": "alternate: task and alignment micro-batches take turns; joint: both in every one."},
    )
    task_per_align: int = field(default=1, metadata={"help": "alternate: task micro-batches per alignment one."})
    align_batch_size: int | None = field(
        default=None, metadata={"help": "Pairs per alignment micro-batch (default: per_device_train_batch_size)."}
    )
    align_language_sampling: Literal["uniform", "proportional"] = field(
        default="uniform", metadata={"help": "uniform over directions (as the paper resamples) or proportional."}
    )
    align_max_length: int = field(default=128, metadata={"help": "Tokens per parallel sentence (truncated)."})
    align_early_exit: bool = field(
        default=True,
        metadata={"help": "Run only blocks 1..align_layer (not under DeepSpeed ZeRO-3: see docs/scaling.md)."},
    )
    align_gather_negatives: bool = field(
        default=False,
        metadata={
            "help": "Under data parallelism, score each query against the pairs of every device (the global "
            "batch) instead of the local batch only (the paper)."
        },
    )

    task_columns: list[str] | None = field(
        default=None,
        metadata={"help": "Column names of task_data when they differ: prompt=question completion=answer."},
    )
    parallel_languages: list[str] | None = field(
        default=None,
        metadata={"help": "Align only these languages (with the pivot); default every language of parallel_data."},
    )

    finetuning: Literal["lora", "full"] = field(default="lora", metadata={"help": "lora or full fine-tuning."})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] = field(
        default_factory=lambda: [ALL_LINEAR],
        metadata={"help": "Module names that get LoRA, or all-linear (every linear layer of the blocks)."},
    )
    lora_layers: list[int] | None = field(default=None, metadata={"help": "Only these blocks get LoRA."})
    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the output of an earlier run in output_dir (its checkpoints too) instead of refusing to "
            "start; for scratch runs such as examples/train_tiny.yaml."
        },
    )
    truncate_task_rows: bool = field(
        default=False,
        metadata={
            "help": "Cut task rows longer than max_length (keeping truncation_mode's side) instead of refusing them; "
            "rows left without an answer token are dropped. Both counts are logged."
        },
    )

    # SFTConfig's own defaults stay (swapping SFTTrainer for MidAlignTrainer changes nothing the user did not ask
    # for); the paper's learning-rate recipe is `PAPER_RECIPE`, the defaults of `midalign train` and the files in
    # configs/paper/. Three inherited defaults are resolved for the machine, because SFTConfig's cannot hold on a
    # CPU: TRL turns bf16 and checkpointing on, bf16 then fails and checkpointing only slows down. `None` = on where
    # an accelerator supports it. `activation_checkpointing` is transformers' current name (`gradient_checkpointing`
    # is its deprecated alias, left unset so that no warning is printed).
    bf16: bool | None = None
    activation_checkpointing: bool | None = None
    gradient_checkpointing: bool | None = None
    # Pinned host memory only helps copies to an accelerator; `None` = pin when one is present (torch warns otherwise).
    dataloader_pin_memory: bool | None = None

    def lora_config(self, model=None):
        """The `peft.LoraConfig` these settings describe (`finetuning: lora`) for `model`.

        `all-linear` with `lora_layers` needs the model: PEFT takes no layer list with its `all-linear`, so it is
        spelled out as the linear layers of the chosen blocks (PEFT's `all-linear` leaves out only the output head,
        which lies in no block).
        """
        from peft import LoraConfig

        targets = list(self.lora_target_modules)
        if targets == [ALL_LINEAR] and self.lora_layers is not None and model is not None:
            from midalign.train.lora import block_linear_names

            targets = block_linear_names(model, self.lora_layers)
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=ALL_LINEAR if targets == [ALL_LINEAR] else targets,
            layers_to_transform=self.lora_layers,
            task_type="CAUSAL_LM",
        )

    def _check_types(self) -> None:
        """Refuse a value of the wrong type in a number field, naming the flag: the command line converts flags,
        but a YAML file or a Python caller can give `lora_r: [1, 2]`, `true` or `8.7` (a whole float is its int)."""
        # The annotations, not `Field.type`: transformers' argument parser rewrites `float | None` there to `float`.
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            found = _number_type(hints[f.name]) if f.init else None
            value = getattr(self, f.name)
            if found is None or (value is None and found[1]):
                continue
            kind, _, many = found
            numbers = [_as_number(v, kind) for v in value] if many and isinstance(value, list) else None
            if not many:
                numbers = [_as_number(value, kind)]
            if numbers is None or None in numbers:
                what = {(int, False): "an integer", (float, False): "a number"}.get((kind, many), "a list of integers")
                raise ConfigError(f"--{f.name} must be {what}, got {value!r}")
            setattr(self, f.name, numbers if many else numbers[0])

    def _check_not_taken(self) -> None:
        """Refuse inherited options that midalign would ignore or override, naming what to use instead."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, instead in NOT_TAKEN.items():
            if getattr(self, name) != defaults[name]:
                raise ConfigError(f"--{name} is not taken by midalign train; {instead}")
        if self.do_eval and str(self.eval_strategy) in ("no", "IntervalStrategy.NO"):
            # transformers' Trainer evaluates on eval_strategy alone; --do_eval by itself would evaluate nothing.
            raise ConfigError(
                "--do_eval alone evaluates nothing: set --eval_strategy steps or epoch, with --task_eval_data or "
                "--parallel_eval_data"
            )
        changed = [name for name in SCHEDULE_IGNORES if getattr(self, name) != defaults[name]]
        if changed and self.mode != "baseline":
            raise ConfigError(
                f"--{changed[0]} is not used in mode {self.mode}: its batches come from midalign's task/alignment "
                "schedule, not from transformers' data loader (mode baseline takes it)"
            )

    def _parse_json_options(self) -> None:
        """Dictionary options given as JSON text (the command line's form) are parsed here, naming the flag, as
        strictly as midalign reads JSON files (transformers parses them later, with an error that names nothing)."""
        from midalign.errors import DataError
        from midalign.files import loads_json

        for name in self._VALID_DICT_FIELDS:
            value = getattr(self, name, None)
            if isinstance(value, str) and value.lstrip().startswith("{"):
                try:
                    setattr(self, name, loads_json(value))
                except DataError as e:
                    where = f"field '{e.field}': " if e.field else ""
                    raise ConfigError(f"--{name} is not a valid JSON object: {where}{e.reason}") from None

    def _check_ranges(self) -> None:
        """Refuse settings that cannot be right, naming the flag, before anything is loaded."""
        positive = {
            "align_temperature": self.align_temperature,
            "learning_rate": self.learning_rate,
            "lora_alpha": self.lora_alpha,
        }
        at_least_one = {
            "task_per_align": self.task_per_align,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "per_device_eval_batch_size": self.per_device_eval_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "lora_r": self.lora_r,
            "align_max_length": self.align_max_length,
        }
        problems = [
            f"--{k} must be a finite number > 0, got {v}" for k, v in positive.items() if not _finite(v) or v <= 0
        ]
        problems += [f"--{k} must be >= 1, got {v}" for k, v in at_least_one.items() if v is None or v < 1]
        if self.align_batch_size is not None and self.align_batch_size < 1:
            problems.append(f"--align_batch_size must be >= 2 (or unset), got {self.align_batch_size}")
        if not _finite(self.align_weight) or self.align_weight < 0:
            problems.append(f"--align_weight must be a finite number >= 0, got {self.align_weight}")
        if not _finite(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            problems.append(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.max_length is not None and self.max_length < 1:
            problems.append(f"--max_length must be >= 1 (or None), got {self.max_length}")
        if (self.max_steps is None or self.max_steps <= 0) and (
            not _finite(self.num_train_epochs) or self.num_train_epochs <= 0
        ):
            problems.append(f"--num_train_epochs must be > 0 when --max_steps is not set, got {self.num_train_epochs}")
        if problems:
            raise ConfigError("; ".join(problems))

    def __post_init__(self):
        for name in ("parallel_data", "parallel_eval_data"):
            if isinstance(getattr(self, name), str):
                setattr(self, name, [getattr(self, name)])
        if isinstance(self.lora_target_modules, str):
            self.lora_target_modules = [self.lora_target_modules]
        self._check_types()
        if not self.lora_target_modules:
            raise ConfigError(f"--lora_target_modules names no module; give module names, or {ALL_LINEAR}")
        if ALL_LINEAR in self.lora_target_modules and len(self.lora_target_modules) > 1:
            raise ConfigError(f"lora_target_modules: {ALL_LINEAR} already names every linear layer; give it alone")
        if self.lora_layers is not None and (not self.lora_layers or min(self.lora_layers) < 0):
            # PEFT matches the numbers in module names: -1 names no block (and an empty list no block at all).
            raise ConfigError(
                f"--lora_layers takes block numbers counted from 0 (leave it unset for every block), got "
                f"{self.lora_layers}"
            )
        if self.mode not in MODES:
            raise ConfigError(f"mode {self.mode!r} is not one of {MODES}")
        self._check_not_taken()
        if self.resume and self.overwrite_output_dir:
            raise ConfigError(
                "--resume continues the run in output_dir and --overwrite_output_dir replaces it; give one of them"
            )
        if self.mode == "align-only" and self.align_weight == 0:
            # The alignment loss is the only loss of this mode: weight 0 saves an adapter that does nothing.
            raise ConfigError("--align_weight 0 in mode align-only trains nothing; give a weight > 0")
        self._parse_json_options()
        if self.align_pooling not in POOLINGS:
            raise ConfigError(f"align_pooling {self.align_pooling!r} is not one of {POOLINGS}")
        if str(self.align_layer) != "auto":
            resolve_layer(self.align_layer, 10**6)  # syntax check now; the range is checked against the model
        self.align_layer = str(self.align_layer)
        # task_data and parallel_data are checked where data is read: a trainer given datasets needs no paths.
        self._check_ranges()
        pairs_per_batch = self.align_batch_size or self.per_device_train_batch_size
        if self.mode != "baseline" and pairs_per_batch < 2:
            # One pair has no negative: its loss is log(1) = 0 whatever the model does, and it teaches nothing.
            raise ConfigError(
                f"alignment batches of {pairs_per_batch} pair have no negatives; set align_batch_size to 2 or more"
            )
        if self.mode != "baseline" and self.ddp_find_unused_parameters is None:
            # Alignment steps leave the blocks above align_layer without gradient; DDP must expect that.
            self.ddp_find_unused_parameters = True
        if self.load_best_model_at_end and self.metric_for_best_model is None:
            # Selection on the task loss unless told otherwise (the paper's eval loss mixed both objectives).
            self.metric_for_best_model = "align_loss" if self.mode == "align-only" else "loss"
        if self.dataloader_pin_memory is None:
            import torch

            accelerator = getattr(torch, "accelerator", None)
            self.dataloader_pin_memory = bool(accelerator.is_available()) if accelerator else torch.cuda.is_available()
        if self.bf16 is None:
            import torch

            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not self.fp16
        if self.activation_checkpointing is None and self.gradient_checkpointing is None:
            import torch

            self.activation_checkpointing = torch.cuda.is_available()  # SFTConfig's True, where it saves memory
        super().__post_init__()


def resolve_align_layer(config: MidAlignConfig, model, tokenizer=None, pairs=None) -> tuple[int, list[float] | None]:
    """The block index (`align_layer_index`) that `config.align_layer` names in `model`; the one place it is parsed.

    For `auto`, the base model's most aligned block on (up to 200 per direction of) the parallel pairs, with its
    per-layer margin-retrieval curve; otherwise the curve is None. The config keeps what the user wrote.

    Raises:
        ConfigError: a layer out of range, or `auto` without pairs.
        UnsupportedModelError: a model without a decoder block list.
    """
    import logging

    from midalign.layers import num_layers

    if config.align_layer != "auto":
        return resolve_layer(config.align_layer, num_layers(model)), None
    if not pairs:
        raise ConfigError("align_layer auto needs parallel_data")
    from midalign.analysis import recommend_layer_for_pairs

    layer, curve = recommend_layer_for_pairs(
        model,
        tokenizer,
        pairs,
        max_length=config.align_max_length,
        pooling=config.align_pooling,
        include_special_tokens=config.align_include_special_tokens,
    )
    curve_text = " ".join(f"{v:.2f}" for v in curve)
    logging.getLogger(__name__).info("midalign: align_layer auto -> %d (margin retrieval: %s)", layer, curve_text)
    return layer, curve
