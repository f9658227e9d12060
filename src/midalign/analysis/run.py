"""`analyze`: per-layer cross-lingual alignment of a base model and its adapters over a multi-way parallel set."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from midalign.analysis.extract import cached_pooled_states, pooled_states
from midalign.analysis.metrics import METRICS, layer_metrics, pair_metrics
from midalign.data.readers import Pair, read_multiway
from midalign.errors import ConfigError, DataError
from midalign.files import read_json_file
from midalign.modeling import BASE, adapter_systems, check_tokenizer_fits, file_fingerprint, weights_fingerprint
from midalign.pooling import Pooling
from midalign.progress import bar

logger = logging.getLogger(__name__)


def best_inner_layer(curve: list[float]) -> int:
    """The layer where a per-layer alignment `curve` (index 0 = embeddings, last = top block) is highest, among blocks
    `1..L-1` (all layers when the model has a single block): the recommended layer and `align_layer: auto`'s choice.
    """
    n_layers = len(curve) - 1
    candidates = range(1, n_layers) if n_layers > 1 else range(0, n_layers + 1)
    return max(candidates, key=lambda layer: curve[layer])


@dataclass
class AnalysisResult:
    """Tidy rows `{system, layer, src, tgt, metric, value}` plus per-layer averages and recommendations."""

    rows: list[dict]
    languages: list[str]
    num_layers: int
    groups: dict[str, list[str]] = field(default_factory=dict)
    metric: str = "margin"
    k: int = 4  # the margin's neighbours, as asked
    sentences: int = 0  # per language

    @property
    def k_used(self) -> int:
        """The neighbours the margin averaged: `k`, or every candidate when the set has fewer sentences."""
        return min(self.k, self.sentences) if self.sentences else self.k

    def curve(self, system: str, metric: str | None = None, group: str | None = None) -> list[float]:
        """Average of `metric` over directions at each layer (directions whose src is in `group`, if given)."""
        metric = metric or self.metric
        members = set(self.groups[group]) if group else None
        sums = [0.0] * (self.num_layers + 1)
        counts = [0] * (self.num_layers + 1)
        for r in self.rows:
            if r["system"] == system and r["metric"] == metric and (members is None or r["src"] in members):
                sums[r["layer"]] += r["value"]
                counts[r["layer"]] += 1
        return [s / c if c else float("nan") for s, c in zip(sums, counts, strict=True)]

    @property
    def systems(self) -> list[str]:
        return list(dict.fromkeys(r["system"] for r in self.rows))

    def recommended_layer(self, system: str, metric: str | None = None) -> int:
        """Best layer by the average `metric`, among blocks `1..L-1`.

        The embedding output (0) is excluded: LoRA cannot change it, and with word-like tokens a bag of embeddings
        looks aligned. The top block (L) is excluded too: it feeds the LM head directly, and aligning there cost
        task accuracy in the paper.
        """
        return best_inner_layer(self.curve(system, metric))

    def summary(self) -> dict:
        out = {
            "languages": self.languages,
            "sentences_per_language": self.sentences,
            "num_layers": self.num_layers,
            "metric": self.metric,
            "k": self.k,
            "k_used": self.k_used,
            "systems": {},
        }
        for system in self.systems:
            curves = {m: self.curve(system, m) for m in METRICS}
            groups = {g: self.curve(system, self.metric, g) for g in self.groups}
            best = self.recommended_layer(system)
            out["systems"][system] = {
                "recommended_layer": best,
                "at_recommended_layer": {m: curves[m][best] for m in METRICS},
                "per_layer": curves,
                "per_group": groups,
            }
        return out


def load_groups(path: str | Path | None, languages: list[str]) -> dict[str, list[str]]:
    """Language groups from a JSON file `{"high": ["de", "fr"], "low": ["sw"]}`; unknown codes are an error."""
    if path is None:
        return {}
    groups = read_json_file(path)
    if not isinstance(groups, dict):
        raise DataError('expected {"group": ["lang", ...], ...}', path=str(path))
    if not groups:
        raise DataError('no groups; expected {"group": ["lang", ...], ...}', path=str(path))
    for name, members in groups.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise DataError("expected a list of language codes", path=str(path), field=name)
        if not members:  # its average would be over no direction: NaN in every table
            raise DataError("an empty group; list at least one language", path=str(path), field=name)
    for name, members in groups.items():
        unknown = sorted(set(members) - set(languages))
        if unknown:
            raise DataError(f"unknown languages {unknown}; the data has {languages}", path=str(path), field=name)
    return groups


def check_settings(*, k: int = 4, batch_size: int = 32, max_length: int = 128) -> None:
    """Refuse settings that cannot measure anything, before any model loads (`ConfigError` naming the setting)."""
    for name, value in (("k", k), ("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a whole number of at least 1, got {value!r}")


def analyze_states(
    states: dict[str, dict[str, torch.Tensor]],
    *,
    k: int = 4,
    pivot: str | None = None,
    groups: dict[str, list[str]] | None = None,
    metric: str = "margin",
) -> AnalysisResult:
    """Metrics from pooled vectors `{system: {language: [L + 1, N, H]}}` (no model needed).

    The margin averages the `k` nearest candidates; a set of fewer than `k` sentences per language averages them
    all (logged, and recorded as `k_used`).
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose one of {METRICS}")
    check_settings(k=k)
    rows = []
    num_layers = None
    languages: list[str] = []
    sentences = 0
    for system, by_lang in states.items():
        languages = sorted(by_lang)
        num_layers = next(iter(by_lang.values())).shape[0] - 1
        sentences = next(iter(by_lang.values())).shape[1]
        for layer in range(num_layers + 1):
            per_pair = layer_metrics({lang: v[layer] for lang, v in by_lang.items()}, k=k, pivot=pivot)
            for (src, tgt), values in per_pair.items():
                rows += [
                    {"system": system, "layer": layer, "src": src, "tgt": tgt, "metric": m, "value": v}
                    for m, v in values.items()
                ]
    if sentences and k > sentences:
        logger.warning(
            "k %d is more than the %d sentences per language: the margin averages all %d", k, sentences, sentences
        )
    return AnalysisResult(rows, languages, num_layers or 0, groups or {}, metric, k=k, sentences=sentences)


