"""Tokenized pairs, their collator, and the batch sampler that interleaves task and alignment batches.

The objective is a property of the batch: an alignment batch carries `src_input_ids`/`tgt_input_ids`, a
task batch carries `input_ids`/`labels`, a joint batch carries both. The trainer reads the keys.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch.utils.data import Dataset, Sampler

from midalign.data.readers import Pair
from midalign.errors import ConfigError, DataError

Schedule = Literal["alternate", "joint"]
LanguageSampling = Literal["uniform", "proportional"]
ALIGN_PREFIXES = ("src_", "tgt_")
logger = logging.getLogger(__name__)


def is_align_batch(batch: dict) -> bool:
    return "src_input_ids" in batch


def is_task_batch(batch: dict) -> bool:
    return "input_ids" in batch


def tokenize_sentence(text: str, tokenizer, *, max_length: int = 128, include_special_tokens: bool = False):
    """`(input_ids, pool_mask)` of one raw sentence (no chat template), special tokens as the tokenizer adds them.

    By default special tokens (BOS) are left out of the pooling mask: in a causal model the BOS state is the
    same vector for every sentence and only dilutes the mean. The authors' code keeps them for Llama 3
    (`include_special_tokens=True`). Returns an all-zero mask for a sentence with no ordinary token.
    """
    enc = tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True)
    special = enc["special_tokens_mask"]
    pool = [1] * len(special) if include_special_tokens else [1 - s for s in special]
    return enc["input_ids"], pool


def tokenize_pairs(
    pairs: Sequence[Pair], tokenizer, *, max_length: int = 128, include_special_tokens: bool = False
) -> list[dict]:
    """Tokenize both sides of every pair with `tokenize_sentence`; `*_pool_mask` marks the tokens to average."""
    rows = []
    for pair in pairs:
        row = {"direction": f"{pair.src_lang}-{pair.tgt_lang}"}
        for side, text in (("src", pair.src), ("tgt", pair.tgt)):
            ids, pool = tokenize_sentence(
                text, tokenizer, max_length=max_length, include_special_tokens=include_special_tokens
            )
            if not any(pool):
                whole = tokenize_sentence(text, tokenizer, max_length=None, include_special_tokens=False)[1]
                if any(whole):  # the limit cut every ordinary token: the setting is at fault, not the data
                    raise ConfigError(
                        f"--align_max_length {max_length} leaves no token of the {side} sentence of "
                        f"{pair.origin or 'a pair'} once the tokenizer's special tokens are counted; raise it"
                    )
                raise DataError("sentence is empty after tokenization", path=pair.origin or None, field=side)
            row[f"{side}_input_ids"] = ids
            row[f"{side}_pool_mask"] = pool
        rows.append(row)
    _report_cut_sentences(pairs, rows, tokenizer, max_length)
    return rows


def _report_cut_sentences(pairs: Sequence[Pair], rows: list[dict], tokenizer, max_length: int) -> None:
    """Log how many sentences `max_length` cut: a cut sentence no longer says what its translation says."""
    lengths = [
        len(tokenizer(getattr(pair, side))["input_ids"])
        for pair, row in zip(pairs, rows, strict=True)
        for side in ("src", "tgt")
        if len(row[f"{side}_input_ids"]) >= max_length  # only a sentence at the limit can have been cut
    ]
    cut = [n for n in lengths if n > max_length]
    if cut:
        logger.warning(
            "midalign: %d of %d parallel sentences are longer than align_max_length %d tokens and were cut "
            "(the longest has %d); raise --align_max_length to keep them whole",
            len(cut),
            2 * len(rows),
            max_length,
            max(cut),
        )


def pad_batch(rows: Sequence[Sequence[int]], value: int, *, side: Literal["right", "left"] = "right") -> torch.Tensor:
    """The rows as one `[B, T]` tensor, each padded with `value` up to the longest (`T`).

    Training and analysis pad on the right (pooling reads a mask, never positions); generation pads on the left,
    so that every prompt ends at the same column and new tokens start at `T`.
    """
    length = max(len(row) for row in rows)
    if side == "left":
        return torch.tensor([[value] * (length - len(row)) + list(row) for row in rows])
    return torch.tensor([list(row) + [value] * (length - len(row)) for row in rows])


class AlignmentCollator:
    """Pad tokenized pairs on the right into `src_*`/`tgt_*` tensors (`input_ids`, `attention_mask`, `pool_mask`)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        out = {}
        for side in ("src", "tgt"):
            ids = [r[f"{side}_input_ids"] for r in rows]
            out[f"{side}_input_ids"] = pad_batch(ids, self.pad_token_id)
            out[f"{side}_attention_mask"] = pad_batch([[1] * len(x) for x in ids], 0)
            out[f"{side}_pool_mask"] = pad_batch([r[f"{side}_pool_mask"] for r in rows], 0)
        return out


class MixedDataset(Dataset):
    """Task rows at indices `[0, n_task)`, tokenized pairs at `[n_task, n_task + n_pairs)`."""

    def __init__(self, task_rows: Sequence[dict] | None, pair_rows: Sequence[dict]):
        self.task_rows = task_rows if task_rows is not None else []
        self.pair_rows = pair_rows

    def __len__(self) -> int:
        return len(self.task_rows) + len(self.pair_rows)

    def __getitem__(self, index: int) -> dict:
        n = len(self.task_rows)
        return dict(self.task_rows[index]) if index < n else {"_pair": self.pair_rows[index - n]}


