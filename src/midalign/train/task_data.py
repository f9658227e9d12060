"""Task rows as the paper trains them: the loss on the answer only, and no row cut or dropped unannounced."""

from __future__ import annotations

import logging

from datasets import Dataset

from midalign.data.readers import completion_only
from midalign.errors import ConfigError

logger = logging.getLogger(__name__)


def task_dataset(data, columns=None):
    """Task data as `SFTTrainer` takes it. A `Dataset` (or a dict of them, or an iterable one) passes through as TRL
    would read it, unless it has MASSIVE's columns or `columns` renames them: then, like a list of rows, a path or
    a hub id, it is read and checked by `read_task_examples` (MASSIVE rows become chat rows)."""
    from datasets import IterableDataset

    from midalign.data.readers import read_task_examples
    from midalign.data.sources import parse_columns

    columns = parse_columns(columns, "task_columns")
    if data is None or isinstance(data, dict | IterableDataset):
        return data
    if isinstance(data, Dataset) and not columns and "annot_utt" not in data.column_names:
        return data
    return Dataset.from_list(read_task_examples(data, columns=columns))


def answer_only(dataset):
    """Task rows in `messages` form as conversational prompt-completion rows (see `completion_only`)."""
    if isinstance(dataset, dict):
        return {name: answer_only(d) for name, d in dataset.items()}
    if isinstance(dataset, Dataset) and "messages" in dataset.column_names:
        return dataset.map(completion_only, remove_columns=["messages"], desc="Answer-only loss for chat rows")
    return dataset


def _has_answer_token(row: dict, completion_only_loss: bool) -> bool:
    if "labels" in row:
        return any(label != -100 for label in row["labels"])
    masks = [row[c] for c in ("completion_mask", "assistant_masks") if c in row and completion_only_loss]
    return any(all(bits) for bits in zip(*masks, strict=True)) if masks else bool(row["input_ids"])


def check_row_lengths(dataset: Dataset, args, name: str) -> Dataset:
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
