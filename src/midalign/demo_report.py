"""The demo's `report.md`: what ran, the results in percent, sentences computed from them, the per-language
tables and charts, the retrieval per layer, and the seconds of each stage."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskMetrics:
    """What the demo reports for a task: its metrics (table columns), the one the supervised language is judged
    by (`kept`), the one a merge's share of the gain is measured on (`headline`), the two drawn per language, and
    how the report names the task and its test items."""

    metrics: tuple[str, ...]
    kept: str
    headline: str
    scatter: tuple[str, str]
    name: str = "slot filling"
    items: str = "commands"


TASKS = {
    "slot": TaskMetrics(
        ("slot_f1", "slot_type_f1", "intent_acc"), "slot_f1", "slot_type_f1", ("slot_type_f1", "intent_acc")
    ),
    # The slot task answered as a JSON object: {"intent": ..., "<slot type>": "<value>", ...}.
    "json": TaskMetrics(
        ("field_f1", "exact_match", "parse_rate"),
        "field_f1",
        "field_f1",
        ("field_f1", "exact_match"),
        name="slot filling answered as JSON objects",
    ),
    # Translation into English (sacrebleu: chrF++ and BLEU), the paper's machine translation task.
    "mt": TaskMetrics(("chrf", "bleu"), "chrf", "chrf", ("chrf", "bleu"), "translation into English", "sentences"),
}
METRICS = TASKS["slot"].metrics
LABELS = {
    "slot_f1": "slot F1",
    "slot_type_f1": "slot-type F1",
    "intent_acc": "intent accuracy",
    "field_f1": "JSON field F1",
    "exact_match": "JSON exact match",
    "parse_rate": "JSON parse rate",
    "chrf": "chrF++",
    "bleu": "BLEU",
}


def task_metrics(results: dict) -> TaskMetrics:
    return TASKS[results.get("task", "slot")]


def _pct(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def _threads(results: dict) -> str:
    count = results.get("threads", 1)
    if count == 1:
        return "one CPU thread"
    return f"{count} CPU threads (fine-tuning and evaluation: one thread per system, two systems at a time)"


def _verdict(results: dict) -> list[str]:
    """What the numbers of this run say, in sentences computed from them (no claim is written by hand)."""
    avg = {name: results["systems"][name]["averages"] for name in results["systems"]}
    layer = results["align_layer_index"]
    retrieval = {name: 100 * curve["margin"][layer] for name, curve in results["retrieval"].items()}
    task = task_metrics(results)
    lines = []
    for name in ("mid-align", "merged"):
        if name not in avg:
            continue
        gains = {m: avg[name]["transfer"][m] - avg["baseline"]["transfer"][m] for m in task.metrics}
        kept = avg[name]["supervised"][task.kept] - avg["baseline"]["supervised"][task.kept]
        lines.append(
            f"- **{name} vs baseline**: transfer "
            + ", ".join(f"{LABELS[m]} {gains[m]:+.1f}" for m in task.metrics)
            + f"; supervised {LABELS[task.kept]} {kept:+.1f}."
        )
    lines.append(
        f"- **Retrieval at block {layer}** (ratio margin, held-out multi-way set): "
        + ", ".join(f"{name} {value:.1f}%" for name, value in retrieval.items())
        + "."
    )
    lines += _claims(avg, retrieval, task)
    lines.append(
        "- One fine-tuning seed of a small model: differences of a few points are within seed noise. "
        "`docs/demo.md` and `benchmarks/RESULTS.md` in the midalign repository give the multi-seed picture."
    )
    return lines


def _claims(avg: dict, retrieval: dict, task: TaskMetrics) -> list[str]:
    """The paper's claims this run can speak to, each with its numbers and whether it holds here."""

    def holds(ok: bool) -> str:
        return "holds in this run" if ok else "does not hold in this run"

    lines = ["", "The paper's claims (Liu & Niehues 2025) against this run:", ""]
    rise = retrieval["mid-align"] - retrieval["baseline"]
    lines.append(
        f"- *Alignment at the middle block rises* (Llama 3: 39% -> 73%; asked here: +25 points or more): "
        f"{retrieval['baseline']:.1f}% -> {retrieval['mid-align']:.1f}%, {rise:+.1f}; {holds(rise >= 25)}."
    )
    gains = {m: avg["mid-align"]["transfer"][m] - avg["baseline"]["transfer"][m] for m in task.metrics}
    lines.append(
        "- *Transfer improves*: "
        + ", ".join(f"{LABELS[m]} {gains[m]:+.1f}" for m in task.metrics)
        + f"; {_on_how_many(sum(g > 0 for g in gains.values()), len(gains))} (a single seed cannot show significance)."
    )
    # Kept means not lost: a supervised score that rises is kept too
    kept = avg["mid-align"]["supervised"][task.kept] - avg["baseline"]["supervised"][task.kept]
    lines.append(
        f"- *The supervised language is kept* (at most 1 point lower): {LABELS[task.kept]} {kept:+.1f}; "
        f"{holds(kept >= -1)}."
    )
    if "merged" in avg:
        full = gains[task.headline]
        part = avg["merged"]["transfer"][task.headline] - avg["baseline"]["transfer"][task.headline]
        share = 100 * part / full if full > 0 else float("nan")
        lines.append(
            f"- *A merged alignment adapter recovers at least half of the gain* (the paper: about two thirds): "
            f"{_pct(share)}% of the {LABELS[task.headline]} gain; {holds(full > 0 and share >= 50)}."
        )
    return [*lines, ""]


