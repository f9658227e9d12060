"""Generation with vLLM, the base model and each LoRA adapter on one engine (`midalign evaluate --backend vllm`).

Optional (`pip install 'midalign[vllm]'`) and **unverified**: vLLM's wheels need a CUDA GPU, no GPU has run this
path yet, and the tests drive it through a stand-in `vllm` module that records what it is asked. What is shared
with the plain backend is exact: prompts are rendered and encoded by `generation.encode_prompts` and handed to vLLM
as token ids (so no BOS is added twice), decoding is greedy, and outputs end at the end-of-sequence token.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from midalign.errors import ConfigError


def generate_systems(
    model_name_or_path: str | os.PathLike,
    tokenizer,
    adapters: Mapping[str, str | os.PathLike],
    prompts: Sequence[str],
    *,
    system_prompts: Sequence[str | None] | None = None,
    include_base: bool = False,
    chat_template: bool | None = None,
    max_new_tokens: int = 128,
    engine_kwargs: Mapping | None = None,
) -> dict[str, list[str]]:
    """`{system: outputs}` for the bare model (when `include_base` or no adapter) and every adapter, in order.

    Args:
        model_name_or_path: the base model, as vLLM loads it.
        tokenizer: its Hugging Face tokenizer (renders and encodes the prompts).
        adapters: name -> PEFT LoRA folder; served as `LoRARequest`s on one engine.
        engine_kwargs: more `vllm.LLM` arguments (`tensor_parallel_size`, `gpu_memory_utilization`, `dtype`, ...).

    Raises:
        ConfigError: vLLM is not installed.
    """
    try:
        import vllm
        from vllm.lora.request import LoRARequest
    except ImportError:
        raise ConfigError(
            "--backend vllm needs vLLM (pip install 'midalign[vllm]'; its wheels need a CUDA GPU)"
        ) from None
    from midalign.evaluation.generation import encode_prompts
    from midalign.modeling import read_adapter_config

    encoded = encode_prompts(tokenizer, prompts, system_prompts=system_prompts, chat_template=chat_template)
    configs = [read_adapter_config(path) for path in adapters.values()]
    ranks = [int(r) for c in configs for r in (c.r, *(c.rank_pattern or {}).values())]
    llm = vllm.LLM(
        model=str(model_name_or_path),
        enable_lora=bool(adapters),
        max_lora_rank=max([16, *ranks]),  # vLLM's smallest setting is 8, and its default 16
        **dict(engine_kwargs or {}),
    )
    params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
    requests = [{"prompt_token_ids": ids} for ids in encoded]
    systems = {}
    if include_base or not adapters:
        systems["base"] = [out.outputs[0].text for out in llm.generate(requests, params)]
    for number, (name, path) in enumerate(adapters.items(), start=1):
        lora = LoRARequest(name, number, str(path))
        systems[name] = [out.outputs[0].text for out in llm.generate(requests, params, lora_request=lora)]
    return systems
