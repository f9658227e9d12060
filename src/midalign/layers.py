"""Decoder blocks of any wrapped model, and the hidden states after block `layer`, with early exit.

Indexing follows Hugging Face `hidden_states`: index 0 is the embedding output (the input of block 1),
index `l` the output of decoder block `l`, before any final norm. Hugging Face replaces the *last* entry,
`hidden_states[L]`, by the final-normed state; here `layer == L` is the block's own output before the norm,
so every index means the same thing.

Early exit truncates `decoder.layers` to the first `layer` blocks for the duration of one forward (restored
in `finally`). The forward then runs to its normal end, through the wrapped module's `__call__` (PEFT, DDP,
FSDP, DeepSpeed all see an ordinary forward), and the state is read by a forward hook on block `layer`.
`config.num_hidden_layers` is never touched.

The causal-LM head is called on no position: `logits_to_keep` gets an empty index tensor, so the head module
runs on a `[B, 0, H]` input and returns `[B, 0, V]` logits without a vocabulary-wide product, while the forward
stays the model's own: every module it calls is called, in its order (DeepSpeed ZeRO-3 prefetches by that order).
The cost above the cut is the final norm. `logits_to_keep=1` would still project one position per sentence, and
on that non-contiguous `[B, 1, H]` slice `F.linear` reads the whole head matrix once per sentence
(benchmarks/RESULTS.md measures it at vocabulary 128k). Llama, Qwen2/3, Mistral, Mixtral, Gemma 1-3 and Phi
take `logits_to_keep`; a model whose `forward` does not runs its head in full.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch
from torch import nn

from midalign.errors import ConfigError, UnsupportedModelError


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip data-parallel wrappers (`.module`) and PEFT wrappers; return the underlying transformers model."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()  # PeftModel -> the transformers model with LoRA layers injected
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module  # DDP / DeepSpeed engine / accelerate wrappers
    return model


def decoder_module(model: nn.Module) -> nn.Module:
    """The module that owns the decoder block list `layers` (e.g. `LlamaModel` inside `LlamaForCausalLM`)."""
    base = unwrap_model(model)
    candidates = []
    if hasattr(base, "get_decoder"):
        with contextlib.suppress(Exception):
            candidates.append(base.get_decoder())
    candidates += [getattr(base, "model", None), base]
    for cand in candidates:
        if isinstance(getattr(cand, "layers", None), nn.ModuleList) and len(cand.layers) > 0:
            return cand
    raise UnsupportedModelError(
        f"{type(base).__name__} does not expose its decoder blocks as a `layers` list; midalign supports "
        "decoder-only AutoModelForCausalLM models such as Llama, Qwen2/3, Mistral, Gemma and Phi-3"
    )


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of `model` (plain, PEFT-wrapped or DDP-wrapped), bottom first."""
    return decoder_module(model).layers


def num_layers(model: nn.Module) -> int:
    """Number of decoder blocks; valid alignment layers are `0..num_layers(model)`."""
    return len(decoder_layers(model))


def resolve_layer(spec: int | float | str, n_layers: int) -> int:
    """Turn a layer spec into a block index in `0..n_layers`.

    - an int is an index (`16`); a negative int counts from the top (`-1` is the last block);
    - a float, or a string with a decimal point, is a fraction of depth (`0.5` is the middle, rounded).

    Raises `ConfigError` when the result is out of range.
    """
    if isinstance(spec, str):
        text = spec.strip()
        try:
            spec = float(text) if "." in text else int(text)
        except ValueError:
            raise ConfigError(f"align_layer {text!r} is neither an index (16, -8) nor a fraction (0.5)") from None
    if isinstance(spec, bool) or not isinstance(spec, int | float):
        raise ConfigError(f"align_layer must be an int index or a float fraction, got {spec!r}")
    if isinstance(spec, float):
        if not 0.0 <= spec <= 1.0:
            raise ConfigError(f"align_layer fraction {spec} must be within [0, 1]")
        return round(spec * n_layers)
    index = spec + n_layers + 1 if spec < 0 else spec  # -1 -> n_layers (the last block's output)
    if not 0 <= index <= n_layers:
        raise ConfigError(
            f"align_layer {spec} is out of range for a model with {n_layers} decoder blocks "
            f"(valid: 0..{n_layers} or -{n_layers + 1}..-1)"
        )
    return index


