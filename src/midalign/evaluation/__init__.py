"""Per-language evaluation of the paper's three tasks: slot filling, translation, JSON generation.

Scorers are pure functions usable without a model; `evaluate` generates and scores in one call;
`language_table` / `write_report` turn per-language scores of several systems into tables and charts.

Example (the synthetic demo's call, with models already loaded):

    from midalign.evaluation import evaluate, language_table
    examples = [{"lang": "L0", "prompt": "wake me at nine <sep>", "utt": "wake me at nine", "gold": "time: nine"}]
    results = {name: evaluate(model, tokenizer, examples, "slot").scores for name, model in systems.items()}
    print(language_table(results, "slot_f1", supervised=["L0"]).to_markdown())
"""

from midalign.evaluation.generation import adapter_systems, generate
from midalign.evaluation.languages import CHAR_SPLIT_LANGS, MASSIVE_LOCALES, base_language, language_name
from midalign.evaluation.loaders import (
    MASSIVE_SYSTEM_PROMPT,
    load_examples,
    load_flores,
    load_massive,
    load_massive_hf,
    load_massive_jsonl,
    load_parallel_text,
    load_predictions,
    load_text_pairs,
    normalize_example,
    read_prediction_lines,
    translation_system_prompt,
)
from midalign.evaluation.runner import (
    DevSet,
    EvalResult,
    dev_set,
    evaluate,
    prediction_rows,
    score_by_language,
    write_report,
)
from midalign.evaluation.slots import (
    SlotFrame,
    format_slots,
    parse_annot_utt,
    parse_slot_output,
    score_slots,
)
from midalign.evaluation.structured import flatten_json, parse_json_output, schema_errors, score_json
from midalign.evaluation.tables import LanguageTable, language_table, plot_language_table
from midalign.evaluation.translation import COMET_MODEL, bleu_tokenizer, score_comet, score_translation

__all__ = [
    "CHAR_SPLIT_LANGS",
    "COMET_MODEL",
    "MASSIVE_LOCALES",
    "MASSIVE_SYSTEM_PROMPT",
    "DevSet",
    "EvalResult",
    "LanguageTable",
    "SlotFrame",
    "adapter_systems",
    "base_language",
    "bleu_tokenizer",
    "dev_set",
    "evaluate",
    "flatten_json",
    "format_slots",
    "generate",
    "language_name",
    "language_table",
    "load_examples",
    "load_flores",
    "load_massive",
    "load_massive_hf",
    "load_massive_jsonl",
    "load_parallel_text",
    "load_predictions",
    "load_text_pairs",
    "normalize_example",
    "parse_annot_utt",
    "parse_json_output",
    "parse_slot_output",
    "plot_language_table",
    "prediction_rows",
    "read_prediction_lines",
    "schema_errors",
    "score_by_language",
    "score_comet",
    "score_json",
    "score_slots",
    "score_translation",
    "translation_system_prompt",
    "write_report",
]
