"""Write an `AnalysisResult`: tidy CSV/JSON, a summary, PNG plots and a short markdown report (all atomic)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from midalign.analysis.metrics import METRICS
from midalign.analysis.run import AnalysisResult
from midalign.files import write_bytes_atomic, write_json_atomic, write_text_atomic

LABELS = {
    "cosine": "retrieval, cosine",
    "margin": "retrieval, ratio margin",
    "centred": "retrieval, centred cosine",
    "cos_pos": "mean cosine of translations",
    "cos_neg": "mean cosine of non-translations",
}


def _label(result: AnalysisResult, metric: str) -> str:
    """The metric's name for plots and tables; the margin's with the k it used."""
    return f"{LABELS[metric]} (k={result.k_used})" if metric == "margin" else LABELS[metric]


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_curves(result: AnalysisResult, metric: str, *, mark_layer: int | None = None) -> bytes:
    """Per-layer average of `metric`: one line per system, one panel per language group (plus all).

    A dotted vertical line marks each system's recommended layer (in the first panel, named in the legend);
    `mark_layer` shades one layer, such as the one an adapter was aligned at.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = [None, *result.groups]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False, sharey=True)
    extra, lines = [], []
    for ax, group in zip(axes[0], panels, strict=True):
        for system in result.systems:
            curve = result.curve(system, metric, group)
            (line,) = ax.plot(range(len(curve)), curve, marker="o", markersize=3, label=system)
            if group is None:
                lines.append(line)
            best = result.recommended_layer(system, metric) if group is None else None
            if best is not None:
                color = line.get_color()
                ax.axvline(best, linestyle=":", linewidth=1, color=color)
                extra.append(Line2D([], [], linestyle=":", color=color, label=f"{system}: best layer {best}"))
        if mark_layer is not None:
            ax.axvspan(mark_layer - 0.3, mark_layer + 0.3, color="grey", alpha=0.15)
        ax.set_title("all directions" if group is None else f"src in {group}")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.grid(alpha=0.3)
    if mark_layer is not None:
        extra.append(Patch(color="grey", alpha=0.15, label=f"aligned layer {mark_layer}"))
    axes[0][0].set_ylabel(_label(result, metric))
    handles = [*lines, *extra]
    axes[0][-1].legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{_label(result, metric)} per layer ({len(result.languages)} languages)", y=1.04)
    data = _png(fig)
    plt.close(fig)
    return data


def plot_heatmap(result: AnalysisResult, layer: int, metric: str) -> bytes:
    """Language-by-language `metric` at `layer`, one panel per system on one colour scale (rows: query language,
    columns: candidate language), so that systems compare cell by cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    langs = result.languages
    index = {lang: i for i, lang in enumerate(langs)}
    size = max(4.0, 0.32 * len(langs) + 2)
    n = len(result.systems)
    fig, axes = plt.subplots(1, n, figsize=(size * n, size * 0.9), squeeze=False)
    for ax, system in zip(axes[0], result.systems, strict=True):
        grid = [[math.nan] * len(langs) for _ in langs]
        for r in result.rows:
            if r["system"] == system and r["layer"] == layer and r["metric"] == metric:
                grid[index[r["src"]]][index[r["tgt"]]] = r["value"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(langs)), langs, rotation=90, fontsize=7)
        ax.set_yticks(range(len(langs)), langs, fontsize=7)
        ax.set_xlabel("candidate language (tgt)")
        ax.set_ylabel("query language (src)")
        ax.set_title(system)
    fig.colorbar(image, ax=list(axes[0]), fraction=0.046 / n, label=_label(result, metric))
    fig.suptitle(f"{_label(result, metric)} per direction at layer {layer}", y=1.02)
    data = _png(fig)
    plt.close(fig)
    return data


def markdown(result: AnalysisResult, summary: dict) -> str:
    lines = [
        "# Layer-wise cross-lingual alignment",
        "",
        f"{len(result.languages)} languages, {len({(r['src'], r['tgt']) for r in result.rows})} directions, "
        f"layers 0..{result.num_layers}; recommended layer by {_label(result, result.metric)} (blocks 1..L-1).",
        "",
        "| system | recommended layer | " + " | ".join(_label(result, m) for m in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for system, s in summary["systems"].items():
        values = " | ".join(f"{s['at_recommended_layer'][m]:.3f}" for m in METRICS)
        lines.append(f"| {system} | {s['recommended_layer']} | {values} |")
    lines += ["", f"## {_label(result, result.metric)} per layer", ""]
    lines.append("| layer | " + " | ".join(result.systems) + " |")
    lines.append("|---:|" + "---:|" * len(result.systems))
    for layer in range(result.num_layers + 1):
        values = " | ".join(f"{summary['systems'][s]['per_layer'][result.metric][layer]:.3f}" for s in result.systems)
        lines.append(f"| {layer} | {values} |")
    lines += ["", "![per-layer curve](curve.png)", "", "![heatmap](heatmap.png)", ""]
    return "\n".join(lines)


def write_report(result: AnalysisResult, out_dir: str | Path, *, extra_summary: dict | None = None) -> list[Path]:
    """Write `alignment.csv`, `alignment.json`, `summary.json`, `curve.png`, `heatmap.png`, `report.md`."""
    out = Path(out_dir)
    summary = {**result.summary(), **(extra_summary or {})}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["system", "layer", "src", "tgt", "metric", "value"])
    writer.writeheader()
    writer.writerows(result.rows)
    first = result.systems[0]  # the heatmap's layer: the first system's (the base model's) recommended one
    written = [
        write_text_atomic(out / "alignment.csv", buf.getvalue()),
        write_json_atomic(out / "alignment.json", result.rows, indent=0),
        write_json_atomic(out / "summary.json", summary),
        write_bytes_atomic(out / "curve.png", plot_curves(result, result.metric)),
        write_bytes_atomic(out / "heatmap.png", plot_heatmap(result, result.recommended_layer(first), result.metric)),
        write_text_atomic(out / "report.md", markdown(result, summary)),
    ]
    return written