def _check_layer(layer: int, n_layers: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= n_layers:
        raise ConfigError(
            f"layer {layer!r} is out of range: the model has {n_layers} decoder blocks, so "
            f"hidden states exist for layers 0..{n_layers}"
        )


@contextlib.contextmanager
def truncated_decoder(model: nn.Module, keep: int) -> Iterator[None]:
    """Run only the first `keep` decoder blocks inside the context; the full list is restored on exit."""
    decoder = decoder_module(model)
    full = decoder.layers
    decoder.layers = full[:keep]  # a new ModuleList holding the same block objects
    try:
        yield
    finally:
        decoder.layers = full


def _accepts_kwarg(model: nn.Module, name: str) -> bool:
    try:
        return name in inspect.signature(unwrap_model(model).forward).parameters
    except (TypeError, ValueError):
        return False


def _forward_kwargs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    if _accepts_kwarg(model, "logits_to_keep"):
        # The LM head is not needed: keep no position. (`0` would keep all of them, `1` costs a product per row.)
        kwargs["logits_to_keep"] = torch.empty(0, dtype=torch.long, device=input_ids.device)  # [B, T, H] -> [B, 0, H]
    return kwargs


@contextlib.contextmanager
def captured_states(model: nn.Module, indices) -> Iterator[dict[int, torch.Tensor]]:
    """Record `hidden_states[l]` for each `l` in `indices` during the forward run inside the context.

    `l = 0` is read as the input of block 1 (the embeddings, already scaled for Gemma), `l > 0` as the output of
    block `l`, by hooks on the block objects (so a truncated block list keeps them); removed on exit.
    """
    layers = decoder_layers(model)
    states: dict[int, torch.Tensor] = {}

    def before_first(module, args, kwargs):
        states[0] = args[0] if args else kwargs["hidden_states"]

    def after(index: int):
        def hook(module, args, output):
            states[index] = output[0] if isinstance(output, tuple | list) else output

        return hook

    handles = [
        layers[0].register_forward_pre_hook(before_first, with_kwargs=True)
        if index == 0
        else layers[index - 1].register_forward_hook(after(index))
        for index in indices
    ]
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


def forward_to_layer(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    *,
    early_exit: bool = True,
) -> tuple[torch.Tensor, object]:
    """Like `hidden_states_at`, but also return the model's output object.

    The trainer needs the output too: under DDP every parameter that the forward touched must receive a
    gradient, so the alignment loss adds `0 * logits.sum()` (see `midalign.distributed`). The logits are empty
    (`[B, 0, V]`) but still tied to the final norm and the head, so that zero reaches them.
    """
    n_layers = num_layers(model)
    _check_layer(layer, n_layers)
    # Layer 0 keeps one block so that its input hook fires; every other layer keeps exactly `layer` blocks.
    keep = max(layer, 1) if early_exit else n_layers
    truncate = truncated_decoder(model, keep) if keep < n_layers else contextlib.nullcontext()
    with captured_states(model, [layer]) as states, truncate:
        outputs = model(**_forward_kwargs(model, input_ids, attention_mask))
    if layer not in states:
        raise UnsupportedModelError(f"block {layer} of {type(unwrap_model(model)).__name__} did not run")
    return states[layer], outputs


def hidden_states_at(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    layer: int,
    *,
    early_exit: bool = True,
) -> torch.Tensor:
    """Token states after decoder block `layer` (`0` = embeddings), before any final norm.

    Equal to Hugging Face `output_hidden_states=True` `hidden_states[layer]` for `layer < L`, and to the input
    of the final norm for `layer == L`. Works for plain, PEFT- and DDP-wrapped decoder-only causal LMs, with
    gradient checkpointing (the hook sits outside the checkpointed `forward`).

    Args:
        model: an `AutoModelForCausalLM` (optionally wrapped).
        input_ids: `[B, T]`.
        attention_mask: `[B, T]`.
        layer: block index in `0..L`.
        early_exit: run only blocks `1..layer` (the blocks above are restored afterwards).

    Returns:
        `[B, T, H]` token states, with gradient when grad is enabled.
    """
    hidden, _ = forward_to_layer(model, input_ids, attention_mask, layer, early_exit=early_exit)
    return hidden


def all_hidden_states(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """States after every block in one forward: `[h_0, h_1, ..., h_L]`, each `[B, T, H]`.

    Entry `l` equals `hidden_states_at(model, ..., l)` for every `l`, the top one included (before the final
    norm), so the analysis measures exactly what the alignment loss trains.
    """
    indices = range(num_layers(model) + 1)
    with captured_states(model, indices) as states:
        model(**_forward_kwargs(model, input_ids, attention_mask))
    if len(states) != len(indices):
        raise UnsupportedModelError(f"not every block of {type(unwrap_model(model)).__name__} ran")
    return [states[index] for index in indices]
