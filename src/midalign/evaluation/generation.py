"""Batched greedy generation with left padding, chat templates, and several adapters on one base model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from midalign.data.batching import pad_batch
from midalign.errors import ConfigError, DataError
from midalign.modeling import adapter_systems as adapter_systems  # the one adapter loop, re-exported here
from midalign.progress import bar as progress_bar


def use_chat_template(tokenizer, chat_template: bool | None) -> bool:
    """Whether prompts go through the tokenizer's chat template.

    Args:
        tokenizer: a Hugging Face tokenizer.
        chat_template: True to require it, False to use raw prompts, None to use it when the
            tokenizer has one.

    Raises:
        ConfigError: True was asked for but the tokenizer has no chat template.
    """
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise ConfigError("a chat template was asked for but the tokenizer has no chat template")
    return has_template if chat_template is None else chat_template


def render_prompt(tokenizer, prompt: str, *, system_prompt: str | None, chat: bool) -> str:
    """The text the model sees: the chat template with a generation prompt, or the raw prompt.

    Without a chat template a system prompt is put on its own line before the prompt.
    """
    if not chat:
        return f"{system_prompt}\n{prompt}" if system_prompt else prompt
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompts(
    tokenizer,
    prompts: Sequence[str],
    *,
    system_prompts: Sequence[str | None] | None = None,
    chat_template: bool | None = None,
) -> list[list[int]]:
    """The token ids the model sees for each prompt (`render_prompt`, then the tokenizer). A rendered chat template
    already holds the special tokens it needs, so those prompts are encoded without adding BOS a second time.

    Raises:
        ConfigError: a chat template was asked for and the tokenizer has none.
        DataError: a prompt encodes to no tokens.
    """
    chat = use_chat_template(tokenizer, chat_template)
    system_prompts = system_prompts if system_prompts is not None else [None] * len(prompts)
    texts = [
        render_prompt(tokenizer, p, system_prompt=s, chat=chat) for p, s in zip(prompts, system_prompts, strict=True)
    ]
    encoded = [tokenizer(text, add_special_tokens=not chat)["input_ids"] for text in texts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise DataError(f"prompt #{i} encodes to no tokens: {prompts[i]!r}")
    return encoded


def _eos_ids(model, tokenizer) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = set([configured] if isinstance(configured, int) else configured or [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    *,
    system_prompts: Sequence[str | None] | None = None,
    chat_template: bool | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    progress: bool = True,
    desc: str = "generate",
) -> list[str]:
    """Greedy outputs for `prompts`, batched with left padding; order is kept.

    Under several processes (`accelerate launch`, `torchrun`) every process must call it with the same prompts:
    each generates every n-th prompt and all receive every output.

    Prompts are sorted by length before batching (less padding; the longest batch runs first, so
    running out of memory shows at once) and the outputs are put back in input order. Each output is
    cut at the first end-of-sequence token (the model's generation config and the tokenizer's) and
    decoded without special tokens.

    Args:
        model: a causal LM (a `PeftModel` works too); put on its device beforehand.
        tokenizer: its tokenizer; the pad token (or, without one, the EOS token) pads.
        prompts: user prompts.
        system_prompts: an optional system prompt per prompt.
        chat_template: see `use_chat_template` and `encode_prompts`.
        batch_size: prompts per `model.generate` call.
        max_new_tokens: generation budget per prompt.
        progress: show a tqdm progress bar.
        desc: the progress bar's label.

    Raises:
        ConfigError: the tokenizer has neither a pad nor an EOS token; `batch_size` or `max_new_tokens` < 1.
        DataError: a prompt encodes to no tokens.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    if max_new_tokens < 1:  # transformers would refuse it only inside `generate`, after the model is placed
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    from midalign.modeling import check_tokenizer_fits

    check_tokenizer_fits(model, tokenizer, "generate")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ConfigError("the tokenizer has neither a pad nor an EOS token to pad with")
    encoded = encode_prompts(tokenizer, prompts, system_prompts=system_prompts, chat_template=chat_template)
    eos_ids = _eos_ids(model, tokenizer)
    device = next(model.parameters()).device
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    # Data parallel under `accelerate launch` / `torchrun`: each process takes every n-th prompt of the
    # length-sorted order (so every process gets as many long prompts as short ones), then all gather the outputs.
    state = _process_state()
    order = order[state.process_index :: state.num_processes]
    outputs: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        shown = progress and state.is_main_process
        with progress_bar(total=len(order), desc=desc, disable=not shown, unit="ex") as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                # Left padding: every prompt ends at the same column, so new tokens start at `width`.
                input_ids = pad_batch([encoded[i] for i in batch], pad_id, side="left")  # [B, width]
                attention_mask = pad_batch([[1] * len(encoded[i]) for i in batch], 0, side="left")
                width = input_ids.shape[1]
                generated = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=pad_id,
                    eos_token_id=eos_ids or None,
                )
                for i, row in zip(batch, generated[:, width:].tolist(), strict=True):  # [B, width + new] -> [B, new]
                    end = next((k for k, token in enumerate(row) if token in eos_ids), len(row))
                    outputs[i] = tokenizer.decode(row[:end], skip_special_tokens=True)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        for i, text in gather_object([(i, outputs[i]) for i in order]):
            outputs[i] = text
    return outputs


def _process_state():
    """Accelerate's view of the processes: one, unless launched with `accelerate launch` or `torchrun`."""
    from accelerate import PartialState

    return PartialState()
