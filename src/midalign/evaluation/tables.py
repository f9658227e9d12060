"""Per-language tables of one metric for several systems, with supervised / transfer averages.

Averages are macro averages over languages (each language counts once, as in the paper's tables);
the transfer gap is `supervised average - transfer average`, so a smaller gap means better transfer.
Languages the user puts in neither group appear in the table and in the `all` average only.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from midalign.errors import ConfigError
from midalign.files import write_bytes_atomic

Scores = Mapping[str, Mapping[str, Mapping[str, object]]]  # system -> language -> metric -> value


@dataclass(frozen=True)
class LanguageTable:
    """One metric, per language and system.

    Attributes:
        metric: the metric's name (a key of the scorers' dictionaries).
        systems: system names, in column order.
        languages: languages in row order: supervised, then transfer, then the rest.
        values: `values[system][language]` -> the metric.
        supervised: the supervised languages.
        transfer: the transfer languages.
    """

    metric: str
    systems: tuple[str, ...]
    languages: tuple[str, ...]
    values: Mapping[str, Mapping[str, float]]
    supervised: tuple[str, ...]
    transfer: tuple[str, ...]

    def group(self, lang: str) -> str:
        """`supervised`, `transfer` or `other`."""
        return "supervised" if lang in self.supervised else "transfer" if lang in self.transfer else "other"

    def averages(self, system: str) -> dict[str, float | None]:
        """Macro averages for one system: `supervised`, `transfer`, `gap` (None when a group is empty), `all`."""

        def mean(langs: Sequence[str]) -> float | None:
            return sum(self.values[system][lang] for lang in langs) / len(langs) if langs else None

        sup, tra = mean(self.supervised), mean(self.transfer)
        gap = sup - tra if sup is not None and tra is not None else None
        return {"supervised": sup, "transfer": tra, "gap": gap, "all": mean(self.languages)}

    def rows(self, digits: int | None = None) -> list[list[str | float | None]]:
        """Header plus one row per language and per average: `[label, group, value per system]`."""

        def fmt(x: float | None) -> str | float | None:
            return x if digits is None or x is None else f"{x:.{digits}f}"

        rows: list[list[str | float | None]] = [["language", "group", *self.systems]]
        rows += [
            [lang, self.group(lang), *(fmt(self.values[s][lang]) for s in self.systems)] for lang in self.languages
        ]
        averages = {s: self.averages(s) for s in self.systems}
        sizes = {"supervised": len(self.supervised), "transfer": len(self.transfer), "all": len(self.languages)}
        for name in ("supervised", "transfer", "gap", "all"):
            if averages[self.systems[0]][name] is not None:
                label = f"avg {name} ({sizes[name]})" if name != "gap" else "gap (supervised - transfer)"
                rows.append([label, "average", *(fmt(averages[s][name]) for s in self.systems)])
        return rows

    def to_markdown(self, digits: int = 1) -> str:
        """A Markdown table (rows: languages then averages; columns: systems)."""
        header, *body = self.rows(digits)
        lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in body]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV with a `metric` column first, full precision."""
        return tables_to_csv([self])

    def to_dict(self) -> dict:
        """JSON-ready: metric, groups, per-language values and per-system averages."""
        return {
            "metric": self.metric,
            "supervised": list(self.supervised),
            "transfer": list(self.transfer),
            "languages": {lang: {s: self.values[s][lang] for s in self.systems} for lang in self.languages},
            "averages": {s: self.averages(s) for s in self.systems},
        }


def tables_to_csv(tables: Sequence[LanguageTable]) -> str:
    """Several tables (same systems) in one CSV: one header, then each table's rows after its metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for i, table in enumerate(tables):
        header, *body = table.rows()
        if i == 0:
            writer.writerow(["metric", *header])
        writer.writerows([table.metric, *row] for row in body)
    return buffer.getvalue()


def language_groups(
    languages: Sequence[str], supervised: Sequence[str], transfer: Sequence[str] | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Check the supervised and transfer languages against the languages there are.

    Returns:
        `(supervised, transfer)`; `transfer=None` becomes every language not in `supervised` (none
        when `supervised` is empty too).

    Raises:
        ConfigError: a language that is not in `languages`, one named twice in a group (it would count twice in
            the averages), or one in both groups.
    """
    supervised = tuple(supervised)
    if transfer is None:
        transfer = tuple(lang for lang in languages if lang not in supervised) if supervised else ()
    transfer = tuple(transfer)
    for name, group in (("supervised", supervised), ("transfer", transfer)):
        repeated = sorted(lang for lang, n in Counter(group).items() if n > 1)
        if repeated:
            raise ConfigError(f"{name} language(s) {repeated} listed more than once")
    unknown = [lang for lang in (*supervised, *transfer) if lang not in languages]
    if unknown:
        raise ConfigError(f"unknown language(s) {unknown}; the data covers {list(languages)}")
    both = sorted(set(supervised) & set(transfer))
    if both:
        raise ConfigError(f"language(s) {both} are both supervised and transfer")
    return supervised, transfer


