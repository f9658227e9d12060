"""The vLLM backend around vLLM itself: vLLM's wheels need a CUDA GPU, so a stand-in `vllm` module records what the
backend asks of it (engine settings, token ids, greedy sampling, one LoRARequest per adapter)."""

from __future__ import annotations

import json
import sys
import types
from typing import ClassVar

import pytest

from midalign.cli import main
from midalign.evaluation.generation import encode_prompts
from midalign.modeling import load_tokenizer


class FakeLLM:
    made: ClassVar[list] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        FakeLLM.made.append(self)

    def generate(self, requests, params, lora_request=None):
        self.calls.append((requests, params, lora_request))
        answer = "time: nine" if lora_request is None else f"{lora_request.lora_name}: {lora_request.lora_int_id}"
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text=answer)]) for _ in requests]


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = lambda name, number, path: types.SimpleNamespace(
        lora_name=name, lora_int_id=number, lora_path=path
    )
    for name, module in {
        "vllm": vllm,
        "vllm.lora": types.ModuleType("vllm.lora"),
        "vllm.lora.request": request,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.made = []
    return FakeLLM


def test_vllm_backend_serves_every_adapter_on_one_engine(fake_vllm, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    from midalign.modeling import load_model

    adapter = tmp_path / "task"
    get_peft_model(load_model(tiny_model_dir), LoraConfig(r=32, target_modules=["q_proj"])).save_pretrained(adapter)
    rows = [{"lang": "en", "prompt": "wake me up at nine", "gold": "time: nine", "system_prompt": "Extract."}]
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    argv = ["evaluate", "--task", "slot", "--backend", "vllm", "--model_name_or_path", str(tiny_model_dir)]
    argv += ["--data", str(data), "--adapters", f"task={adapter}", "--include_base", "--max_new_tokens", "7"]
    argv += ["--vllm_kwargs", '{"gpu_memory_utilization": 0.5}', "--output_dir", str(tmp_path / "out")]
    assert main(argv) == 0
    (engine,) = fake_vllm.made
    assert engine.kwargs == {
        "model": str(tiny_model_dir),
        "enable_lora": True,
        "max_lora_rank": 32,
        "gpu_memory_utilization": 0.5,
    }
    expected = encode_prompts(load_tokenizer(tiny_model_dir), ["wake me up at nine"], system_prompts=["Extract."])
    (base_call, lora_call) = engine.calls
    assert base_call[0] == [{"prompt_token_ids": expected[0]}] and base_call[2] is None
    assert (base_call[1].temperature, base_call[1].max_tokens) == (0.0, 7)
    assert (lora_call[2].lora_name, lora_call[2].lora_int_id, lora_call[2].lora_path) == ("task", 1, str(adapter))
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert set(scores["systems"]) == {"base", "task"}
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions-task.jsonl").read_text().splitlines()]
    assert predictions[0]["prediction"] == "task: 1"


def test_without_vllm_the_backend_says_how_to_get_it(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as if not installed
    data = tmp_path / "dev.jsonl"
    data.write_text('{"lang": "en", "prompt": "a", "gold": "None"}\n', encoding="utf-8")
    argv = ["evaluate", "--task", "slot", "--backend", "vllm", "--model_name_or_path", str(tiny_model_dir)]
    assert main([*argv, "--data", str(data), "--output_dir", str(tmp_path / "o")]) == 2
    assert "pip install 'midalign[vllm]'" in capsys.readouterr().err
