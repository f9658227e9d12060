"""Merge LoRA adapters of one base model, e.g. an alignment adapter into a task adapter.

A LoRA adapter changes a linear layer's weight by `dW = B @ A * s`, with `s = alpha / r` (`alpha / sqrt(r)`
under rsLoRA; `r` and `alpha` per module under `rank_pattern` / `alpha_pattern`). The methods:

| method | stored update per module | exact? | rank |
|---|---|---|---|
| `sum` | `sum_i w_i dW_i`: the factors concatenated, `w_i * s_i` folded into `A_i` | yes | sum of the ranks |
| `svd` | the best rank-`rank` approximation of that sum (truncated SVD) | when `rank` >= sum | `rank` |
| `ties`, `dare_linear`, `dare_ties` | PEFT's TIES / DARE on the `dW_i`, then truncated SVD | no | `rank` |

Everything is computed here from the adapters loaded on the base model (PEFT's own per-module `scaling`),
in float32, and the merged adapter is a plain LoRA with scaling 1. PEFT's `add_weighted_adapter` is not
used: its `linear` (and its non-SVD `ties` / `dare_*`) combines the A factors and the B factors separately,
and `sum_i B_i @ sum_i A_i` is not `sum_i B_i @ A_i`; its `cat` and `svd` give the merged adapter the first
adapter's config, so that adapter's rsLoRA flag (a wrong `sqrt(r)` scaling), DoRA and `layers_to_transform`
(the other adapters' updates outside those layers are dropped) carry over.

Inputs are refused when their update is not `B @ A * s` on a linear layer (DoRA and other LoRA variants,
trained biases, `modules_to_save`, initialisations that rewrite the base weights), or when they were made for
another base model (recorded name or module shapes). Different target modules, layers and ranks are merged
exactly: a module an adapter does not touch contributes a zero update.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from midalign.errors import ConfigError

METHODS = ("sum", "svd", "ties", "dare_linear", "dare_ties")
MERGED = "merged"  # name of the merged adapter on the in-memory model
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
RECIPE = "merge_recipe.json"
# init_lora_weights values whose training rewrote the base weights (residual / quantised base), so the saved
# factors are not an update of the original base.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class MergeResult:
    """A merged adapter: its config and factors, and how it was made.

    Attributes:
        adapter_name: its name on the model it was added to.
        method: one of `METHODS`.
        weights: input adapter name -> weight.
        rank: the merged adapter's rank (modules that need fewer are padded with zeros).
        density: TIES / DARE density, else None.
        seed: DARE's random seed, else None.
        relative_error: `||stored - target||_F / ||target||_F` over all modules, where the target is the
            exact weighted sum (`sum`, `svd`) or the TIES / DARE result before truncation; 0 when exact.
        config: the merged adapter's `LoraConfig` (scaling 1: `lora_alpha == r`).
        factors: module name -> `(A [rank, in], B [out, rank])`, float32; the update is `B @ A`.
    """

    adapter_name: str
    method: str
    weights: dict[str, float]
    rank: int
    density: float | None
    seed: int | None
    relative_error: float
    config: Any = field(repr=False)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(repr=False)

    def delta_weight(self, module: str) -> torch.Tensor:
        """The merged update of `module` (`[out, in]`, float32)."""
        a, b = self.factors[module]
        return b @ a  # [out, R] @ [R, in] -> [out, in]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The factors under the keys PEFT saves in `adapter_model.safetensors` (CPU, contiguous)."""
        state = {}
        for module, (a, b) in self.factors.items():
            state[f"base_model.model.{module}.lora_A.weight"] = a.detach().cpu().contiguous()
            state[f"base_model.model.{module}.lora_B.weight"] = b.detach().cpu().contiguous()
        return state


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


