"""Trainer callbacks: a progress bar that keeps the log lines in a file instead of printing them."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from midalign.progress import bar

LOG_FILE = "log.jsonl"
# What the bar shows after its estimate; everything logged goes to the file.
_BAR_KEYS = ("loss", "task_loss", "align_loss", "align_acc")


def _log_line(path: Path, state, logs: dict) -> None:
    row = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "total_flos"}}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


class LogFile(TrainerCallback):
    """Append every logged dictionary, with its step, to `output_dir/log.jsonl` (numbers stay numbers)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            path = Path(args.output_dir) / LOG_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            if state.global_step == 0:  # a new run starts a new file; a resumed one appends
                path.write_text("", encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            _log_line(Path(args.output_dir) / LOG_FILE, state, logs)


class LogFileProgress(ProgressCallback, LogFile):
    """transformers' progress bar (steps, rate, time left) with the latest losses beside it; the log lines go to
    `output_dir/log.jsonl` instead of being printed under the bar."""

    def on_train_begin(self, args, state, control, **kwargs):
        # transformers' own bar, made by `midalign.progress` (this process's row) and named after the run
        if state.is_world_process_zero:
            self.training_bar = bar(total=state.max_steps, dynamic_ncols=True, desc=Path(args.output_dir).name)
        self.current_step = 0
        LogFile.on_train_begin(self, args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        LogFile.on_log(self, args, state, control, logs=logs, **kwargs)
        if state.is_world_process_zero and self.training_bar is not None and logs:
            shown = {
                k: f"{logs[k]:.3g}" for k in _BAR_KEYS if isinstance(logs.get(k), float) and math.isfinite(logs[k])
            }
            if shown:
                self.training_bar.set_postfix(shown, refresh=False)


def use_log_file(trainer) -> None:
    """Swap the trainer's printing callbacks for the log-file ones (a bar unless `disable_tqdm`)."""
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(LogFileProgress)
    elif trainer.pop_callback(PrinterCallback) is not None:
        trainer.add_callback(LogFile)
    else:
        trainer.add_callback(LogFile)
