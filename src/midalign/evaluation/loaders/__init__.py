"""Evaluation data: MASSIVE (JSONL on disk or the HF dataset), WMT/FLORES plain text, generic JSONL.

Every loader returns a list of example dictionaries, the one shape the rest of the package uses:

- all tasks: `lang` (the table row: a locale such as `de-DE`, or a direction such as `de-en`),
  `prompt` (the user message), `gold`, optionally `system_prompt` and `id`;
- `slot`: `gold` is `[intent | ]type: value; ...` or `None`; `utt`, the utterance the values are
  matched onto, defaults to `prompt`;
- `mt`: `gold` is the reference; `tgt_lang` (picks the BLEU tokenizer), `src_lang` and `source`
  (needed by COMET);
- `json`: `gold` is a JSON object or array (a string holding one is parsed).

Held-out data in the training format is read too: `completion` stands for `gold`, and
`messages` ([system,] user, assistant) give `system_prompt`, `prompt` and `gold`.

Bad input raises `DataError` naming the file, the 1-based line and the field.

One module per format: `examples` (the shape above, JSONL and the training formats), `massive`,
`plain_text` (one sentence per line: WMT, FLORES) and `predictions` (files to re-score).
"""

from midalign.evaluation.loaders.examples import TASKS, load_examples, normalize_example, read_jsonl
from midalign.evaluation.loaders.massive import (
    MASSIVE_INTENT_SYSTEM_PROMPT,
    MASSIVE_SYSTEM_PROMPT,
    load_massive,
    load_massive_hf,
    load_massive_jsonl,
)
from midalign.evaluation.loaders.plain_text import (
    load_flores,
    load_parallel_text,
    load_text_pairs,
    parse_pairs,
    translation_system_prompt,
)
from midalign.evaluation.loaders.predictions import load_predictions, read_prediction_lines

__all__ = [
    "MASSIVE_INTENT_SYSTEM_PROMPT",
    "MASSIVE_SYSTEM_PROMPT",
    "TASKS",
    "load_examples",
    "load_flores",
    "load_massive",
    "load_massive_hf",
    "load_massive_jsonl",
    "load_parallel_text",
    "load_predictions",
    "load_text_pairs",
    "normalize_example",
    "parse_pairs",
    "read_jsonl",
    "read_prediction_lines",
    "translation_system_prompt",
]
