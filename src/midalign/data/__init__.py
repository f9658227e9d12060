"""Task examples, parallel pairs and multi-way sets: readers, tokenization and batching."""

from midalign.data.readers import Pair, iter_jsonl, read_multiway, read_parallel, read_task_examples

__all__ = ["Pair", "iter_jsonl", "read_multiway", "read_parallel", "read_task_examples"]
