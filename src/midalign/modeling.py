"""Loading base models, tokenizers and adapters (HF hub ids or local paths), safely by default."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from midalign.errors import ConfigError

_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None):
    """Map a dtype name ("auto", "float32", "bfloat16", "float16") to what `from_pretrained` takes."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def load_tokenizer(name_or_path: str | os.PathLike, *, trust_remote_code: bool = False):
    """Load a tokenizer and make sure it can pad (the EOS token is used when it has no pad token)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ConfigError(f"tokenizer of {name_or_path} has neither a pad nor an EOS token")
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str | os.PathLike,
    *,
    dtype: str | torch.dtype | None = "auto",
    trust_remote_code: bool = False,
    adapter: str | os.PathLike | None = None,
):
    """Load an `AutoModelForCausalLM` (safetensors only) and optionally a PEFT adapter on top of it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path),
        dtype=resolve_dtype(dtype),
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    if adapter is not None:
        model = load_adapter(model, adapter)
    return model


def load_adapter(model, adapter: str | os.PathLike, *, adapter_name: str = "default", is_trainable: bool = False):
    """Put the PEFT adapter saved in `adapter` on `model`; refuse an adapter made for another base model."""
    from peft import PeftConfig, PeftModel

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    cfg = PeftConfig.from_pretrained(str(path))
    check_adapter_matches(model, cfg, str(path))
    return PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, is_trainable=is_trainable)


def check_adapter_matches(model, peft_config, where: str) -> None:
    """Refuse an adapter that targets decoder blocks the base model does not have.

    Other mismatches (hidden size, vocabulary) surface as PEFT's own shape errors when the weights load.
    """
    from midalign.layers import decoder_layers

    n_layers = len(decoder_layers(model))
    layers = getattr(peft_config, "layers_to_transform", None)
    if layers is not None:
        wanted = [layers] if isinstance(layers, int) else list(layers)
        if wanted and max(wanted) >= n_layers:
            raise ConfigError(
                f"{where}: adapter targets layer {max(wanted)} but the base model has {n_layers} decoder blocks"
            )
