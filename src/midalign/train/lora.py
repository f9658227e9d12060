"""What LoRA adapts: a warning for named targets that miss blocks, and the record of what was trained."""

from __future__ import annotations

import logging

from torch import nn

from midalign.errors import ConfigError
from midalign.layers import decoder_layers, unwrap_model
from midalign.train.config import ALL_LINEAR

logger = logging.getLogger(__name__)


def _linear_names(block: nn.Module) -> set[str]:
    """Leaf names of the linear layers inside one decoder block (`q_proj`, `qkv_proj`, ...), LoRA-wrapped or not."""
    names = set()
    for name, module in block.named_modules():
        if isinstance(module, nn.Linear) and not any(part.startswith("lora_") for part in name.split(".")):
            names.add(name.split(".")[-1])
    names -= {"base_layer"}  # PEFT keeps the original linear as `<target>.base_layer`
    return names


def _adapted_names(block: nn.Module) -> set[str]:
    return {name.split(".")[-1] for name, module in block.named_modules() if hasattr(module, "lora_A")}


def check_lora_targets(model: nn.Module, targets) -> None:
    """Refuse named LoRA targets that name no linear layer of the model's blocks at all, listing the names there
    are (PEFT's own error says only that they were not found)."""
    if isinstance(targets, str) or not targets:  # `all-linear` or a regular expression: PEFT resolves it
        return
    present = set().union(*(_linear_names(block) for block in decoder_layers(model)))
    missing = sorted(t for t in targets if t not in present)
    if missing and len(missing) == len(set(targets)):
        raise ConfigError(
            f"lora_target_modules {missing} name no linear layer of {type(unwrap_model(model)).__name__}'s blocks; "
            f"they have {sorted(present)}. Use {ALL_LINEAR} to adapt every one"
        )


def check_lora_layers(model: nn.Module, layers) -> None:
    """Refuse LoRA block numbers (`lora_layers`, PEFT's `layers_to_transform`) that name no block of `model`
    (PEFT's own error names neither the numbers nor the depth)."""
    layers = [layers] if isinstance(layers, int) else layers or []
    count = len(decoder_layers(model))
    outside = sorted({i for i in layers if not 0 <= i < count})
    if outside:
        raise ConfigError(
            f"--lora_layers {outside} name no block: {type(unwrap_model(model)).__name__} has {count} blocks, "
            f"numbered 0-{count - 1}"
        )


def block_linear_names(model: nn.Module, layers: list[int]) -> list[str]:
    """The names of the linear layers in the given blocks: `all-linear` for a LoRA restricted to them."""
    check_lora_layers(model, layers)
    blocks = decoder_layers(model)
    return sorted(set().union(*(_linear_names(blocks[i]) for i in layers)))


def check_alignment_trains(model: nn.Module, layer: int) -> None:
    """Refuse an alignment layer with no trainable parameter at or below it (the embeddings, blocks 1..layer):
    the alignment loss would have no gradient, and the first step would fail inside PyTorch."""
    below = [model.get_input_embeddings(), *decoder_layers(model)[:layer]]
    if not any(p.requires_grad for module in below for p in module.parameters()):
        raise ConfigError(
            f"align_layer {layer} has no trainable parameter at or below it (0 is the embedding output, below every "
            "LoRA adapter; LoRA on blocks above it gets no gradient from the alignment loss). Adapt a block at or "
            "below it (--lora_layers counts blocks from 0), choose a higher --align_layer, or finetuning: full"
        )


def warn_unmatched_lora_targets(model: nn.Module, targets: list[str], layers: list[int] | None) -> list[str]:
    """Warn for each named LoRA target that is not a linear layer of some block that should be adapted.

    A name that one architecture uses and another does not (Llama's `q_proj` against Phi-3's fused `qkv_proj`)
    is otherwise skipped without a word, and part of the model is never trained. Returns the warnings.
    """
    if list(targets) == [ALL_LINEAR]:
        return []
    blocks = decoder_layers(model)
    chosen = range(len(blocks)) if layers is None else layers
    warnings = []
    for target in targets:
        missing = [i for i in chosen if target not in _adapted_names(blocks[i])]
        if missing:
            available = sorted(_linear_names(blocks[missing[0]]))
            span = f"blocks {missing[0]}-{missing[-1]}" if len(missing) > 1 else f"block {missing[0]}"
            warnings.append(
                f"lora_target_modules: {target!r} matches no linear layer in {len(missing)} of {len(chosen)} blocks "
                f"({span}), which get no adapter there; their linear layers are {available}. Use {ALL_LINEAR} to "
                "adapt every one"
            )
    for text in warnings:
        logger.warning("midalign: %s", text)
    return warnings


def trained_parameters(model: nn.Module) -> dict:
    """The fine-tuning that actually ran, for `midalign_config.json`: the adapter's settings, or full."""
    peft_config = getattr(model, "peft_config", None) or getattr(unwrap_model(model), "peft_config", None)
    if not peft_config:
        return {"finetuning": "full", "lora_r": None, "lora_alpha": None, "lora_dropout": None}
    config = next(iter(peft_config.values()))
    targets = config.target_modules
    return {
        "finetuning": "lora",
        "lora_r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "lora_target_modules": sorted(targets) if isinstance(targets, set | list | tuple) else targets,
        "lora_layers": config.layers_to_transform,
    }