def language_table(
    scores: Scores, metric: str, *, supervised: Sequence[str] = (), transfer: Sequence[str] | None = None
) -> LanguageTable:
    """Build the per-language table of `metric` for every system in `scores`.

    Args:
        scores: `scores[system][language][metric]`, as `evaluate` / `score_by_language` return
            per system. Every system must cover the same languages.
        metric: which metric to tabulate.
        supervised: languages the systems were trained on.
        transfer: zero-shot languages; `None` means every language not in `supervised` (none
            when `supervised` is empty too).

    Raises:
        ConfigError: no systems, systems covering different languages, a language named in
            `supervised`/`transfer` that is not in the scores, a language in both groups, or a
            metric missing (or not numeric) somewhere.
    """
    systems = tuple(scores)
    if not systems:
        raise ConfigError("no systems to tabulate")
    languages = list(scores[systems[0]])
    for system in systems[1:]:
        if set(scores[system]) != set(languages):
            raise ConfigError(
                f"systems {systems[0]!r} and {system!r} cover different languages: "
                f"{sorted(languages)} vs {sorted(scores[system])}"
            )
    supervised, transfer = language_groups(languages, supervised, transfer)
    values: dict[str, dict[str, float]] = {}
    for system in systems:
        values[system] = {}
        for lang in languages:
            value = scores[system][lang].get(metric)
            if not isinstance(value, (int, float)):
                raise ConfigError(f"metric {metric!r} is missing for system {system!r}, language {lang!r}")
            values[system][lang] = float(value)
    others = tuple(lang for lang in languages if lang not in supervised and lang not in transfer)
    return LanguageTable(metric, systems, (*supervised, *transfer, *others), values, supervised, transfer)


# How metrics are named on charts (the scorers' keys otherwise).
METRIC_LABELS = {
    "slot_f1": "slot F1 (%)",
    "slot_type_f1": "slot-type F1 (%)",
    "intent_acc": "intent accuracy (%)",
    "exact_match": "exact match (%)",
    "bleu": "BLEU",
    "chrf": "chrF++",
    "comet": "COMET",
    "field_f1": "field F1 (%)",
    "parse_rate": "parse rate (%)",
}


def _draw_table(axes, table: LanguageTable, *, legend: bool) -> None:
    averages = {s: table.averages(s) for s in table.systems}
    avg_names = [name for name in ("supervised", "transfer") if averages[table.systems[0]][name] is not None]
    labels = [*table.languages, *(f"avg {name}" for name in avg_names)]
    width = 0.8 / len(table.systems)
    for k, system in enumerate(table.systems):
        heights = [table.values[system][lang] for lang in table.languages]
        heights += [averages[system][name] for name in avg_names]
        axes.bar(
            [i + (k - (len(table.systems) - 1) / 2) * width for i in range(len(labels))], heights, width, label=system
        )
    if avg_names:
        axes.axvline(len(table.languages) - 0.5, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_xlabel("language (then the averages over the supervised and transfer languages)")
    axes.set_ylabel(METRIC_LABELS.get(table.metric, table.metric))
    axes.set_title(f"{METRIC_LABELS.get(table.metric, table.metric)} per language")
    axes.grid(axis="y", alpha=0.3)
    if legend:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: never hides a bar


def plot_language_tables(tables: Sequence[LanguageTable], path: str | os.PathLike, *, title: str = "") -> Path:
    """Bar charts of several tables side by side in one PNG (see `plot_language_table`), under one title.

    Uses matplotlib's object API on the Agg canvas, so no display and no global pyplot state are needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not tables:
        raise ConfigError("no table to plot")
    n_bars = len(tables[0].languages) + 2
    width = max(6.0, 0.55 * n_bars * max(1, len(tables[0].systems) / 2))
    figure = Figure(figsize=(width, 4.0 * len(tables)))  # one panel per table, stacked
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(tables), 1, squeeze=False)[:, 0]
    for k, (ax, table) in enumerate(zip(axes, tables, strict=True)):
        _draw_table(ax, table, legend=k == 0)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    return write_bytes_atomic(path, buffer.getvalue())


def plot_language_table(table: LanguageTable, path: str | os.PathLike) -> Path:
    """Bar chart PNG of the table: one group of bars per language (then the averages), one colour per system."""
    return plot_language_tables([table], path)
