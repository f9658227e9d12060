"""`MidAlignTrainer`: TRL's `SFTTrainer` with alignment micro-batches mixed into the training stream.

Everything else (PEFT wrapping, chat templates, completion-only loss, DeepSpeed/FSDP/DDP, checkpoints, callbacks,
progress bars) is inherited. The trainer is extended at the data loader, `compute_loss`, `evaluate` and
`save_model`.

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
import os
import shutil
from pathlib import Path

import torch
from datasets import Dataset
from peft import PeftModel
from torch.utils.data import DataLoader
from transformers import TrainerCallback
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
from midalign.data.readers import Pair, completion_only
from midalign.errors import ConfigError, MidalignError
from midalign.io import write_json_atomic
from midalign.layers import num_layers, resolve_layer, unwrap_model
from midalign.modeling import quiet_peft_wrap
from midalign.objective import contrastive_loss, pair_embeddings
from midalign.train.callbacks import use_log_file
from midalign.train.checkpoints import last_checkpoint
from midalign.train.config import MidAlignConfig
from midalign.train.lora import check_lora_targets, trained_parameters, warn_unmatched_lora_targets

CONFIG_FILE = "midalign_config.json"
logger = logging.getLogger(__name__)


class NonFiniteLossError(MidalignError, FloatingPointError):
    """A loss or gradient became NaN or infinite; training stopped before the update reached the weights."""


class _NonFiniteGradientGuard(TrainerCallback):
    """Stops before an optimizer step whose gradients are not finite (bf16 / fp32 only).

    With fp16 the loss scaler already skips such steps and lowers the scale: that is its documented behaviour,
    so the guard stays out of its way. Under DeepSpeed the gradients live in the engine's partitions, and the
    engine checks them itself.
    """

    def __init__(self, trainer: MidAlignTrainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if args.fp16 or self.trainer.is_deepspeed_enabled:
            return
        grads = [p.grad for p in self.trainer.model.parameters() if p.grad is not None]
        if not grads:
            return
        # One sum on the device per step (NaN or inf in any gradient makes it non-finite), one sync in the check.
        total = torch.stack([(g.to_local() if hasattr(g, "to_local") else g).float().sum() for g in grads]).sum()
        self.trainer.stop_if_non_finite(total, "gradient")


def _completion_only(dataset):
    """Task rows in `messages` form as conversational prompt-completion rows (see `completion_only`)."""
    if isinstance(dataset, dict):
        return {name: _completion_only(d) for name, d in dataset.items()}
    if isinstance(dataset, Dataset) and "messages" in dataset.column_names:
        return dataset.map(completion_only, remove_columns=["messages"], desc="Answer-only loss for chat rows")
    return dataset


def _has_answer_token(row: dict, completion_only_loss: bool) -> bool:
    if "labels" in row:
        return any(label != -100 for label in row["labels"])
    masks = [row[c] for c in ("completion_mask", "assistant_masks") if c in row and completion_only_loss]
    return any(all(bits) for bits in zip(*masks, strict=True)) if masks else bool(row["input_ids"])


def check_row_lengths(dataset: Dataset, args: MidAlignConfig, name: str) -> Dataset:
    """Refuse tokenized task rows longer than `max_length`, or cut them when `truncate_task_rows` asks to.

    Nothing vanishes unannounced: a cut row loses the end (or the start, with `truncation_mode: keep_end`) of its
    tokens, and a row left without an answer token is dropped; both are counted in the log.
    """
    lengths = [len(ids) for ids in dataset["input_ids"]]
    over = [i for i, n in enumerate(lengths) if n > args.max_length]
    if not over:
        return dataset
    where = "task_eval_data" if name.startswith("eval") else "task_data"
    if not args.truncate_task_rows:
        raise ConfigError(
            f"{where}: {len(over)} of {len(lengths)} rows are longer than max_length {args.max_length} tokens "
            f"(the longest, row {max(over, key=lengths.__getitem__) + 1}, has {max(lengths)}); training would cut "
            f"their answers or drop them. Raise --max_length to {max(lengths)} or pass --truncate_task_rows"
        )
    cut = slice(None, args.max_length) if args.truncation_mode == "keep_start" else slice(-args.max_length, None)
    per_token = [c for c in ("input_ids", "labels", "completion_mask", "assistant_masks") if c in dataset.column_names]
    dataset = dataset.map(lambda row: {c: row[c][cut] for c in per_token}, desc=f"Cutting {name} rows")
    kept = dataset.filter(lambda row: _has_answer_token(row, args.completion_only_loss is not False))
    logger.warning(
        "midalign: %s: cut %d of %d rows to max_length %d; dropped %d left without an answer token",
        where,
        len(over),
        len(lengths),
        args.max_length,
        len(dataset) - len(kept),
    )
    if len(kept) == 0:
        raise ConfigError(f"{where}: no row keeps an answer token within max_length {args.max_length}")
    return kept


class MidAlignTrainer(SFTTrainer):
    """SFT trainer that alternates (or combines) the task loss with the middle-layer alignment loss.

    Args:
        model: a causal LM (or hub id); wrapped with LoRA when `peft_config` is given.
        args: `MidAlignConfig`.
        train_dataset: task examples (`prompt`/`completion` or `messages`); unused in `align-only` mode.
        eval_dataset: task examples for `eval_loss`.
        align_dataset: parallel pairs for the alignment loss (`mid-align`, `align-only`).
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
        align_dataset: list[Pair] | None = None,
        align_eval_dataset: list[Pair] | None = None,
        **kwargs,
    ):
        if args.mode != "baseline" and not align_dataset:
            raise ConfigError(f"mode {args.mode} needs parallel pairs (align_dataset)")
        peft_config = kwargs.pop("peft_config", None)
        if args.finetuning == "full" and peft_config is not None:
            raise ConfigError("finetuning is 'full' but a peft_config was given; set finetuning: lora or drop it")
        if args.finetuning == "lora" and peft_config is None and not isinstance(model, PeftModel):
            peft_config = args.lora_config()  # what the config says, not every parameter of the model
        if peft_config is not None and isinstance(model, torch.nn.Module):
            check_lora_targets(model, peft_config.target_modules)
        if not args.assistant_only_loss:
            # The paper's loss is on the answer only; TRL would train a `messages` row's prompt too.
            train_dataset, eval_dataset = _completion_only(train_dataset), _completion_only(eval_dataset)
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
        self.align_layer = resolve_layer(args.align_layer, num_layers(self.model))
        if args.mode != "baseline" and self.align_layer == 0 and args.finetuning == "lora":
            raise ConfigError(
                "align_layer 0 is the embedding output, below every LoRA adapter: the alignment loss would have "
                "no trainable parameter. Choose a block >= 1 or finetuning: full"
            )
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
        self.align_layer_curve: list[float] | None = None  # set by build_trainer for `align_layer: auto`
        self.add_callback(_NonFiniteGradientGuard(self))
        use_log_file(self)
        # DeepSpeed ZeRO-3 gathers each module's parameters with hooks, prefetching in the order it traced in the
        # first steps; a forward that skips the top blocks on alignment steps breaks that order every other step.
        # There the alignment forward runs every block and the keep-alive gives the blocks above the alignment
        # layer a zero gradient (an alignment step then costs as much as a task step). DDP and FSDP keep early
        # exit: tests/test_distributed.py checks their gradients against one process.
        self.align_early_exit = args.align_early_exit and not self._is_zero3()
        if args.align_early_exit and not self.align_early_exit:
            logger.info("DeepSpeed ZeRO-3: alignment steps run every block (early exit is off)")

    def _is_zero3(self) -> bool:
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None) if self.is_deepspeed_enabled else None
        return plugin is not None and plugin.zero_stage == 3

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
            task_batch_size=self._train_batch_size,
            align_batch_size=self.args.align_batch_size or self._train_batch_size,
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
            self.stop_if_non_finite(task.detach(), "task loss")
            self._record_task_loss(task.detach())
            loss = loss + task
        if is_align_batch(inputs):
            align, acc = self.alignment_step(model, inputs)
            self.stop_if_non_finite(align.detach(), "alignment loss")
            self._record("align_loss", align.detach())
            self._record("align_acc", acc)
            loss = loss + self.args.align_weight * align / max(self._window["align"], 1)
        return loss

    def stop_if_non_finite(self, value: torch.Tensor, what: str) -> None:
        """Raise `NonFiniteLossError` on every rank when `value` is NaN or infinite on any rank.

        Called before the backward pass (losses) or the optimizer step (gradients), so the bad value never
        reaches the weights; the last checkpoint on disk stays the last good state. The check is collective, so
        no rank is left waiting in a gradient reduction for one that stopped.
        """
        finite = self.accelerator.gather(torch.isfinite(value.detach().float()).reshape(1).to(self.args.device))
        if bool(finite.all()):
            return
        checkpoint = last_checkpoint(self.args.output_dir)
        fp16 = self.args.fp16 or unwrap_model(self.model).dtype == torch.float16
        hint = "for fp16 overflow: train in bf16 or fp32" if fp16 else "the learning rate and the data"
        raise NonFiniteLossError(
            f"non-finite {what} at step {self.state.global_step + 1}; training stopped before the update. "
            f"Last good checkpoint: {checkpoint or 'none saved yet'}. Check {hint}; continue with --resume."
        )

    def alignment_step(self, model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment loss and in-batch retrieval accuracy of one batch of pairs (loss carries the DDP keep-alive)."""
        src, tgt, keepalive = pair_embeddings(
            model,
            inputs["src_input_ids"],
            inputs["src_attention_mask"],
            inputs["tgt_input_ids"],
            inputs["tgt_attention_mask"],
            layer=self.align_layer,
            pooling=self.args.align_pooling,
            src_pool_mask=inputs["src_pool_mask"],
            tgt_pool_mask=inputs["tgt_pool_mask"],
            early_exit=self.align_early_exit,
        )
        loss, accuracy = contrastive_loss(
            src,
            tgt,
            temperature=self.args.align_temperature,
            symmetric=self.args.align_symmetric,
            detach_tgt=self.args.align_detach_tgt,
            # Training batches differ per rank; evaluation runs the same held-out batches on every rank, where
            # gathering would put copies of each positive among the candidates.
            gather_negatives=self.args.align_gather_negatives and model.training,
        )
        return loss + keepalive, accuracy

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
            batch = self._prepare_inputs(self.align_collator(rows))
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
        staging = out / ".saving"  # the same name on every rank: the engines save collectively
        if self.args.should_save and staging.exists():
            shutil.rmtree(staging)
        super().save_model(str(staging), _internal_call)
        if self.args.should_save:
            for entry in sorted(staging.iterdir()):
                target = out / entry.name
                if entry.is_dir() and target.is_dir():
                    shutil.rmtree(target)
                os.replace(entry, target)
            staging.rmdir()
            self._write_config(out)

    def resolved_settings(self) -> dict:
        """Every setting as it ran (the layer index, the adapter that was built), as `midalign_config.json` holds."""
        resolved = {k: v for k, v in self.args.to_dict().items() if not k.startswith("_")}
        resolved.update(trained_parameters(self.model))  # what ran, whatever the settings said
        resolved["align_layer_index"] = self.align_layer
        resolved["num_layers"] = num_layers(self.model)
        if self.align_layer_curve is not None:
            resolved["align_layer_auto_margin_retrieval"] = self.align_layer_curve
        return json.loads(json.dumps(resolved, default=str))

    def _write_config(self, out: Path) -> None:
        write_json_atomic(out / CONFIG_FILE, self.resolved_settings())
