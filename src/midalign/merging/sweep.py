"""Try several weights of the last adapter on a dev set and keep the best.

Evaluation is reached through one call, `midalign.evaluation.dev_set`: it checks the dev data and settings
(before any model loads) and returns what scores a system and tabulates the scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from midalign.errors import ConfigError
from midalign.merging.adapters import MERGED
from midalign.merging.combine import add_merged_adapter, check_method
from midalign.progress import bar as progress_bar


@dataclass
class Sweep:
    """Settings of a weight sweep: each value replaces the weight of the last adapter (the alignment adapter).

    Attributes:
        values: the weights to try, e.g. `[0, 0.25, 0.5, 0.75, 1.0]`.
        examples: dev examples in `midalign.evaluation` form (`lang`, `prompt`, `gold`, ...).
        task: `slot`, `mt` or `json`.
        metric: the metric to compare (one of `midalign.evaluation.runner.TABLE_METRICS[task]`; default its
            first: `slot_f1`, `bleu`, `field_f1`).
        supervised, transfer: language groups (see `midalign.evaluation.language_table`). The best weight has
            the highest transfer average, or the highest average over all languages when there is no transfer
            group.
        tokenizer: the base model's tokenizer (default: loaded from the base model's path).
        chat_template, batch_size, max_new_tokens: generation settings, see `midalign.evaluation.generate`.
    """

    values: Sequence[float]
    examples: Sequence[Mapping[str, Any]]
    task: str = "slot"
    metric: str | None = None
    supervised: Sequence[str] = ()
    transfer: Sequence[str] | None = None
    tokenizer: Any = None
    chat_template: bool | None = None
    batch_size: int = 8
    max_new_tokens: int = 128


@dataclass(frozen=True)
class SweepResult:
    """The scores of a weight sweep.

    Attributes:
        adapter: the adapter whose weight was swept.
        values: the weights tried, in order.
        metric: the metric compared.
        criterion: `transfer` (transfer average) or `all` (average over all languages).
        table: per-language table, one column per weight (`<adapter>=<weight>`).
        best: the weight with the highest `criterion` average (the first one on a tie).
    """

    adapter: str
    values: tuple[float, ...]
    metric: str
    criterion: str
    table: Any
    best: float

    def to_markdown(self) -> str:
        """The table and the choice, as printed by `midalign merge --sweep`."""
        score = self.table.averages(f"{self.adapter}={self.best:g}")[self.criterion]
        return (
            f"{self.table.to_markdown()}\nbest: {self.adapter}={self.best:g} "
            f"({self.metric}, avg {self.criterion} {score:.1f})\n"
        )

    def plot(self) -> bytes:
        """PNG: the metric of each language against the weight (thin lines), the supervised and transfer averages
        (thick), and the chosen weight (dotted)."""
        import io

        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        labels = [f"{self.adapter}={v:g}" for v in self.values]
        figure = Figure(figsize=(7.5, 4.2))
        FigureCanvasAgg(figure)
        ax = figure.subplots()
        for lang in self.table.languages:
            group = self.table.group(lang)
            ax.plot(
                self.values,
                [self.table.values[label][lang] for label in labels],
                linewidth=0.9,
                alpha=0.6,
                linestyle="-" if group == "supervised" else "--",
                label=f"{lang} ({group})",
            )
        for group, color in (("supervised", "black"), ("transfer", "tab:red")):
            means = [self.table.averages(label)[group] for label in labels]
            if None not in means:
                ax.plot(self.values, means, color=color, linewidth=2.5, marker="o", label=f"{group} average")
        ax.axvline(self.best, color="grey", linestyle=":", label=f"chosen weight {self.best:g}")
        ax.set_xlabel(f"weight of adapter '{self.adapter}'")
        ax.set_ylabel(self.metric)
        ax.set_title(f"Merge sweep on the dev set: {self.metric} per language against the weight")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        return buffer.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as stored in `merge_recipe.json`."""
        return {
            "adapter": self.adapter,
            "values": list(self.values),
            "metric": self.metric,
            "criterion": self.criterion,
            "best": self.best,
            "table": self.table.to_dict(),
            "markdown": self.to_markdown(),
        }


def check_sweep(sweep: Sweep, names: Sequence[str]):
    """The sweep's values and its checked dev set; refuses bad settings or data before any model loads."""
    from midalign.evaluation import dev_set

    if len(names) < 2:
        raise ConfigError("a sweep varies the last adapter's weight next to the others: give at least two adapters")
    values = [float(v) for v in sweep.values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"sweep values must be one or more finite numbers, got {list(sweep.values)}")
    if len({f"{v:g}" for v in values}) != len(values):
        raise ConfigError(f"sweep values repeat: {values}")
    for name in ("batch_size", "max_new_tokens"):  # generation would refuse them only after the model loads
        value = getattr(sweep, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"sweep {name} must be a whole number of at least 1, got {value!r}")
    dev = dev_set(
        sweep.examples,
        sweep.task,
        metric=sweep.metric,
        supervised=sweep.supervised,
        transfer=sweep.transfer,
        name="sweep",
    )
    return values, dev


def sweep_weights(
    model,
    tokenizer,
    weights: Mapping[str, float],
    sweep: Sweep,
    *,
    method: str = "sum",
    rank: int | None = None,
    density: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SweepResult:
    """Evaluate the merge for each weight of the last adapter in `weights` and pick the best.

    Args:
        model: a `PeftModel` holding the input adapters (see `load_adapters`).
        tokenizer: the base model's tokenizer.
        weights: input adapter name -> weight; the last adapter's weight is replaced by each sweep value.
        sweep: the values, dev data and generation settings.
        method, rank, density, seed: see `add_merged_adapter`.
        progress: show generation progress bars.

    Returns:
        A `SweepResult`; each merge is removed from `model` after it is scored.
    """
    check_method(method, rank, density)
    values, dev = check_sweep(sweep, list(weights))
    swept = list(weights)[-1]
    scores = {}
    bar = progress_bar(values, desc=f"merge sweep: weight of '{swept}'", unit="weight", disable=not progress)
    for value in bar:
        bar.set_postfix_str(f"{swept}={value:g}")
        label = f"{swept}={value:g}"
        add_merged_adapter(model, {**weights, swept: value}, method=method, rank=rank, density=density, seed=seed)
        try:
            scores[label] = dev.score(
                model,
                tokenizer,
                label,
                batch_size=sweep.batch_size,
                max_new_tokens=sweep.max_new_tokens,
                chat_template=sweep.chat_template,
                progress=progress,
            )
        finally:
            model.set_adapter(swept)  # PEFT warns when the active adapter is deleted
            model.delete_adapter(MERGED)
    table = dev.table(scores)
    criterion = "transfer" if table.transfer else "all"
    averages = [table.averages(label)[criterion] for label in scores]
    best = values[averages.index(max(averages))]  # the first of equal scores
    return SweepResult(swept, tuple(values), dev.metric, criterion, table, best)