def check_method(method: str, rank: int | None, density: float | None) -> None:
    """Refuse an unknown method, or a rank or density that the method does not take (`ConfigError`)."""
    if method not in METHODS:
        hint = ""
        if method in ("linear", "cat"):
            hint = (
                " (PEFT's 'linear' sums the A and the B factors separately, which is not a sum of weight updates; "
                "'sum' is the exact weighted sum that PEFT's 'cat' computes)"
            )
        raise ConfigError(f"unknown merge method {method!r}; choose one of {list(METHODS)}{hint}")
    if rank is not None:
        if method == "sum":
            raise ConfigError("method 'sum' is exact and its rank is the sum of the input ranks; use 'svd' to set one")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ConfigError(f"rank must be a positive integer, got {rank!r}")
    if method in ("ties", "dare_linear", "dare_ties"):
        if density is None or not 0.0 < density <= 1.0:
            raise ConfigError(f"method {method!r} needs a density in (0, 1], got {density!r}")
    elif density is not None:
        raise ConfigError(f"density applies to ties, dare_linear and dare_ties, not to {method!r}")


def _check_weights(names: Sequence[str], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(names)
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise ConfigError(f"{len(weights)} weight(s) {weights} for {len(names)} adapter(s) {list(names)}")
    if not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"weights must be finite numbers, got {weights}")
    return weights


def _check_out_dir(out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder; choose a new output folder")
    return out


def _read_config(name: str, path: str | os.PathLike):
    """The adapter's `LoraConfig`, after refusing what cannot be merged as `B @ A * s` on a linear layer."""
    from peft import PeftConfig, PeftType

    if not _NAME.fullmatch(name) or name == MERGED:
        raise ConfigError(
            f"adapter name {name!r}: use letters, digits, '_' and '-', starting with a letter, and not {MERGED!r}"
        )
    folder = Path(path)
    for file in ADAPTER_FILES:
        if not (folder / file).is_file():
            raise ConfigError(f"adapter {name!r}: {folder / file} not found (a PEFT adapter folder is expected)")
    where = f"adapter {name!r} ({folder})"
    try:
        config = PeftConfig.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"{where}: unreadable adapter_config.json: {e}") from e
    if config.peft_type != PeftType.LORA:
        raise ConfigError(f"{where} is a {config.peft_type} adapter; only LoRA adapters are merged")
    refusals = {
        "it trains biases (bias != 'none'); a trained bias is not a weight update": config.bias != "none",
        "it has a LoRA bias (lora_bias=True)": config.lora_bias,
        "it trains whole modules (modules_to_save), which replace weights instead of updating them": bool(
            config.modules_to_save
        ),
        "it trains token embeddings (trainable_token_indices)": bool(config.trainable_token_indices),
        "it targets parameters (target_parameters), not linear layers": bool(config.target_parameters),
        "it replicates layers (layer_replication)": bool(config.layer_replication),
        f"its init_lora_weights={config.init_lora_weights!r} rewrote the base weights during training": isinstance(
            config.init_lora_weights, str
        )
        and config.init_lora_weights.lower().startswith(_BASE_REWRITING_INITS),
    }
    for reason, refused in refusals.items():
        if refused:
            raise ConfigError(f"{where} cannot be merged: {reason}")
    return config


def _check_same_base(configs: Mapping[str, Any]) -> None:
    # Each adapter against the given base is `check_adapter_base`'s job; here, the adapters against each other.
    from midalign.modeling import model_id

    recorded = {name: c.base_model_name_or_path for name, c in configs.items() if c.base_model_name_or_path}
    if len({model_id(b) for b in recorded.values()}) > 1:
        raise ConfigError(
            f"the adapters were trained on different base models: {recorded}. If these name the same model, "
            "set base_model_name_or_path to one name in each adapter_config.json"
        )


