"""Generate, score per language, and write predictions, scores, tables and charts."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midalign.errors import ConfigError, DataError
from midalign.evaluation.generation import generate
from midalign.evaluation.loaders import TASKS, normalize_example
from midalign.evaluation.slots import score_slots
from midalign.evaluation.structured import score_json
from midalign.evaluation.tables import (
    LanguageTable,
    language_groups,
    language_table,
    plot_language_table,
    tables_to_csv,
)
from midalign.evaluation.translation import score_translation
from midalign.files import (
    check_name,
    check_output_folder,
    read_json_file,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)

# The metrics tabulated per task, when present (intent accuracy only with intents, COMET only when asked...).
TABLE_METRICS = {
    "slot": ("slot_f1", "slot_type_f1", "exact_match", "intent_acc"),
    "mt": ("bleu", "chrf", "comet"),
    "json": ("field_f1", "parse_rate", "schema_valid"),
}


@dataclass
class EvalResult:
    """What `evaluate` returns.

    Attributes:
        examples: the examples, in canonical shape (see `midalign.evaluation.loaders`).
        predictions: one generated output per example, in the same order.
        scores: language -> metric -> value, languages in order of first appearance.
    """

    examples: list[dict[str, Any]]
    predictions: list[str]
    scores: dict[str, dict[str, Any]]

    def rows(self, system: str) -> list[dict[str, Any]]:
        """Predictions-file rows: each example plus `system` and `prediction` (re-scorable)."""
        return prediction_rows(self.examples, self.predictions, system)


def prediction_rows(examples: Sequence[Mapping], predictions: Sequence[str], system: str) -> list[dict[str, Any]]:
    """Each example plus `system` and `prediction`, the format `load_predictions` reads back."""
    return [{**example, "system": system, "prediction": p} for example, p in zip(examples, predictions, strict=True)]


def check_score_options(task: str, char_langs, schema, comet: bool) -> None:
    """Refuse an unknown task or an option given to a task it does not apply to (`ConfigError`)."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {TASKS}")
    options = {
        "char_langs": (char_langs is not None, "slot"),
        "schema": (schema is not None, "json"),
        "comet": (comet, "mt"),
    }
    for name, (given, owner) in options.items():
        if given and task != owner:
            raise ConfigError(f"option {name} applies to the {owner!r} task, not {task!r}")


def score_by_language(
    task: str,
    examples: Sequence[Mapping[str, Any]],
    predictions: Sequence[str],
    *,
    char_langs: Collection[str] | None = None,
    schema: Mapping[str, Any] | None = None,
    comet: bool = False,
) -> dict[str, dict[str, Any]]:
    """Score predictions per language (`example["lang"]`), languages in order of first appearance.

    Args:
        task: `slot`, `mt` or `json`.
        examples: examples (checked with `normalize_example`).
        predictions: one output per example.
        char_langs: `slot` only: base languages split into characters (default: ja, zh).
        schema: `json` only: the JSON schema outputs should satisfy.
        comet: `mt` only: add COMET.

    Returns:
        language -> the task scorer's dictionary (`score_slots`, `score_translation`, `score_json`).

    Raises:
        DataError: the counts differ.
        ConfigError: an unknown task, or an option given to a task it does not apply to.
    """
    check_score_options(task, char_langs, schema, comet)
    if len(examples) != len(predictions):
        raise DataError(f"{len(predictions)} predictions but {len(examples)} examples")
    examples = [normalize_example(e, task, path=f"example #{i}") for i, e in enumerate(examples)]
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(examples):
        groups.setdefault(example["lang"], []).append(i)
    scores = {}
    for lang, idx in groups.items():
        preds = [predictions[i] for i in idx]
        golds = [examples[i]["gold"] for i in idx]
        if task == "slot":
            extra = {"char_langs": char_langs} if char_langs is not None else {}
            utterances = [examples[i]["utt"] for i in idx]
            scores[lang] = score_slots(preds, golds, utterances, lang=lang, **extra)
        elif task == "mt":
            tgt_langs = {examples[i]["tgt_lang"] for i in idx}
            if len(tgt_langs) != 1:
                raise DataError(f"language {lang!r} mixes target languages {sorted(tgt_langs)}")
            sources = [examples[i].get("source") for i in idx] if comet else None
            if comet and None in sources:
                raise DataError(f"COMET needs a 'source' in every example of {lang!r}")
            scores[lang] = score_translation(preds, golds, tgt_lang=tgt_langs.pop(), sources=sources, comet=comet)
        else:
            scores[lang] = score_json(preds, golds, schema=schema)
    return scores