def analyze(
    model,
    tokenizer,
    data: str | Path,
    *,
    adapters: dict[str, str] | None = None,
    include_base: bool = True,
    languages: list[str] | None = None,
    pivot: str | None = None,
    groups: str | Path | dict | None = None,
    k: int = 4,
    metric: str = "margin",
    batch_size: int = 32,
    max_length: int = 128,
    pooling: Pooling = "mean",
    include_special_tokens: bool = False,
    cache_dir: str | Path | None = None,
) -> AnalysisResult:
    """Layer-wise alignment of `model` (and each adapter on it) on a multi-way parallel set.

    Args:
        model: a loaded causal LM; `adapters` (name -> PEFT folder) are put on it one at a time.
        data: FLORES-style folder or JSONL of `{lang: sentence}` rows.
        pivot: only directions with the pivot on one side (all ordered pairs when None).
        groups: `{group: [languages]}` or a JSON file of it, for per-group averages.
        cache_dir: where pooled vectors are cached, keyed by what determines them: the base model's weights and
            dtype (`weights_fingerprint`), the adapter's files, the settings and the sentences.
    """
    check_settings(k=k, batch_size=batch_size, max_length=max_length)
    check_tokenizer_fits(model, tokenizer, "analyze")
    table = read_multiway(data, languages)
    if len(table) < 2:
        raise DataError("need at least two languages", path=str(data))
    if pivot is not None and pivot not in table:
        raise DataError(f"pivot {pivot!r} is not among the languages {sorted(table)}", path=str(data))
    group_map = groups if isinstance(groups, dict) else load_groups(groups, sorted(table))
    systems = system_models(model, adapters or {}, include_base)
    base_key = weights_fingerprint(model)  # before any adapter wraps it
    settings = dict(pooling=pooling, include_special_tokens=include_special_tokens, max_length=max_length)
    states: dict[str, dict[str, torch.Tensor]] = {}
    for name, (run_model, adapter_id) in systems:
        states[name] = {}
        for lang, sentences in bar(table.items(), desc=f"analyze {name}", total=len(table), leave=False):
            key = dict(
                model=base_key,
                adapter=adapter_id,
                lang=lang,
                sentences=sentences,
                **settings,
            )

            def compute(run_model=run_model, sentences=sentences):
                return pooled_states(run_model, tokenizer, sentences, batch_size=batch_size, **settings)

            states[name][lang] = cached_pooled_states(cache_dir, key, compute)
    return analyze_states(states, k=k, pivot=pivot, groups=group_map, metric=metric)


def system_models(model, adapters: dict[str, str], include_base: bool):
    """Yield `(name, (model to run, adapter id))` for the base model (also when there is no adapter) and each
    adapter, loading them lazily (`midalign.modeling.adapter_systems`)."""
    for name, run_model in adapter_systems(model, adapters, include_base=include_base or not adapters):
        yield name, (run_model, None if name == BASE else _adapter_id(adapters[name]))


def _adapter_id(path: str | Path) -> str:
    """Identify an adapter by the contents of its weights and config (cache key)."""
    folder = Path(path)
    return file_fingerprint(*(folder / name for name in ("adapter_config.json", "adapter_model.safetensors")))


def recommend_layer_for_pairs(
    model, tokenizer, pairs: list[Pair], *, max_per_direction: int = 200, metric: str = "margin", k: int = 4, **kw
) -> tuple[int, list[float]]:
    """Quick analysis of `model` on training pairs: the best layer and the per-layer curve of `metric`.

    Pairs are grouped by direction; within each direction (at most `max_per_direction` pairs, the first ones)
    every src sentence retrieves among the direction's tgt sentences. Used by `align_layer: auto`.
    """
    by_direction: dict[str, list[Pair]] = {}
    for p in pairs:
        by_direction.setdefault(f"{p.src_lang}-{p.tgt_lang}", []).append(p)
    curves = []
    for direction, group in sorted(by_direction.items()):
        group = group[:max_per_direction]
        if len(group) < 2:
            continue
        src = pooled_states(model, tokenizer, [p.src for p in group], **kw)  # [L + 1, n, H]
        tgt = pooled_states(model, tokenizer, [p.tgt for p in group], **kw)
        curves.append([pair_metrics(src[i], tgt[i], k=k)["a->b"][metric] for i in range(src.shape[0])])
        logger.info("align_layer auto: %s, %d pairs", direction, len(group))
    if not curves:
        raise DataError("align_layer auto needs at least two pairs in one direction")
    curve = [sum(c[i] for c in curves) / len(curves) for i in range(len(curves[0]))]
    return best_inner_layer(curve), curve