def load_adapters(
    base,
    adapters: Mapping[str, str | os.PathLike],
    *,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = None,
):
    """Load the base model and put each adapter on it under its name, after checking that they can be merged.

    Args:
        base: the base model's hub id or folder, or the model itself (it is wrapped, not copied).
        adapters: name -> local PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`).
        dtype: the base model's dtype when it is loaded here (see `midalign.modeling.load_model`).
        device: move the base model there first (a model object too; default: where it is).

    Returns:
        A `PeftModel` holding every adapter under its name.

    Raises:
        ConfigError: a missing or unsupported adapter (see the module docstring), adapters of different base
            models, or an adapter whose modules or shapes do not fit the base model.
    """
    from peft import PeftModel
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    from midalign.modeling import check_adapter_base, check_adapter_matches, load_model, quiet_peft_wrap

    if not adapters:
        raise ConfigError("no adapter to merge")
    configs = {name: _read_config(name, path) for name, path in adapters.items()}
    _check_same_base(configs)
    if isinstance(base, str | os.PathLike):  # before the model loads
        for name, path in adapters.items():
            check_adapter_base(str(base), configs[name], f"adapter {name!r} ({path})")
    model = load_model(base, dtype=dtype) if isinstance(base, str | os.PathLike) else base
    if device is not None:
        model = model.to(device)
    peft_model = None
    try:
        for name, path in adapters.items():
            check_adapter_matches(model, configs[name], f"adapter {name!r} ({path})")
            try:
                if peft_model is None:
                    with quiet_peft_wrap():
                        peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
                else:
                    peft_model.load_adapter(str(path), adapter_name=name)
            except (RuntimeError, ValueError, KeyError) as e:
                raise ConfigError(f"adapter {name!r} ({path}) does not fit the base model: {e}") from e
        for module_name, module in peft_model.base_model.model.named_modules():
            if not isinstance(module, LoraLayer):
                continue
            for name in adapters:
                if name not in module.r:
                    continue
                if not isinstance(module, LoraLinear):
                    raise ConfigError(
                        f"adapter {name!r}: LoRA on {module_name} ({type(module).__name__}); only linear layers "
                        "are merged"
                    )
                if name in module.lora_variant:
                    variant = type(module.lora_variant[name]).__name__
                    raise ConfigError(
                        f"adapter {name!r} cannot be merged: it is a LoRA variant ({variant}, e.g. DoRA) whose "
                        "update is not B @ A * scaling, so it is not linear in the weights"
                    )
    except BaseException:
        if peft_model is not None:
            peft_model.unload()  # a model object given as `base` comes back without LoRA layers
        raise
    return peft_model


def _lora_layers(model, names: Sequence[str]) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    layers = {
        module_name: module
        for module_name, module in model.base_model.model.named_modules()
        if isinstance(module, LoraLayer) and any(name in module.r for name in names)
    }
    if not layers:
        raise ConfigError(f"adapters {list(names)} have no LoRA layer")
    return layers


def _truncate(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int):
    """Factors of the best rank-`rank` approximation of `u @ diag(s) @ vh`, the singular values split evenly."""
    keep = min(rank, s.numel())
    root = s[:keep].sqrt()
    b = u[:, :keep] * root  # [out, k] * [k] -> [out, k]
    a = root[:, None] * vh[:keep]  # [k, 1] * [k, in] -> [k, in]
    return a, b, s[keep:].square().sum().item(), s.square().sum().item()


def _svd_of_product(b: torch.Tensor, a: torch.Tensor):
    """SVD of `b @ a` (`[out, K] @ [K, in]`) through two QRs, without forming or decomposing the `[out, in]` matrix."""
    qb, rb = torch.linalg.qr(b)  # [out, m1], [m1, K]
    qa, ra = torch.linalg.qr(a.T)  # [in, m2], [m2, K]
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)  # of the small [m1, m2] core
    return qb @ u, s, vh @ qa.T  # [out, k], [k], [k, in]


def _pad(a: torch.Tensor, b: torch.Tensor, rank: int):
    """Zero rows of A and columns of B up to `rank`: the update `b @ a` is unchanged."""
    a_pad = a.new_zeros(rank, a.shape[1])
    a_pad[: a.shape[0]] = a
    b_pad = b.new_zeros(b.shape[0], rank)
    b_pad[:, : b.shape[1]] = b
    return a_pad, b_pad