def evaluate(
    model,
    tokenizer,
    examples: Sequence[Mapping[str, Any]],
    task: str,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    chat_template: bool | None = None,
    progress: bool = True,
    desc: str = "generate",
    char_langs: Collection[str] | None = None,
    schema: Mapping[str, Any] | None = None,
    comet: bool = False,
) -> EvalResult:
    """Generate greedily for every example and score per language.

    Args:
        model: a loaded causal LM, possibly a `PeftModel` with the adapter to evaluate active.
        tokenizer: its tokenizer.
        examples: dictionaries with at least `lang`, `prompt` and `gold` (plus `utt` for slot
            filling when the prompt is not the bare utterance, `tgt_lang` for translation; see
            `midalign.evaluation.loaders`). Checked first, so bad data fails before generating.
        task: `slot`, `mt` or `json`.
        batch_size, max_new_tokens, chat_template, progress, desc: see `generate`.
        char_langs, schema, comet: see `score_by_language`.

    Returns:
        An `EvalResult` with the predictions and the per-language scores.

    Example:
        >>> result = evaluate(model, tokenizer, [{"lang": "en", "prompt": "wake me at nine",
        ...                                       "gold": "time: nine"}], "slot")  # doctest: +SKIP
        >>> result.scores["en"]["slot_f1"]  # doctest: +SKIP
    """
    check_score_options(task, char_langs, schema, comet)
    examples = [normalize_example(e, task, path=f"example #{i}") for i, e in enumerate(examples)]
    predictions = generate(
        model,
        tokenizer,
        [e["prompt"] for e in examples],
        system_prompts=[e.get("system_prompt") for e in examples],
        chat_template=chat_template,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        progress=progress,
        desc=desc,
    )
    scores = score_by_language(task, examples, predictions, char_langs=char_langs, schema=schema, comet=comet)
    return EvalResult(examples, predictions, scores)


