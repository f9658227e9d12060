"""Read, check and load the input adapters of a merge onto their base model."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from midalign.errors import ConfigError

MERGED = "merged"  # name of the merged adapter on the in-memory model
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# init_lora_weights values whose training rewrote the base weights (residual / quantised base), so the saved
# factors are not an update of the original base.
_BASE_REWRITING_INITS = ("pissa", "olora", "corda", "loftq")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def read_config(name: str, path: str | os.PathLike):
    """The adapter's `LoraConfig`, after refusing what cannot be merged as `B @ A * s` on a linear layer.

    The folder and the file are read by `midalign.modeling.read_adapter_config` (safetensors only); the
    refusals here are what a merge needs on top of that.
    """
    from peft import PeftType

    from midalign.modeling import read_adapter_config

    if not _NAME.fullmatch(name) or name == MERGED:
        raise ConfigError(
            f"adapter name {name!r}: use letters, digits, '_' and '-', starting with a letter, and not {MERGED!r}"
        )
    try:
        config = read_adapter_config(path)
    except ConfigError as e:
        raise ConfigError(f"adapter {name!r}: {e}") from e
    where = f"adapter {name!r} ({path})"
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
        ConfigError: a missing or unsupported adapter (see `midalign.merging`), adapters of different base
            models, or an adapter whose modules or shapes do not fit the base model.
    """
    from peft import PeftModel
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer

    from midalign.modeling import check_adapter_base, check_adapter_matches, load_model, quiet_peft_wrap

    if not adapters:
        raise ConfigError("no adapter to merge")
    configs = {name: read_config(name, path) for name, path in adapters.items()}
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
            check_adapter_matches(model, configs[name], f"adapter {name!r} ({path})", adapter=path)
            try:
                if peft_model is None:
                    with quiet_peft_wrap():
                        peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
                else:
                    peft_model.load_adapter(str(path), adapter_name=name)
            except (RuntimeError, ValueError, KeyError) as e:
                reason = str(e).strip().split("\n", 1)[0]  # PEFT lists every mismatched tensor; the first says it
                raise ConfigError(f"adapter {name!r} ({path}) does not fit the base model: {reason}") from e
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


def lora_layers(model, names) -> dict[str, Any]:
    """Module name -> LoRA layer, for every layer that holds at least one of the adapters `names`."""
    from peft.tuners.lora import LoraLayer

    layers = {
        module_name: module
        for module_name, module in model.base_model.model.named_modules()
        if isinstance(module, LoraLayer) and any(name in module.r for name in names)
    }
    if not layers:
        raise ConfigError(f"adapters {list(names)} have no LoRA layer")
    return layers
