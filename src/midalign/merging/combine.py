"""The merge math: a weighted sum, its truncated SVD, or PEFT's TIES / DARE, all on the adapters' weight updates.

Why the factors are combined here and not by PEFT's `add_weighted_adapter`: see `midalign.merging`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from midalign.errors import ConfigError
from midalign.merging.adapters import MERGED, load_adapters, lora_layers

METHODS = ("sum", "svd", "ties", "dare_linear", "dare_ties")


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


def check_weights(names: Sequence[str], weights: Sequence[float] | None) -> list[float]:
    """One finite weight per adapter, as floats (default: all 1.0)."""
    if weights is None:
        return [1.0] * len(names)
    weights = [float(w) for w in weights]
    if len(weights) != len(names):
        raise ConfigError(f"{len(weights)} weight(s) {weights} for {len(names)} adapter(s) {list(names)}")
    if not all(math.isfinite(w) for w in weights):
        raise ConfigError(f"weights must be finite numbers, got {weights}")
    return weights


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


def _largest_rank(layer, present: Sequence[str], method: str) -> int:
    """The rank of the largest update `method` can give this module: svd truncates a product of the inputs'
    factors; TIES / DARE may fill the whole weight."""
    most = min(layer.in_features, layer.out_features)
    return min(most, sum(layer.r[n] for n in present)) if method == "svd" else most


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
        method: `sum` (exact), `svd`, `ties`, `dare_linear` or `dare_ties` (see `midalign.merging`).
        rank: `svd`, `ties`, `dare_*`: rank of the merged adapter (default: the largest input rank).
        density: `ties`, `dare_*`: fraction of each update's entries kept, in (0, 1].
        seed: `dare_*`: seed of the random drop, so a merge can be repeated.
        adapter_name: the merged adapter's name on `model`.

    Returns:
        A `MergeResult`.

    Raises:
        ConfigError: an unknown method, a rank or density the method does not take, a rank larger than any
            module's merged update can have, an adapter `model` does not hold, or `adapter_name` already taken.
    """
    from peft import LoraConfig
    from peft.utils import merge_utils

    check_method(method, rank, density)
    names = list(weights)
    check_weights(names, list(weights.values()))
    missing = [name for name in names if name not in model.peft_config]
    if missing or not names:
        raise ConfigError(f"adapters {missing or names} are not loaded; the model holds {list(model.peft_config)}")
    if adapter_name in model.peft_config:
        raise ConfigError(f"the model already has an adapter named {adapter_name!r}")
    layers = lora_layers(model, names)
    if method != "sum":
        # A larger rank would only pad every module with zeros (a bigger file, the same update).
        most = max(_largest_rank(layer, [n for n in names if n in layer.r], method) for layer in layers.values())
        if rank is None:
            rank = min(most, max(layer.r[name] for layer in layers.values() for name in names if name in layer.r))
        if rank > most:
            raise ConfigError(
                f"rank {rank} is more than any module's merged update can have ({most} here: the smaller side of "
                f"the largest adapted weight{', or the sum of the input ranks' if method == 'svd' else ''}); "
                f"give a rank of at most {most}"
            )
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
    weights = check_weights(list(adapters), weights)
    check_method(method, rank, density)
    model = load_adapters(base, adapters, dtype=dtype, device=device)
    add_merged_adapter(
        model, dict(zip(adapters, weights, strict=True)), method=method, rank=rank, density=density, seed=seed
    )
    return model
