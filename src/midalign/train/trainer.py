"""`MidAlignTrainer`: TRL's `SFTTrainer` with alignment micro-batches mixed into the training stream.

Everything else (PEFT wrapping, chat templates, completion-only loss, DeepSpeed/FSDP/DDP, checkpoints, callbacks,
progress bars) is inherited. Each override, and why it exists:

- `__init__`: builds the LoRA the config names, turns chat rows into answer-only rows, tokenizes the pairs and
  resolves the alignment layer once (`resolve_align_layer`);
- `_prepare_dataset` (TRL): tokenizes task rows whole, so rows over `max_length` are refused or counted
  (`task_data.check_row_lengths`) instead of being cut and dropped silently;
- `get_train_dataloader`: the schedule that interleaves task and alignment micro-batches;
- `get_batch_samples`, `_get_num_items_in_batch` (transformers): count each kind of micro-batch in an
  accumulation window, and take the task-token count from task micro-batches only (the loss weighting below);
- `compute_loss`: the objective is a property of the batch: task, alignment, or both;
- `evaluate`: adds the held-out alignment loss and retrieval accuracy next to the task's `eval_loss`;
- `save_model`: records the settings that ran (`midalign_config.json`); the final save goes through a staging
  folder (`checkpoints.save_through_staging`).

What is not training lives elsewhere, by name: the non-finite guard (`guards.py`), the progress bar that keeps
its log lines in a file (`callbacks.py`), task-row preparation (`task_data.py`), LoRA targets (`lora.py`).
TRL's `_metrics` dictionary receives the separate `task_loss`, `align_loss` and `align_acc` logs.

Loss weighting is explicit (the class sets `loss_is_scaled_for_ga`, so `Trainer` does not rescale). Within one
optimizer step (a window of gradient-accumulation micro-batches) holding task and alignment micro-batches:

    step loss = (sum of task-token CE over the window / task tokens in the window)
                + align_weight * (mean over the window's alignment micro-batches of the alignment loss)

The task part is `Trainer`'s own token normalisation, counted over task micro-batches only. The released code
divided every micro-batch by the accumulation steps, which gives the same 1:1 balance at half the scale.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from torch.utils.data import DataLoader
from trl import SFTTrainer

from midalign.data.batching import (
    ALIGN_PREFIXES,
    AlignmentCollator,
    MixedCollator,
    MixedDataset,
    ScheduleBatchSampler,
    is_align_batch,
    is_task_batch,
    tokenize_pairs,
)
from midalign.data.readers import as_pairs
from midalign.errors import ConfigError
from midalign.files import write_json_atomic
from midalign.layers import num_layers
from midalign.modeling import quiet_peft_wrap
from midalign.objective import AlignmentObjective
from midalign.train.callbacks import use_log_file
from midalign.train.checkpoints import save_through_staging
from midalign.train.config import MidAlignConfig, resolve_align_layer
from midalign.train.guards import NonFiniteGradientGuard, stop_if_non_finite
from midalign.train.lora import (
    check_alignment_trains,
    check_lora_layers,
    check_lora_targets,
    trained_parameters,
    warn_unmatched_lora_targets,
)
from midalign.train.task_data import answer_only, check_row_lengths, task_dataset

CONFIG_FILE = "midalign_config.json"
logger = logging.getLogger(__name__)


def check_eval_data(args: MidAlignConfig, has_eval: bool) -> None:
    """Refuse evaluation during training without held-out data (task rows or pairs), before anything loads."""
    if args.eval_strategy != "no" and not has_eval:
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        raise ConfigError(f"--eval_strategy {strategy} needs held-out data: --task_eval_data or --parallel_eval_data")


class MidAlignTrainer(SFTTrainer):
    """SFT trainer that alternates (or combines) the task loss with the middle-layer alignment loss.

    Args:
        model: a causal LM (or hub id); wrapped with LoRA when `peft_config` is given.
        args: `MidAlignConfig`.
        train_dataset: task examples as `SFTTrainer` takes them (`prompt`/`completion` or `messages`), MASSIVE rows,
            or any source `midalign.data.read_task_examples` reads; unused in `align-only` mode.
        eval_dataset: task examples for `eval_loss`.
        align_dataset: parallel pairs for the alignment loss (`mid-align`, `align-only`): a `datasets.Dataset` or
            a list of rows in any parallel schema `midalign.data.read_parallel` reads (src/tgt/src_lang/tgt_lang,
            `{lang: sentence}`, `translation` dicts, FLORES+), a list of `Pair`s, or paths and hub ids.
        align_eval_dataset: held-out pairs for `eval_align_loss` and `eval_align_acc`.
    """

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model,
        args: MidAlignConfig,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        *,
        align_dataset=None,
        align_eval_dataset=None,
        align_layer_index: int | None = None,
        align_layer_curve: list[float] | None = None,
        **kwargs,
    ):
        if args.mode != "baseline" and align_dataset is None:
            raise ConfigError(f"mode {args.mode} needs parallel pairs (align_dataset)")
        if args.mode != "align-only" and train_dataset is None:
            raise ConfigError(f"mode {args.mode} needs task examples (train_dataset)")
        check_eval_data(args, eval_dataset is not None or align_eval_dataset is not None)
        self._evaluates_pairs = align_eval_dataset is not None  # read by `_validate_args`, called by Trainer's init
        read = dict(pivot=args.pivot_language, languages=args.parallel_languages)
        align_dataset = as_pairs(align_dataset, **read) if args.mode != "baseline" else None
        align_eval_dataset = as_pairs(align_eval_dataset, **read) if align_eval_dataset is not None else None
        train_dataset = task_dataset(train_dataset, args.task_columns) if args.mode != "align-only" else None
        eval_dataset = task_dataset(eval_dataset, args.task_columns)
        peft_config = kwargs.pop("peft_config", None)
        if args.finetuning == "full" and peft_config is not None:
            raise ConfigError("finetuning is 'full' but a peft_config was given; set finetuning: lora or drop it")
        if args.finetuning == "lora" and peft_config is None and not isinstance(model, PeftModel):
            # what the config says, not every parameter of the model
            peft_config = args.lora_config(model if isinstance(model, torch.nn.Module) else None)
        if peft_config is not None and isinstance(model, torch.nn.Module):
            check_lora_targets(model, peft_config.target_modules)
            check_lora_layers(model, peft_config.layers_to_transform)
        if not args.assistant_only_loss:
            # The paper's loss is on the answer only; TRL would train a `messages` row's prompt too.
            train_dataset, eval_dataset = answer_only(train_dataset), answer_only(eval_dataset)
        if args.mode == "align-only":
            # SFTTrainer inspects a task dataset while it is built. Align-only training has none, so it gets a
            # one-row placeholder that the batch sampler never draws from (n_task = 0).
            train_dataset = Dataset.from_list([{"prompt": "", "completion": align_dataset[0].tgt}])
        with quiet_peft_wrap():
            super().__init__(
                model=model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                peft_config=peft_config,
                **kwargs,
            )
        if args.finetuning == "lora":
            warn_unmatched_lora_targets(self.model, args.lora_target_modules, args.lora_layers)
        if align_layer_index is None:  # built directly, not through build_trainer
            tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
            align_layer_index, align_layer_curve = resolve_align_layer(args, self.model, tokenizer, align_dataset)
        self.align_layer_index = align_layer_index
        self.align_layer_curve = align_layer_curve  # the base model's retrieval per layer, for `auto`
        if args.mode != "baseline":
            check_alignment_trains(self.model, self.align_layer_index)
        tokenizer = getattr(self.processing_class, "tokenizer", self.processing_class)
        kw = dict(max_length=args.align_max_length, include_special_tokens=args.align_include_special_tokens)
        self.align_rows = tokenize_pairs(align_dataset, tokenizer, **kw) if args.mode != "baseline" else []
        self.align_eval_rows = tokenize_pairs(align_eval_dataset, tokenizer, **kw) if align_eval_dataset else []
        pairs_per_batch = args.align_batch_size or args.per_device_train_batch_size
        if args.mode != "baseline" and len(self.align_rows) < pairs_per_batch:
            raise ConfigError(
                f"parallel_data holds {len(self.align_rows)} pairs, fewer than align_batch_size {pairs_per_batch}: "
                "every batch would repeat pairs, and a repeated pair is its own negative. Add pairs or lower "
                "--align_batch_size"
            )
        self.align_collator = AlignmentCollator(tokenizer.pad_token_id)
        self._window = {"task": 0, "align": 0}  # micro-batches of each kind in the current optimizer step
        self._task_window_loss, self._task_window_seen = 0.0, 0
        self.add_callback(NonFiniteGradientGuard(self))
        use_log_file(self)
        # DeepSpeed ZeRO-3 gathers each module's parameters with hooks, prefetching in the order it traced in the
        # first steps; a forward that skips the top blocks on alignment steps breaks that order every other step.
        # There the alignment forward runs every block and the keep-alive gives the blocks above the alignment
        # layer a zero gradient (every block runs, but still no LM-head product). DDP and FSDP keep early
        # exit: tests/test_distributed.py checks their gradients against one process.
        early_exit = args.align_early_exit and not self._is_zero3()
        if args.align_early_exit and not early_exit:
            logger.info("DeepSpeed ZeRO-3: alignment steps run every block (early exit is off)")
        self.objective = AlignmentObjective.from_config(args, self.align_layer_index, early_exit=early_exit)

    def _is_zero3(self) -> bool:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        return plugin is not None and plugin.zero_stage == 3

    def _validate_args(self):
        # Trainer asks for a task eval set whenever evaluation is on; held-out pairs alone are enough here (`evaluate`).
        if self.eval_dataset is not None or not self._evaluates_pairs:
            return super()._validate_args()
        strategy, self.args.eval_strategy = self.args.eval_strategy, "no"
        try:
            return super()._validate_args()
        finally:
            self.args.eval_strategy = strategy

    # ------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, processing_class, args, packing, formatting_func, dataset_name):
        # Overridden because TRL cuts rows at max_length and silently drops those left without an answer token:
        # here rows are tokenized whole, then refused (or cut, when asked) with their count.
        if packing or args.max_length is None or not isinstance(dataset, Dataset) or args.mode == "align-only":
            return super()._prepare_dataset(dataset, processing_class, args, packing, formatting_func, dataset_name)
        whole = copy.copy(args)
        whole.max_length = None
        dataset = super()._prepare_dataset(dataset, processing_class, whole, packing, formatting_func, dataset_name)
        return check_row_lengths(dataset, args, dataset_name)

    def get_train_dataloader(self) -> DataLoader:
        if self.args.mode == "baseline":
            return super().get_train_dataloader()
        task = None
        if self.args.mode == "mid-align":
            task = self._remove_unused_columns(self.train_dataset, description="training")
        sampler = ScheduleBatchSampler(
            len(task) if task is not None else 0,
            [r["direction"] for r in self.align_rows],
            task_batch_size=self.args.train_batch_size,
            align_batch_size=self.args.align_batch_size or self.args.train_batch_size,
            schedule=self.args.align_schedule,
            task_per_align=self.args.task_per_align,
            language_sampling=self.args.align_language_sampling,
            num_replicas=self.accelerator.num_processes,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
        )
        loader = DataLoader(
            MixedDataset(task, self.align_rows),
            batch_sampler=sampler,
            collate_fn=MixedCollator(self.data_collator, self.align_collator),
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.args.dataloader_pin_memory and torch.cuda.is_available(),
        )
        return self.accelerator.prepare(loader)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._window = {
            "task": sum(is_task_batch(b) for b in batch_samples),
            "align": sum(is_align_batch(b) for b in batch_samples),
        }
        self._task_window_loss, self._task_window_seen = 0.0, 0
        return batch_samples, num_items

    def _get_num_items_in_batch(self, batch_samples, device):
        # Token counts for the task loss come from task micro-batches only; alignment batches carry no labels.
        task = [b for b in batch_samples if is_task_batch(b)]
        return super()._get_num_items_in_batch(task, device) if task else None

    # ------------------------------------------------------------------ losses
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self.model.training:  # evaluation batches are task batches: SFTTrainer's own loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = torch.zeros((), device=self.args.device)
        if is_task_batch(inputs):
            task_inputs = {k: v for k, v in inputs.items() if not k.startswith(ALIGN_PREFIXES)}
            task = super().compute_loss(model, task_inputs, num_items_in_batch=num_items_in_batch)
            if num_items_in_batch is None:  # the model does not take loss kwargs: mean of micro-batch means
                task = task / max(self._window["task"], 1)
            stop_if_non_finite(self, task.detach(), "task loss")
            self._record_task_loss(task.detach())
            loss = loss + task
        if is_align_batch(inputs):
            align, acc = self.alignment_step(model, inputs)
            stop_if_non_finite(self, align.detach(), "alignment loss")
            self._record("align_loss", align.detach())
            self._record("align_acc", acc)
            loss = loss + self.args.align_weight * align / max(self._window["align"], 1)
        return loss

    def alignment_step(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment loss (with the DDP keep-alive) and in-batch retrieval accuracy of one batch of pairs."""
        return self.objective(model, inputs, evaluating=not model.training)

    def _gathered_mean(self, value: torch.Tensor) -> float:
        return self.accelerator.gather(value.detach().float().reshape(1)).mean().item()

    def _record(self, key: str, value: torch.Tensor) -> None:
        self._metrics["train"][key].append(self._gathered_mean(value))

    def _record_task_loss(self, scaled: torch.Tensor) -> None:
        # Each task micro-batch returns its share of the window's token-mean; the shares add up to the mean.
        self._task_window_loss = self._task_window_loss + scaled
        self._task_window_seen += 1
        if self._task_window_seen == self._window["task"]:
            self._record("task_loss", self._task_window_loss)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate_alignment(self, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Alignment loss and retrieval accuracy on the held-out pairs, in fixed batches."""
        model = self.model
        was_training = model.training
        model.eval()
        bs = self.args.align_batch_size or self.args.per_device_eval_batch_size
        losses, accs = [], []
        for start in range(0, len(self.align_eval_rows), bs):
            rows = self.align_eval_rows[start : start + bs]
            if len(rows) < 2:  # one pair has no negatives: its loss is 0 by construction
                continue
            batch = {k: v.to(self.args.device) for k, v in self.align_collator(rows).items()}
            with self.compute_loss_context_manager():
                loss, acc = self.alignment_step(model, batch)
            losses.append(loss.item())
            accs.append(acc.item())
        model.train(was_training)
        if not losses:
            return {}
        return {
            f"{metric_key_prefix}_align_loss": sum(losses) / len(losses),
            f"{metric_key_prefix}_align_acc": sum(accs) / len(accs),
        }

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        align_metrics = self.evaluate_alignment(metric_key_prefix) if self.align_eval_rows else {}
        if eval_dataset is None and self.eval_dataset is None:
            metrics = dict(align_metrics)
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # task: eval_loss
        if align_metrics:
            self.log(align_metrics)
            metrics.update(align_metrics)
        return metrics

    # ------------------------------------------------------------------ saving
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Save weights, tokenizer and `midalign_config.json` (the resolved settings, written last).

        Checkpoints are written in place: `Trainer` writes `trainer_state.json` last, and resuming passes over a
        checkpoint without one. The final save goes to a temporary folder whose files are then renamed into
        `output_dir`, so an interrupted save never leaves weights that look finished.
        """
        out = Path(output_dir or self.args.output_dir)
        if _internal_call:
            super().save_model(str(out), _internal_call)
            if self.args.should_save:
                self._write_config(out)
            return
        save_through_staging(
            out, lambda folder: super(MidAlignTrainer, self).save_model(str(folder)), self.args.should_save
        )
        if self.args.should_save:
            self._write_config(out)

    def resolved_settings(self) -> dict:
        """Every setting as it ran (the layer index, the adapter that was built), as `midalign_config.json` holds."""
        resolved = {k: v for k, v in self.args.to_dict().items() if not k.startswith("_")}
        resolved.update(trained_parameters(self.model))  # what ran, whatever the settings said
        resolved["align_layer_index"] = self.align_layer_index
        resolved["num_layers"] = num_layers(self.model)
        if self.align_layer_curve is not None:
            resolved["align_layer_auto_margin_retrieval"] = self.align_layer_curve
        return json.loads(json.dumps(resolved, default=str))

    def _write_config(self, out: Path) -> None:
        write_json_atomic(out / CONFIG_FILE, self.resolved_settings())