def _on_how_many(improved: int, metrics: int) -> str:
    if improved == metrics:
        return "holds in this run on every metric"
    if improved == 0:
        return "does not hold in this run on any metric"
    return f"holds in this run on {improved} of {metrics} metrics"


def gains_by_language(results: dict, system: str, metric: str) -> dict[str, float]:
    """Per transfer language, `system` minus the baseline on `metric` (points)."""
    scores = results["systems"]
    return {
        lang: scores[system]["per_language"][lang][metric] - scores["baseline"]["per_language"][lang][metric]
        for lang in results["base_alignment"]["margin"]
        if lang not in results["supervised"]
    }


def _pearson(x: list[float], y: list[float]) -> float:
    import statistics

    try:
        return statistics.correlation(x, y)
    except statistics.StatisticsError:  # fewer than two languages, or a constant series
        return math.nan


def plot_gain_vs_alignment(results: dict) -> bytes:
    """PNG: per transfer language, the gain over the baseline (mid-align and merged; the task's `scatter` metrics)
    against the base model's retrieval with the pivot (English) at the aligned block."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    base = results["base_alignment"]
    metrics = task_metrics(results).scatter
    figure = Figure(figsize=(5.2 * len(metrics), 4.0))
    FigureCanvasAgg(figure)
    for ax, metric in zip(figure.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        for system, marker in (("mid-align", "o"), ("merged", "s")):
            if system not in results["systems"]:
                continue
            gains = gains_by_language(results, system, metric)
            x = [base["margin"][lang] for lang in gains]
            ax.scatter(x, list(gains.values()), marker=marker, label=system)
            for lang, xi, yi in zip(gains, x, gains.values(), strict=True):
                ax.annotate(lang, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=8)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel(f"base model's retrieval with {base['pivot']} at block {base['layer']} (%)")
        ax.set_ylabel(f"{LABELS[metric]}: system - baseline (points)")
        ax.set_title(f"Transfer gain in {LABELS[metric]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("Does alignment help most where the base model aligns worst?")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _gain_section(results: dict, tag: str) -> list[str]:
    base = results["base_alignment"]
    lines = [
        "## Gain against the base model's alignment",
        "",
        f"![gain per language against the base model's alignment](gain-vs-alignment{tag}.png)",
        "",
        f"Per transfer language, mid-align's gain over the baseline against the base model's retrieval with "
        f"{base['pivot']} at block {base['layer']} (the paper finds the largest gains where the base aligns worst, "
        "which would show as a negative correlation).",
        "",
        "| language | base retrieval | "
        + " | ".join(f"mid-align {LABELS[m]} gain" for m in task_metrics(results).scatter)
        + " |",
        "|---|---:|---:|---:|",
    ]
    first, second = (gains_by_language(results, "mid-align", m) for m in task_metrics(results).scatter)
    for lang in first:
        lines.append(f"| {lang} | {base['margin'][lang]:.1f} | {first[lang]:+.1f} | {second[lang]:+.1f} |")
    x = [base["margin"][lang] for lang in first]
    shown = ["n/a" if math.isnan(r) else f"{r:+.2f}" for r in (_pearson(x, list(g.values())) for g in (first, second))]
    names = [LABELS[m] for m in task_metrics(results).scatter]
    lines += [
        "",
        f"Pearson r over {len(x)} languages: {names[0]} gain {shown[0]}, {names[1]} gain {shown[1]} (a handful of "
        "languages and one seed: read it as a picture, not a test).",
        "",
    ]
    return lines


def report(results: dict, tables: dict, tag: str = "") -> str:
    """`report.md`: what ran, the results, the plots and what they show, and how long each stage took."""
    systems = list(results["systems"])
    languages = results["languages"]
    supervised = results["supervised"]
    base = results["base_model"]
    layer = results["align_layer_index"]
    cfg = results["config"]
    task = task_metrics(results)
    metrics = task.metrics
    lines = [
        "# midalign demo: middle-layer alignment on a synthetic multilingual world",
        "",
        f"**What ran.** Preset `{cfg['preset']}`, fine-tuning seed {cfg['seed']}, {_threads(results)}. A synthetic "
        f"world of {len(languages)} languages ({', '.join(languages)}); a tiny Llama ({base['num_layers']} "
        f"blocks, hidden {base['hidden_size']}, {base['parameters'] / 1e6:.1f}M parameters) pretrained from scratch on "
        f"{base['corpus_tokens'] / 1e6:.2f}M tokens; then LoRA fine-tuning on {task.name} in "
        f"{', '.join(supervised)} only: `baseline` (task loss), `mid-align` (task loss alternating with the "
        f"alignment loss at block {layer} of {base['num_layers']}) and `merged` (the baseline plus an "
        f"alignment-only adapter at weight {cfg['demo']['merge_weight']}). Every language is tested zero-shot "
        f"({results['test_per_language']} {task.items} each, greedy decoding). All scores are percentages.",
        "",
        "## Results",
        "",
        "| system | "
        + " | ".join(f"{g} {LABELS[m]}" for g in ("supervised", "transfer") for m in metrics)
        + f" | retrieval at block {layer} |",
        "|---|" + "---:|" * (2 * len(metrics) + 1),
    ]
    for name in systems:
        avg = results["systems"][name]["averages"]
        cells = [_pct(avg[g][m]) for g in ("supervised", "transfer") for m in metrics]
        retrieval = 100 * results["retrieval"][name]["margin"][layer]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {retrieval:.1f} |")
    lines += ["", "**What it shows.**", "", *_verdict(results), ""]
    lines += [
        "## Per language",
        "",
        f"![scores per language](transfer{tag}.png)",
        "",
        "Each panel: one group of bars per language, then the supervised and transfer averages.",
        "",
    ]
    for metric in metrics:
        lines += [f"**{LABELS[metric]}**", "", tables[metric].to_markdown(), ""]
    if "base_alignment" in results:
        lines += _gain_section(results, tag)
    names = list(results["retrieval"])
    lines += [
        "## Alignment per layer",
        "",
        f"![retrieval per layer](retrieval{tag}.png)",
        "",
        "Ratio-margin retrieval over every direction of the held-out multi-way set, in %: how often a sentence's "
        "translation is its nearest neighbour among all sentences of the other language. Layer 0 is the "
        f"embeddings; the shaded band marks block {layer}, the one mid-align aligns.",
        "",
        "| layer | " + " | ".join(names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for index in range(len(results["retrieval"][names[0]]["margin"])):
        cells = " | ".join(f"{100 * results['retrieval'][n]['margin'][index]:.1f}" for n in names)
        lines.append(f"| {index} | {cells} |")
    lines += ["", "## Stage times", "", "| stage | seconds | |", "|---|---:|---|"]
    for stage, t in results["seconds"].items():
        notes = ["reused from an earlier run"] if t["reused"] else []
        if t.get("parts"):  # the systems' parts, two lanes at a time: they add up to more than the stage's seconds
            notes.append(", ".join(f"{part} {p['seconds']:.0f} s" for part, p in t["parts"].items()))
        lines.append(f"| {stage} | {t['seconds']:.0f} | {'; '.join(notes)} |")
    total = sum(t["seconds"] for t in results["seconds"].values())
    lines += ["", f"The run that made these outputs took {total / 60:.1f} minutes on {_threads(results)}.", ""]
    return "\n".join(lines)