def add_merged_adapter(
    model,
    weights: Mapping[str, float],
    *,
    method: str = "sum",
    rank: int | None = None,
    density: float | None = None,
    seed: int = 0,
    adapter_name: str = MERGED,
) -> MergeResult:
    """Merge adapters that are loaded on `model` into a new adapter on it, and make that one active.

    Args:
        model: a `PeftModel` holding the input adapters (see `load_adapters`).
        weights: input adapter name -> weight, e.g. `{"task": 1.0, "align": 0.5}`.
        method: `sum` (exact), `svd`, `ties`, `dare_linear` or `dare_ties` (see the module docstring).
        rank: `svd`, `ties`, `dare_*`: rank of the merged adapter (default: the largest input rank).
        density: `ties`, `dare_*`: fraction of each update's entries kept, in (0, 1].
        seed: `dare_*`: seed of the random drop, so a merge can be repeated.
        adapter_name: the merged adapter's name on `model`.

    Returns:
        A `MergeResult`.

    Raises:
        ConfigError: an unknown method, a rank or density the method does not take, an adapter `model` does
            not hold, or `adapter_name` already taken.
    """
    from peft import LoraConfig
    from peft.utils import merge_utils

    check_method(method, rank, density)
    names = list(weights)
    _check_weights(names, list(weights.values()))
    missing = [name for name in names if name not in model.peft_config]
    if missing or not names:
        raise ConfigError(f"adapters {missing or names} are not loaded; the model holds {list(model.peft_config)}")
    if adapter_name in model.peft_config:
        raise ConfigError(f"the model already has an adapter named {adapter_name!r}")
    layers = _lora_layers(model, names)
    if rank is None and method != "sum":
        rank = max(layer.r[name] for layer in layers.values() for name in names if name in layer.r)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    lost = total = 0.0
    # DARE drops entries at random: a forked, seeded RNG makes the merge repeatable and leaves the caller's RNG alone.
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for module_name, layer in layers.items():
            present = [name for name in names if name in layer.r]
            # Each input's weight and its own scaling (rank_pattern, alpha_pattern, rsLoRA) are folded into A.
            a_cat = torch.cat([weights[n] * layer.scaling[n] * layer.lora_A[n].weight.float() for n in present])
            b_cat = torch.cat([layer.lora_B[n].weight.float() for n in present], dim=1)  # [out, sum r]
            if method == "sum":
                factors[module_name] = (a_cat, b_cat)
                continue
            if method == "svd":
                u, s, vh = _svd_of_product(b_cat, a_cat)
            else:
                zeros = b_cat.new_zeros(b_cat.shape[0], a_cat.shape[1])  # a module an adapter leaves alone
                deltas = [
                    layer.scaling[n] * layer.lora_B[n].weight.float() @ layer.lora_A[n].weight.float()
                    if n in layer.r
                    else zeros
                    for n in names
                ]
                merge = getattr(merge_utils, method)  # merge_utils.ties / dare_linear / dare_ties
                w = torch.tensor([weights[n] for n in names], device=b_cat.device)
                u, s, vh = torch.linalg.svd(merge(deltas, w, density), full_matrices=False)
            a, b, module_lost, module_total = _truncate(u, s, vh, rank)
            factors[module_name] = (a, b)
            lost, total = lost + module_lost, total + module_total
    if method == "sum":
        rank = max(a.shape[0] for a, _ in factors.values())
    factors = {module_name: _pad(a, b, rank) for module_name, (a, b) in factors.items()}
    first = model.peft_config[names[0]]
    config = LoraConfig(
        task_type=first.task_type,
        base_model_name_or_path=first.base_model_name_or_path or model.get_base_model().name_or_path or None,
        revision=first.revision,
        r=rank,
        lora_alpha=rank,  # scaling 1: every weight and scaling is already in the factors
        target_modules=sorted(factors),  # exact module names: no layer is added or lost
    )
    model.add_adapter(adapter_name, config)
    modules = model.base_model.model
    for module_name, (a, b) in factors.items():
        layer = modules.get_submodule(module_name)
        layer.lora_A[adapter_name].weight.data.copy_(a)
        layer.lora_B[adapter_name].weight.data.copy_(b)
    model.set_adapter(adapter_name)
    return MergeResult(
        adapter_name=adapter_name,
        method=method,
        weights=dict(weights),
        rank=rank,
        density=density,
        seed=seed if method.startswith("dare") else None,
        relative_error=math.sqrt(lost / total) if total > 0 else 0.0,
        config=config,
        factors=factors,
    )