@dataclass(frozen=True)
class DevSet:
    """Checked dev examples and how systems are compared on them; made by `dev_set`.

    Attributes:
        task: `slot`, `mt` or `json`.
        examples: the examples, in canonical shape.
        metric: the metric the table compares.
        supervised, transfer: language groups, see `language_table`.
    """

    task: str
    examples: list[dict[str, Any]]
    metric: str
    supervised: tuple[str, ...]
    transfer: tuple[str, ...] | None

    def score(self, model, tokenizer, label: str, **generation) -> dict[str, dict[str, Any]]:
        """Generate with `model` and score per language; `generation` as in `evaluate` (`desc` is `label`)."""
        return evaluate(model, tokenizer, self.examples, self.task, desc=label, **generation).scores

    def table(self, scores: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> LanguageTable:
        """The per-language table of `self.metric` for `label -> language -> metric -> value` scores."""
        return language_table(scores, self.metric, supervised=self.supervised, transfer=self.transfer)


def dev_set(
    examples: Sequence[Mapping[str, Any]],
    task: str,
    *,
    metric: str | None = None,
    supervised: Sequence[str] = (),
    transfer: Sequence[str] | None = None,
    name: str = "dev set",
) -> DevSet:
    """Check dev data and comparison settings before any model loads, e.g. for `midalign.merging`'s weight sweep.

    Args:
        examples: examples for `task` (see `normalize_example`).
        task: `slot`, `mt` or `json`.
        metric: one of `TABLE_METRICS[task]` (default: its first: `slot_f1`, `bleu`, `field_f1`).
        supervised, transfer: language groups, see `language_table`.
        name: what the errors call the data (`sweep`: "sweep metric ...", "sweep example #3").

    Raises:
        ConfigError: an unknown task or metric, no examples, or language groups the data does not have.
        DataError: a malformed example.
    """
    check_score_options(task, None, None, False)
    metric = metric or TABLE_METRICS[task][0]
    if metric not in TABLE_METRICS[task]:
        raise ConfigError(f"{name} metric {metric!r}: choose one of {list(TABLE_METRICS[task])}")
    checked = [normalize_example(e, task, path=f"{name} example #{i}") for i, e in enumerate(examples)]
    if not checked:
        raise ConfigError(f"the {name} has no examples")
    language_groups(list(dict.fromkeys(e["lang"] for e in checked)), supervised, transfer)
    return DevSet(task, checked, metric, tuple(supervised), None if transfer is None else tuple(transfer))


def check_system_name(name: str) -> str:
    """System names become file names: letters, digits, `.`, `_`, `-`.

    Raises:
        ConfigError: any other character.
    """
    return check_name(name, "system name")


PREDICTIONS_FILE = "predictions-{}.jsonl"


def earlier_systems(out_dir: str | os.PathLike) -> set[str]:
    """The systems of an evaluation already in `out_dir`: its predictions files' and its `scores.json`'s."""
    out = Path(out_dir)
    prefix, suffix = PREDICTIONS_FILE.split("{}")
    names = {p.name[len(prefix) : -len(suffix)] for p in out.glob(PREDICTIONS_FILE.format("*"))}
    if (out / "scores.json").is_file():
        try:
            report = read_json_file(out / "scores.json")
        except DataError:
            report = None  # not one midalign wrote; it is replaced like the rest
        if isinstance(report, dict) and isinstance(report.get("systems"), dict):
            names |= set(report["systems"])
    return names


def check_report_dir(out_dir: str | os.PathLike, systems: Collection[str], what: str = "--output_dir") -> Path:
    """Refuse, before any generation, an output folder that is a file or holds an evaluation of other systems.

    An evaluation's files would otherwise sit beside this one's and read as one evaluation (a predictions file of a
    system the new `scores.json` lacks). The same systems again (a rerun, or one that resumes an interrupted run)
    are replaced file by file.

    Raises:
        ConfigError: naming the folder, and the earlier systems that this evaluation does not have.
    """
    out = check_output_folder(out_dir, what)
    others = sorted(earlier_systems(out) - set(systems))
    if others:
        raise ConfigError(
            f"{what} {out} holds an earlier evaluation of other systems ({', '.join(others)}); choose another "
            "folder, or remove that one first"
        )
    return out


def write_report(
    out_dir: str | os.PathLike,
    task: str,
    scores: Mapping[str, Mapping[str, Mapping[str, Any]]],
    *,
    predictions: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    supervised: Sequence[str] = (),
    transfer: Sequence[str] | None = None,
    chart: bool = True,
) -> dict[str, Path]:
    """Write predictions, scores, per-language tables and bar charts for several systems.

    Files in `out_dir`: `predictions-<system>.jsonl` (when given), `scores.json` (everything,
    including BLEU signatures), `scores.csv` (long format: system, language, metric, value),
    `tables.md` and `tables.csv` (one table per metric of `TABLE_METRICS[task]` that the scores
    have), and `chart-<metric>.png` per table (when `chart`). All are written atomically.

    Args:
        out_dir: output folder (created).
        task: `slot`, `mt` or `json`.
        scores: system -> language -> metric -> value.
        predictions: system -> predictions-file rows (see `prediction_rows`).
        supervised, transfer: language groups, see `language_table`.
        chart: also draw the PNG charts.

    Returns:
        A name -> path map of the files written.

    An earlier evaluation in `out_dir` must be of the same systems (`check_report_dir`); its charts of metrics
    this one lacks are removed, so that the folder holds one evaluation.

    Raises:
        ConfigError: a bad system name, bad language groups (see `language_table`), or an earlier evaluation of
            other systems in `out_dir`.
    """
    out = check_report_dir(out_dir, [check_system_name(system) for system in scores], "output folder")
    written: dict[str, Path] = {}
    for system, rows in (predictions or {}).items():
        written[f"predictions-{system}"] = write_jsonl_atomic(
            out / PREDICTIONS_FILE.format(check_system_name(system)), rows
        )
    first = next(iter(scores.values()))
    metrics = [m for m in TABLE_METRICS[task] if all(m in by_lang for by_lang in first.values())]
    tables = {m: language_table(scores, m, supervised=supervised, transfer=transfer) for m in metrics}
    written["scores.json"] = write_json_atomic(
        out / "scores.json",
        {
            "task": task,
            "systems": {s: dict(by_lang) for s, by_lang in scores.items()},
            "tables": {m: t.to_dict() for m, t in tables.items()},
        },
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["system", "language", "metric", "value"])
    for system, by_lang in scores.items():
        for lang, values in by_lang.items():
            writer.writerows([system, lang, k, v] for k, v in values.items() if isinstance(v, (int, float)))
    written["scores.csv"] = write_text_atomic(out / "scores.csv", buffer.getvalue())
    markdown = [f"# {task} evaluation\n"]
    markdown += [f"## {m}\n\n{t.to_markdown()}" for m, t in tables.items()]
    # sacreBLEU signatures and tokenizer fallbacks depend on the language only, not on the system.
    notes = {
        f"{lang}, {key}": values[key]
        for by_lang in scores.values()
        for lang, values in by_lang.items()
        for key in ("bleu_signature", "chrf_signature", "note")
        if key in values
    }
    if notes:
        markdown.append("## Signatures and notes\n\n" + "".join(f"- {k}: `{v}`\n" for k, v in notes.items()))
    written["tables.md"] = write_text_atomic(out / "tables.md", "\n".join(markdown))
    written["tables.csv"] = write_text_atomic(out / "tables.csv", tables_to_csv(list(tables.values())))
    if chart:
        for m, t in tables.items():
            written[f"chart-{m}"] = plot_language_table(t, out / f"chart-{m}.png")
    kept = {path.name for path in written.values()}
    for stale in [p for p in out.glob("chart-*.png") if p.name not in kept]:
        stale.unlink()  # an earlier evaluation's chart of a metric this one does not have
    return written
