"""`merge_adapters`: load, (sweep,) merge, and write the merged adapter with its recipe into a new folder.

The folder is written as a whole: everything goes into a temporary folder next to it that is renamed at the
end, so a failed merge leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from midalign.errors import ConfigError
from midalign.merging.adapters import ADAPTER_FILES, load_adapters
from midalign.merging.combine import MergeResult, add_merged_adapter, check_method, check_weights
from midalign.merging.sweep import Sweep, SweepResult, check_sweep, sweep_weights

RECIPE = "merge_recipe.json"
SWEEP_PLOT = "sweep.png"  # the sweep's scores per language against the weight


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
    progress: bool = False,
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
        sweep: try these weights for the last adapter on a dev set first and keep the best (`Sweep`); its chart
            goes to `out_dir/sweep.png`.
        progress: progress bars for the sweep (one per weight tried, and the generation within it).

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

    out = check_out_dir(out_dir)
    weights = check_weights(list(adapters), weights)
    check_method(method, rank, density)
    is_path = isinstance(base, str | os.PathLike)
    tokenizer = None
    if sweep is not None:
        check_sweep(sweep, list(adapters))  # bad dev data fails before the model loads
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
                progress=progress,
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


def check_out_dir(out_dir: str | os.PathLike, what: str = "output folder") -> Path:
    """`out_dir` if a merge can be written there: a new or empty folder, not a file nor under one (`ConfigError`
    naming `what`, e.g. the flag)."""
    from midalign.files import check_output_folder

    out = check_output_folder(out_dir, what)  # a file, or under one: said as such
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{what} {out} already exists and is not empty; choose a new output folder")
    return out


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

    from midalign.files import apply_umask_tree, write_json_atomic

    out = check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
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
        if sweep is not None:
            (tmp / SWEEP_PLOT).write_bytes(sweep.plot())
        apply_umask_tree(tmp)  # mkdtemp and safetensors' save_file make everything 0700 / 0600
        if out.exists():
            out.rmdir()  # empty (checked above); a folder is renamed only onto an empty one
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