def merged_model(
    base,
    adapters: Mapping[str, str | os.PathLike],
    weights: Sequence[float] | None = None,
    *,
    method: str = "sum",
    rank: int | None = None,
    density: float | None = None,
    seed: int = 0,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = None,
):
    """A `PeftModel` with the input adapters and their merge (`merged`, active), in memory, e.g. to evaluate.

    `model.set_adapter("task")` switches to an input adapter, `model.set_adapter("merged")` back. Arguments
    as in `merge_adapters`.
    """
    weights = _check_weights(list(adapters), weights)
    check_method(method, rank, density)
    model = load_adapters(base, adapters, dtype=dtype, device=device)
    add_merged_adapter(
        model, dict(zip(adapters, weights, strict=True)), method=method, rank=rank, density=density, seed=seed
    )
    return model


def _check_sweep(sweep: Sweep, names: Sequence[str]):
    from midalign.evaluation.loaders import normalize_example
    from midalign.evaluation.runner import TABLE_METRICS, check_score_options
    from midalign.evaluation.tables import language_groups

    check_score_options(sweep.task, None, None, False)
    if len(names) < 2:
        raise ConfigError("a sweep varies the last adapter's weight next to the others: give at least two adapters")
    values = [float(v) for v in sweep.values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"sweep values must be one or more finite numbers, got {list(sweep.values)}")
    if len({f"{v:g}" for v in values}) != len(values):
        raise ConfigError(f"sweep values repeat: {values}")
    metric = sweep.metric or TABLE_METRICS[sweep.task][0]
    if metric not in TABLE_METRICS[sweep.task]:
        raise ConfigError(f"sweep metric {metric!r}: choose one of {list(TABLE_METRICS[sweep.task])}")
    examples = [normalize_example(e, sweep.task, path=f"sweep example #{i}") for i, e in enumerate(sweep.examples)]
    if not examples:
        raise ConfigError("the sweep has no examples")
    languages = list(dict.fromkeys(e["lang"] for e in examples))
    language_groups(languages, sweep.supervised, sweep.transfer)  # refuses unknown languages before generating
    return values, metric, examples


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
    from midalign.evaluation.runner import evaluate
    from midalign.evaluation.tables import language_table

    check_method(method, rank, density)
    values, metric, examples = _check_sweep(sweep, list(weights))
    swept = list(weights)[-1]
    scores = {}
    for value in values:
        label = f"{swept}={value:g}"
        add_merged_adapter(model, {**weights, swept: value}, method=method, rank=rank, density=density, seed=seed)
        try:
            result = evaluate(
                model,
                tokenizer,
                examples,
                sweep.task,
                batch_size=sweep.batch_size,
                max_new_tokens=sweep.max_new_tokens,
                chat_template=sweep.chat_template,
                progress=progress,
                desc=label,
            )
        finally:
            model.set_adapter(swept)  # PEFT warns when the active adapter is deleted
            model.delete_adapter(MERGED)
        scores[label] = result.scores
    table = language_table(scores, metric, supervised=sweep.supervised, transfer=sweep.transfer)
    criterion = "transfer" if table.transfer else "all"
    averages = [table.averages(label)[criterion] for label in scores]
    best = values[averages.index(max(averages))]  # the first of equal scores
    return SweepResult(swept, tuple(values), metric, criterion, table, best)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _recipe(result: MergeResult, adapters: Mapping[str, str | os.PathLike], full: bool, sweep) -> dict[str, Any]:
    from midalign import __version__

    recipe = {
        "midalign_version": __version__,
        "method": result.method,
        # The stored update equals the weighted sum of the inputs' updates (to float precision).
        "exact_weighted_sum": result.method in ("sum", "svd") and result.relative_error == 0.0,
        "relative_error": result.relative_error,
        "weights": result.weights,
        "rank": result.rank,
        "density": result.density,
        "seed": result.seed,
        "base_model_name_or_path": result.config.base_model_name_or_path,
        "inputs": {
            name: {
                "path": str(Path(path).resolve()),
                "sha256": {file: _sha256(Path(path) / file) for file in ADAPTER_FILES},
            }
            for name, path in adapters.items()
        },
        "full_model": "full" if full else None,
    }
    if sweep is not None:
        recipe["sweep"] = sweep.to_dict()
    return recipe