class MixedCollator:
    """Collate a list of mixed rows: task rows with the task collator, pairs with `AlignmentCollator`."""

    def __init__(self, task_collator, align_collator: AlignmentCollator):
        self.task_collator = task_collator
        self.align_collator = align_collator

    def __call__(self, rows: Sequence[dict]) -> dict:
        pairs = [r["_pair"] for r in rows if "_pair" in r]
        task = [r for r in rows if "_pair" not in r]
        batch = {}
        if task:
            batch.update(self.task_collator(task))
        if pairs:
            batch.update(self.align_collator(pairs))
        return batch


class ScheduleBatchSampler(Sampler[list[int]]):
    """Batches of a `MixedDataset` in the order the training schedule asks for.

    - `alternate`: `task_per_align` task batches, then one alignment batch, and so on (1 = the paper's
      flip on every micro-batch). Every task row is used once per epoch (the released code skipped half of
      them, hence its doubled epochs); the alignment stream is drawn as needed.
    - `joint`: every micro-batch holds a task batch and an alignment batch (loss = task + weight * align).
    - no task rows (align-only): one pass's worth of alignment batches per epoch.

    Under data parallelism each kind is emitted in groups of `num_replicas` batches, so the round-robin
    sharding of `accelerate` gives every rank the same sequence of kinds (and the same number of batches).
    The order is a pure function of `(seed, epoch)`, so skipping the first batches on resume reproduces it.
    """

    def __init__(
        self,
        n_task: int,
        pair_directions: Sequence[str],
        *,
        task_batch_size: int,
        align_batch_size: int,
        schedule: Schedule = "alternate",
        task_per_align: int = 1,
        language_sampling: LanguageSampling = "uniform",
        num_replicas: int = 1,
        seed: int = 0,
    ):
        if task_per_align < 1:
            raise ValueError("task_per_align must be >= 1")
        self.n_task, self.task_bs, self.align_bs = n_task, task_batch_size, align_batch_size
        self.schedule, self.task_per_align = schedule, task_per_align
        self.language_sampling, self.num_replicas, self.seed = language_sampling, num_replicas, seed
        self.epoch = 0
        self.groups: dict[str, list[int]] = {}
        for i, direction in enumerate(pair_directions):
            self.groups.setdefault(direction, []).append(n_task + i)
        if not self.groups:
            raise ValueError("no parallel pairs to sample alignment batches from")
        if len(pair_directions) < align_batch_size:
            raise ValueError(
                f"{len(pair_directions)} parallel pairs cannot fill an alignment batch of {align_batch_size}"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _task_slots(self) -> int:
        """Number of task batch groups (of `num_replicas` batches) in an epoch."""
        return math.ceil(self.n_task / (self.task_bs * self.num_replicas)) if self.n_task else 0

    def _align_slots(self) -> int:
        if self.n_task == 0:
            n_pairs = sum(len(g) for g in self.groups.values())
            return math.ceil(n_pairs / (self.align_bs * self.num_replicas))
        if self.schedule == "joint":
            return self._task_slots()
        return math.ceil(self._task_slots() / self.task_per_align)

    def __len__(self) -> int:
        slots = self._task_slots() + (0 if self.schedule == "joint" and self.n_task else self._align_slots())
        return slots * self.num_replicas

    def _align_stream(self, g: torch.Generator) -> Iterator[int]:
        """Endless pair indices: uniform over directions, or proportional (plain reshuffled passes)."""
        if self.language_sampling == "proportional":
            everything = [i for idx in self.groups.values() for i in idx]
            while True:
                yield from (everything[j] for j in torch.randperm(len(everything), generator=g).tolist())
        names = sorted(self.groups)
        orders = {d: iter(()) for d in names}
        while True:
            d = names[int(torch.randint(len(names), (1,), generator=g))]
            nxt = next(orders[d], None)
            if nxt is None:
                perm = torch.randperm(len(self.groups[d]), generator=g).tolist()
                orders[d] = iter([self.groups[d][j] for j in perm])
                nxt = next(orders[d])
            yield nxt

    def __iter__(self) -> Iterator[list[int]]:
        g_task = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        g_align = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch + 7_919)
        stream = self._align_stream(g_align)
        order = torch.randperm(self.n_task, generator=g_task).tolist()
        group = self.task_bs * self.num_replicas
        if order and len(order) % group:  # pad the last group by wrapping around, like DistributedSampler
            order += (order * math.ceil(group / len(order)))[: group - len(order) % group]
        task_groups = [order[i : i + group] for i in range(0, len(order), group)]

        def align_batch() -> list[int]:
            # No pair twice in one batch: a repeat is its own false negative, and a set smaller than the batch
            # would train a constant loss of ln(repeats) (the trainer refuses such a set).
            batch: list[int] = []
            while len(batch) < self.align_bs:
                index = next(stream)
                if index not in batch:
                    batch.append(index)
            return batch

        def align_group() -> list[list[int]]:
            return [align_batch() for _ in range(self.num_replicas)]

        def split(indices: list[int]) -> list[list[int]]:
            return [indices[r * self.task_bs : (r + 1) * self.task_bs] for r in range(self.num_replicas)]

        if not task_groups:
            for _ in range(self._align_slots()):
                yield from align_group()
            return
        for k, indices in enumerate(task_groups):
            if self.schedule == "joint":
                yield from (t + a for t, a in zip(split(indices), align_group(), strict=True))
                continue
            yield from split(indices)
            if (k + 1) % self.task_per_align == 0 or k == len(task_groups) - 1:
                yield from align_group()
