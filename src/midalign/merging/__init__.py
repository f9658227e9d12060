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

The modules, one job each:
- `adapters`: read, check and load the input adapters onto the base model;
- `combine`: the merge math (`sum`, `svd`, `ties`, `dare_*` on the weight updates);
- `sweep`: try weights of the last adapter on a dev set (through `midalign.evaluation.dev_set`);
- `save`: `merge_adapters`, which writes the merged adapter and its recipe into a new folder atomically.
"""

from midalign.merging.adapters import ADAPTER_FILES, MERGED, load_adapters
from midalign.merging.combine import METHODS, MergeResult, add_merged_adapter, check_method, merged_model
from midalign.merging.save import RECIPE, merge_adapters
from midalign.merging.sweep import Sweep, SweepResult, sweep_weights

__all__ = [
    "ADAPTER_FILES",
    "MERGED",
    "METHODS",
    "RECIPE",
    "MergeResult",
    "Sweep",
    "SweepResult",
    "add_merged_adapter",
    "check_method",
    "load_adapters",
    "merge_adapters",
    "merged_model",
    "sweep_weights",
]