def _write(
    out: Path,
    result: MergeResult,
    adapters: Mapping[str, str | os.PathLike],
    *,
    full_model=None,
    tokenizer=None,
    sweep: SweepResult | None = None,
) -> Path:
    """Write the adapter (and the full model) into a temporary folder next to `out`, then rename it to `out`."""
    from safetensors.torch import save_file

    from midalign.io import apply_umask, write_json_atomic

    out = _check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        apply_umask(tmp, folder=True)
        result.config.save_pretrained(str(tmp))
        save_file(result.state_dict(), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        if full_model is not None:
            state = full_model.state_dict()
            for module_name in result.factors:
                weight = state[f"{module_name}.weight"]
                delta = result.delta_weight(module_name).to(weight.device)
                state[f"{module_name}.weight"] = (weight.float() + delta).to(weight.dtype)  # as merge_and_unload
            full_model.save_pretrained(str(tmp / "full"), state_dict=state)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp / "full"))
        write_json_atomic(tmp / RECIPE, _recipe(result, adapters, full_model is not None, sweep))
        if out.exists():
            out.rmdir()  # empty (checked above); a folder is renamed only onto an empty one
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def merge_adapters(
    base,
    adapters: Mapping[str, str | os.PathLike],
    weights: Sequence[float] | None = None,
    *,
    out_dir: str | os.PathLike,
    method: str = "sum",
    rank: int | None = None,
    density: float | None = None,
    seed: int = 0,
    full: bool = False,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = None,
    sweep: Sweep | None = None,
) -> Path:
    """Merge LoRA adapters of one base model and save the result as a PEFT adapter folder.

    `out_dir` receives `adapter_config.json` and `adapter_model.safetensors` (loads with
    `PeftModel.from_pretrained(base, out_dir)`), `merge_recipe.json` (method, weights, rank, midalign version,
    the inputs' paths and SHA-256 hashes, the sweep's table) and with `full` a merged full model in
    `out_dir/full` (safetensors, plus the base's tokenizer when `base` is a path). Everything is written into a
    temporary folder that is renamed to `out_dir` at the end, so a failed merge leaves nothing behind.

    Args:
        base: the base model's hub id or folder, or the model itself (it comes back unchanged).
        adapters: name -> adapter folder, e.g. `{"task": "runs/sft", "align": "runs/align"}`.
        weights: one weight per adapter, in order (default: all 1.0).
        out_dir: a new (or empty) folder.
        method, rank, density, seed: see `add_merged_adapter`.
        full: also write the base model with the merged update added to its weights.
        dtype, device: see `load_adapters`.
        sweep: try these weights for the last adapter on a dev set first and keep the best (`Sweep`).

    Returns:
        `out_dir`.

    Raises:
        ConfigError: bad arguments or inputs (nothing is written).

    Example:
        >>> merge_adapters("runs/base", {"task": "runs/sft", "align": "runs/align"}, [1.0, 0.5],
        ...                out_dir="runs/merged")  # doctest: +SKIP
    """
    from transformers import AutoTokenizer

    from midalign.modeling import load_tokenizer

    out = _check_out_dir(out_dir)
    weights = _check_weights(list(adapters), weights)
    check_method(method, rank, density)
    is_path = isinstance(base, str | os.PathLike)
    tokenizer = None
    if sweep is not None:
        _check_sweep(sweep, list(adapters))  # bad dev data fails before the model loads
        if sweep.tokenizer is None and not is_path:
            raise ConfigError("a sweep with a model object as base needs Sweep.tokenizer")
        tokenizer = sweep.tokenizer or load_tokenizer(base)
    full_tokenizer = AutoTokenizer.from_pretrained(str(base)) if full and is_path else None
    model = load_adapters(base, adapters, dtype=dtype, device=device)
    try:
        sweep_result = None
        if sweep is not None:
            sweep_result = sweep_weights(
                model,
                tokenizer,
                dict(zip(adapters, weights, strict=True)),
                sweep,
                method=method,
                rank=rank,
                density=density,
                seed=seed,
            )
            weights[-1] = sweep_result.best
        result = add_merged_adapter(
            model, dict(zip(adapters, weights, strict=True)), method=method, rank=rank, density=density, seed=seed
        )
    finally:
        plain = model.unload()  # the LoRA layers come out; the base weights were never changed
    return _write(
        out, result, adapters, full_model=plain if full else None, tokenizer=full_tokenizer, sweep=sweep_result
    )
