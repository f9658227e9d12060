"""`midalign merge`: exact weighted sums of LoRA updates, SVD / TIES / DARE, refusals, the CLI and the sweep.

The inputs have non-zero B (`init_lora_weights=False`) and differ in everything PEFT's own merging trips on:
rank (4 vs 2/3), target modules (all projections vs q, v), layers (all vs 1-2), `rank_pattern`,
`alpha_pattern` and rsLoRA. References are computed from the saved safetensors with the scaling worked
out by hand, not through the code under test.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_model, make_tokenizer
from peft import IA3Config, LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from midalign.cli import main
from midalign.errors import ConfigError
from midalign.evaluation.runner import EvalResult
from midalign.merging import (
    RECIPE,
    Sweep,
    add_merged_adapter,
    load_adapters,
    merge_adapters,
    merged_model,
    sweep_weights,
)

ROOT = Path(__file__).resolve().parents[1]
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TASK = dict(r=4, lora_alpha=8, target_modules=ALL)
ALIGN = dict(
    r=2,
    lora_alpha=4,
    target_modules=["q_proj", "v_proj"],
    layers_to_transform=[1, 2],
    use_rslora=True,
    rank_pattern={"v_proj": 3},
    alpha_pattern={"q_proj": 5},
)
TEXT = "the cat sat on the mat"

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # PEFT's notes on adapters and density 1


def make_adapter(base_dir: Path, out: Path, *, seed: int = 0, **lora) -> Path:
    """A LoRA adapter with random A and B (B non-zero), saved as a PEFT adapter folder."""
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, **lora))
    peft_model.save_pretrained(out)
    return out


def edited(src: Path, dst: Path, **changes) -> Path:
    """A copy of an adapter folder with fields of its adapter_config.json changed."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    config.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(config))
    return dst


def save_base(path: Path, arch: str, **kw) -> Path:
    make_model(arch, **kw).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def world(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"merge-{request.param}")
    base = save_base(root / "base", request.param)
    return {
        "base": base,
        "task": make_adapter(base, root / "task", seed=1, **TASK),
        "align": make_adapter(base, root / "align", seed=2, **ALIGN),
    }


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-llama")
    base = save_base(root / "base", "llama")
    return {
        "root": root,
        "base": base,
        "task": make_adapter(base, root / "task", seed=1, **TASK),
        "align": make_adapter(base, root / "align", seed=2, **ALIGN),
    }


def scaling(config: dict, module: str, r: int) -> float:
    """PEFT's scaling for one module, by hand: alpha (or its pattern) over r, or over sqrt(r) under rsLoRA."""
    alpha = next((a for k, a in config["alpha_pattern"].items() if module.endswith(k)), config["lora_alpha"])
    return alpha / (math.sqrt(r) if config["use_rslora"] else r)


def updates(adapter: Path) -> dict[str, torch.Tensor]:
    """module -> dW = B @ A * scaling, from the saved files."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    state = load_file(adapter / "adapter_model.safetensors")
    out = {}
    for key, a in state.items():
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = state[key.replace("lora_A", "lora_B")]
            out[module] = b @ a * scaling(config, module, a.shape[0])
    return out


def weighted_sum(adapters: dict[str, Path], weights: dict[str, float]) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for name, path in adapters.items():
        for module, delta in updates(path).items():
            total[module] = total.get(module, 0) + weights[name] * delta
    return total


def merged_updates(out: Path) -> dict[str, torch.Tensor]:
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_alpha"] == config["r"] and not config["use_rslora"] and not config["use_dora"]
    return {m: d / scaling(config, m, config["r"]) for m, d in updates(out).items()}


def rel_error(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    assert set(got) == set(ref)
    return max(((got[m] - ref[m]).norm() / ref[m].norm()).item() for m in ref)


def encoded() -> torch.Tensor:
    return torch.tensor([make_tokenizer()(TEXT)["input_ids"]])


@torch.no_grad()
def logits(model) -> torch.Tensor:
    return model(input_ids=encoded()).logits


@torch.no_grad()
def explicit_logits(base: Path, deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """The base model with `W + dW` written into its weights by hand."""
    model = AutoModelForCausalLM.from_pretrained(base)
    for module, delta in deltas.items():
        model.get_submodule(module).weight += delta
    return logits(model)


@torch.no_grad()
def both_active_logits(world: dict, weights: dict[str, float]) -> torch.Tensor:
    """Both input adapters applied together by PEFT, each scaled by its weight."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world["base"]), world["task"], "task")
    model.load_adapter(world["align"], "align")
    for module in model.modules():
        for name, w in weights.items():
            if isinstance(module, LoraLayer) and name in module.scaling:
                module.scaling[name] *= w
    model.base_model.set_adapter(list(weights))
    return logits(model)


def adapters_of(world: dict) -> dict[str, Path]:
    return {"task": world["task"], "align": world["align"]}


def nothing_written(out: Path) -> bool:
    return not out.exists() and not list(out.parent.glob(f".{out.name}.*"))


# --- exact methods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "rank"), [("sum", None), ("svd", 7)])
def test_exact_methods_store_the_weighted_sum_and_give_the_logits_of_both_adapters(world, tmp_path, method, rank):
    weights = {"task": 1.0, "align": -0.7}
    out = merge_adapters(
        world["base"], adapters_of(world), list(weights.values()), out_dir=tmp_path / "m", method=method, rank=rank
    )
    reference = weighted_sum(adapters_of(world), weights)
    # Union of the modules: task has every projection of every layer, align only q, v of layers 1-2.
    assert len(reference) == 7 * 4
    assert rel_error(merged_updates(out), reference) < 1e-5
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 7  # 4 + 3 where v_proj (rank_pattern) meets the task adapter

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world["base"]), out)
    got = logits(merged)
    torch.testing.assert_close(got, both_active_logits(world, weights), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, explicit_logits(world["base"], reference), atol=1e-5, rtol=1e-5)
    recipe = json.loads((out / RECIPE).read_text())
    assert recipe["exact_weighted_sum"] and recipe["relative_error"] == 0.0


def test_svd_below_the_sum_rank_is_the_best_low_rank_approximation(llama, tmp_path):
    weights = {"task": 1.0, "align": 0.5}
    out = merge_adapters(
        llama["base"], adapters_of(llama), list(weights.values()), out_dir=tmp_path / "m", method="svd", rank=2
    )
    reference = weighted_sum(adapters_of(llama), weights)
    got = merged_updates(out)
    lost = total = 0.0
    for module, delta in reference.items():
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        best = u[:, :2] @ torch.diag(s[:2]) @ vh[:2]  # Eckart-Young: the best rank-2 approximation
        torch.testing.assert_close(got[module], best, atol=1e-5, rtol=1e-4)
        lost, total = lost + s[2:].square().sum().item(), total + s.square().sum().item()
    recipe = json.loads((out / RECIPE).read_text())
    assert not recipe["exact_weighted_sum"] and recipe["rank"] == 2
    assert recipe["relative_error"] == pytest.approx(math.sqrt(lost / total), rel=1e-4)


def test_ties_at_full_rank_stores_peft_ties_of_the_weight_updates(llama):
    from peft.utils.merge_utils import ties

    weights = {"task": 1.0, "align": 0.5}
    model = merged_model(llama["base"], adapters_of(llama), [1.0, 0.5], method="ties", density=0.5, rank=32)
    task, align = updates(llama["task"]), updates(llama["align"])
    for module, layer in model.base_model.model.named_modules():
        if module in task:
            deltas = [task[module], align.get(module, torch.zeros_like(task[module]))]
            expected = ties(deltas, torch.tensor(list(weights.values())), 0.5)
            torch.testing.assert_close(layer.get_delta_weight("merged"), expected, atol=1e-5, rtol=1e-4)


def test_dare_is_seeded_and_dare_linear_at_density_one_is_the_sum(llama):
    adapters = adapters_of(llama)

    def factors(method, density, seed):
        model = load_adapters(llama["base"], adapters)
        return add_merged_adapter(
            model, {"task": 1.0, "align": 0.5}, method=method, rank=7, density=density, seed=seed
        ).factors

    first, again, other = factors("dare_ties", 0.5, 3), factors("dare_ties", 0.5, 3), factors("dare_ties", 0.5, 4)
    assert all(torch.equal(first[m][0], again[m][0]) for m in first)
    assert not all(torch.equal(first[m][0], other[m][0]) for m in first)

    full = factors("dare_linear", 1.0, 0)  # nothing dropped: DARE is the weighted sum, rank 7 holds it exactly
    reference = weighted_sum(adapters, {"task": 1.0, "align": 0.5})
    assert rel_error({m: b @ a for m, (a, b) in full.items()}, reference) < 1e-5


def test_peft_linear_is_not_a_sum_of_updates(llama):
    """Why `linear` is not offered: PEFT sums the A and the B factors, even for two copies of one adapter."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama["base"]), llama["task"], "a")
    model.load_adapter(llama["task"], "b")
    model.add_weighted_adapter(["a", "b"], [1.0, 0.5], "linear", combination_type="linear")
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    want = 1.5 * layer.get_delta_weight("a")
    assert ((layer.get_delta_weight("linear") - want).norm() / want.norm()).item() > 0.5


# --- output ----------------------------------------------------------------------------------------------


def test_save_reload_generate_round_trip_recipe_and_full_model(llama, tmp_path):
    out = merge_adapters(
        llama["base"], adapters_of(llama), [1.0, 0.5], out_dir=tmp_path / "m", full=True, dtype="float32"
    )
    assert {p.name for p in out.iterdir()} == {"adapter_config.json", "adapter_model.safetensors", RECIPE, "full"}
    in_memory = merged_model(llama["base"], adapters_of(llama), [1.0, 0.5])
    assert in_memory.active_adapter == "merged" and {"task", "align", "merged"} <= set(in_memory.peft_config)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama["base"]), out)
    ids = encoded()
    greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        generated = reloaded.generate(input_ids=ids, **greedy)
        assert torch.equal(generated, in_memory.generate(input_ids=ids, **greedy))
    assert generated.shape[1] == ids.shape[1] + 6

    full = AutoModelForCausalLM.from_pretrained(out / "full")
    assert (out / "full" / "model.safetensors").is_file() and (out / "full" / "tokenizer_config.json").is_file()
    torch.testing.assert_close(logits(full), logits(reloaded), atol=1e-5, rtol=1e-5)
    unloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(llama["base"]), out).merge_and_unload()
    for name, tensor in unloaded.state_dict().items():
        torch.testing.assert_close(full.state_dict()[name], tensor)

    recipe = json.loads((out / RECIPE).read_text())
    assert recipe["method"] == "sum" and recipe["weights"] == {"task": 1.0, "align": 0.5}
    assert recipe["rank"] == 7 and recipe["full_model"] == "full" and recipe["midalign_version"]
    assert recipe["base_model_name_or_path"] == str(llama["base"])
    for name in ("task", "align"):
        files = recipe["inputs"][name]["sha256"]
        for file, digest in files.items():
            assert digest == hashlib.sha256((llama[name] / file).read_bytes()).hexdigest()


def test_a_model_object_as_base_comes_back_unchanged(llama, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(llama["base"])
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merge_adapters(base, adapters_of(llama), out_dir=tmp_path / "m", method="svd", full=True)
    after = base.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], v) for k, v in before.items())
    assert not (tmp_path / "m" / "full" / "tokenizer_config.json").exists()  # no tokenizer without a path


def test_a_failed_write_leaves_nothing(llama, tmp_path, monkeypatch):
    import safetensors.torch

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    out = tmp_path / "m"
    with pytest.raises(OSError, match="disk full"):
        merge_adapters(llama["base"], adapters_of(llama), out_dir=out)
    assert nothing_written(out)


# --- refusals --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad(llama):
    """Inputs that must be refused, made once."""
    root, base, task = llama["root"], llama["base"], llama["task"]
    qwen_wide = save_base(root / "qwen-wide", "qwen2", hidden=48)
    (root / "no-weights").mkdir()
    shutil.copy(task / "adapter_config.json", root / "no-weights")
    ia3 = root / "ia3"
    ia3_config = IA3Config(target_modules=["q_proj"], feedforward_modules=[])
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), ia3_config).save_pretrained(ia3)
    broken = shutil.copytree(task, root / "broken")
    (broken / "adapter_config.json").write_text("{not json")
    return {
        "dora": make_adapter(base, root / "dora", r=2, target_modules=["q_proj"], use_dora=True),
        "bias": edited(task, root / "bias", bias="all"),
        "lora_bias": edited(task, root / "lora-bias", lora_bias=True),
        "tokens": edited(task, root / "tokens", trainable_token_indices=[3, 4]),
        "parameters": edited(task, root / "parameters", target_parameters=["mlp.experts"]),
        "replication": edited(task, root / "replication", layer_replication=[[0, 4], [2, 4]]),
        "embedding": make_adapter(base, root / "embedding", r=2, target_modules=["embed_tokens"]),
        "ia3": ia3,
        "modules_to_save": edited(task, root / "mts", modules_to_save=["lm_head"]),
        "pissa": edited(task, root / "pissa", init_lora_weights="pissa"),
        "other-base-name": edited(task, root / "other-name", base_model_name_or_path="meta-llama/Llama-3-8B"),
        "qwen-wide": qwen_wide,
        "task-for-wide": edited(task, root / "task-wide", base_model_name_or_path=str(qwen_wide)),
        "no-weights": root / "no-weights",
        "broken": broken,
    }


REFUSALS = {
    "missing adapter": (
        lambda w, b: {"adapters": {"task": w["task"], "align": w["root"] / "nope"}},
        "no such adapter folder",
    ),
    "no safetensors": (lambda w, b: {"adapters": {"task": w["task"], "x": b["no-weights"]}}, "safetensors"),
    "broken config": (lambda w, b: {"adapters": {"task": w["task"], "x": b["broken"]}}, "unreadable adapter_config"),
    "unknown method": (lambda w, b: {"method": "ties_svd"}, "unknown merge method"),
    "peft linear": (lambda w, b: {"method": "linear"}, "sums the A and the B factors separately"),
    "weights count": (lambda w, b: {"weights": [1.0, 0.5, 0.2]}, r"3 weight\(s\)"),
    "weight not finite": (lambda w, b: {"weights": [1.0, float("nan")]}, "finite"),
    "rank with sum": (lambda w, b: {"rank": 4}, "exact"),
    "rank zero": (lambda w, b: {"method": "svd", "rank": 0}, "positive integer"),
    "ties without density": (lambda w, b: {"method": "ties"}, "needs a density"),
    "density above one": (lambda w, b: {"method": "dare_ties", "density": 1.5}, "needs a density"),
    "density with sum": (lambda w, b: {"density": 0.5}, "density applies"),
    "dora": (lambda w, b: {"adapters": {"task": w["task"], "d": b["dora"]}}, "DoraLinearVariant"),
    "trained bias": (lambda w, b: {"adapters": {"task": w["task"], "b": b["bias"]}}, "trains biases"),
    "lora bias": (lambda w, b: {"adapters": {"task": w["task"], "b": b["lora_bias"]}}, "LoRA bias"),
    "trainable tokens": (lambda w, b: {"adapters": {"t": w["task"], "b": b["tokens"]}}, "token embeddings"),
    "target parameters": (lambda w, b: {"adapters": {"t": w["task"], "b": b["parameters"]}}, "target_parameters"),
    "layer replication": (lambda w, b: {"adapters": {"t": w["task"], "b": b["replication"]}}, "layer_replication"),
    "lora on embeddings": (lambda w, b: {"adapters": {"t": w["task"], "e": b["embedding"]}}, "only linear layers"),
    "not lora": (lambda w, b: {"adapters": {"t": w["task"], "i": b["ia3"]}}, "only LoRA adapters"),
    "modules_to_save": (lambda w, b: {"adapters": {"t": w["task"], "m": b["modules_to_save"]}}, "modules_to_save"),
    "pissa": (lambda w, b: {"adapters": {"t": w["task"], "p": b["pissa"]}}, "rewrote the base weights"),
    "adapters of two bases": (
        lambda w, b: {"adapters": {"t": w["task"], "o": b["other-base-name"]}},
        "different base models",
    ),
    "another base model": (lambda w, b: {"base": b["qwen-wide"]}, "was trained on"),
    "module shapes": (
        lambda w, b: {"base": b["qwen-wide"], "adapters": {"t": b["task-for-wide"]}},
        r"does not fit the model .*: lora_A of model\.layers\.0\..* is 4x64, the model.s \w+ takes 96 inputs",
    ),
    "reserved name": (lambda w, b: {"adapters": {"merged": w["task"]}}, "adapter name"),
    "bad name": (lambda w, b: {"adapters": {"a.b": w["task"]}}, "adapter name"),
    "no adapter": (lambda w, b: {"adapters": {}, "weights": []}, "no adapter"),
    "sweep with one adapter": (
        lambda w, b: {"adapters": {"t": w["task"]}, "weights": [1.0], "sweep": Sweep([0, 1], [])},
        "at least two adapters",
    ),
    "sweep without tokenizer": (
        lambda w, b: {
            "base": make_model("llama"),
            "sweep": Sweep([0, 1], [{"lang": "en", "prompt": "a", "gold": "None"}]),
        },
        "needs Sweep.tokenizer",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_bad_input_is_refused_and_nothing_is_written(case, llama, bad, tmp_path):
    build, message = REFUSALS[case]
    kwargs = {"base": llama["base"], "adapters": adapters_of(llama), "weights": None, **build(llama, bad)}
    out = tmp_path / "m"
    with pytest.raises(ConfigError, match=message):
        merge_adapters(kwargs.pop("base"), kwargs.pop("adapters"), kwargs.pop("weights"), out_dir=out, **kwargs)
    assert nothing_written(out)


def test_an_existing_output_folder_is_refused(llama, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists"):
        merge_adapters(llama["base"], adapters_of(llama), out_dir=tmp_path / "m")
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert (merge_adapters(llama["base"], adapters_of(llama), out_dir=tmp_path / "empty") / RECIPE).is_file()


def test_add_merged_adapter_refuses_unknown_and_taken_names(llama):
    model = merged_model(llama["base"], adapters_of(llama))
    with pytest.raises(ConfigError, match="not loaded"):
        add_merged_adapter(model, {"task": 1.0, "other": 1.0}, adapter_name="again")
    with pytest.raises(ConfigError, match="already has an adapter"):
        add_merged_adapter(model, {"task": 1.0})


# --- sweep -----------------------------------------------------------------------------------------------


def test_sweep_keeps_the_weight_with_the_best_transfer_average(llama, monkeypatch):
    """Scores are faked per weight: supervised peaks at 0, transfer at 0.5; the transfer average decides."""
    model = load_adapters(llama["base"], adapters_of(llama))
    seen = []

    def fake_evaluate(model, tokenizer, examples, task, **kwargs):
        layer = model.base_model.model.model.layers[1].self_attn.q_proj
        assert model.active_adapter == "merged"
        assert "merged" in layer.lora_A
        seen.append((kwargs["desc"], kwargs["max_new_tokens"], kwargs["chat_template"]))
        weight = {"align=0": 0.0, "align=0.5": 0.5, "align=1": 1.0}[kwargs["desc"]]
        return EvalResult([], [], {"en": {"slot_f1": 90 - 10 * weight}, "es": {"slot_f1": 50 - abs(weight - 0.5)}})

    monkeypatch.setattr("midalign.evaluation.runner.evaluate", fake_evaluate)
    examples = [{"lang": "en", "prompt": "a", "gold": "None"}, {"lang": "es", "prompt": "b", "gold": "None"}]
    result = sweep_weights(
        model,
        make_tokenizer(),
        {"task": 1.0, "align": 1.0},
        Sweep([0, 0.5, 1], examples, supervised=["en"], chat_template=False, max_new_tokens=5),
    )
    assert seen == [("align=0", 5, False), ("align=0.5", 5, False), ("align=1", 5, False)]
    assert result.best == 0.5 and result.criterion == "transfer" and result.metric == "slot_f1"
    assert "best: align=0.5 (slot_f1, avg transfer 50.0)" in result.to_markdown()
    assert set(model.peft_config) == {"task", "align"}  # each trial merge is removed

    no_groups = sweep_weights(model, make_tokenizer(), {"task": 1.0, "align": 1.0}, Sweep([0, 1], examples))
    assert no_groups.criterion == "all" and no_groups.best == 0.0  # (90 + 49.5) / 2 beats (80 + 49.5) / 2


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        (Sweep([], [{"lang": "en", "prompt": "a", "gold": "None"}]), "one or more"),
        (Sweep([0.5, 0.50], [{"lang": "en", "prompt": "a", "gold": "None"}]), "repeat"),
        (Sweep([0, 1], [{"lang": "en", "prompt": "a", "gold": "None"}], metric="bleu"), "sweep metric"),
        (Sweep([0, 1], [{"lang": "en", "prompt": "a", "gold": "None"}], supervised=["de"]), "unknown language"),
        (Sweep([0, 1], []), "no examples"),
        (Sweep([0, 1], [{"lang": "en", "prompt": "a", "gold": "None"}], task="qa"), "unknown task"),
    ],
)
def test_bad_sweeps_are_refused_before_loading(sweep, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        merge_adapters("never-loaded", {"t": "x", "a": "y"}, out_dir=tmp_path / "m", sweep=sweep)


# --- CLI -------------------------------------------------------------------------------------------------


def run_cli(argv: list) -> int:
    return main(["merge", *map(str, argv)])


def test_cli_merges_and_reports(llama, tmp_path, capsys):
    out = tmp_path / "m"
    argv = ["--model_name_or_path", llama["base"], "--adapters", f"task={llama['task']}", f"align={llama['align']}"]
    argv += ["--weights", "1.0", "0.25", "--method", "dare_linear", "--density", "0.9", "--rank", "3", "--seed", "7"]
    assert run_cli([*argv, "--output_dir", out, "--full", "--dtype", "float32", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "merged task=1, align=0.25 with dare_linear (rank 3, relative error" in printed and str(out) in printed
    recipe = json.loads((out / RECIPE).read_text())
    assert (recipe["density"], recipe["seed"], recipe["rank"]) == (0.9, 7, 3)
    assert (out / "full" / "model.safetensors").is_file()

    assert run_cli([*argv[:5], "--weights", "1", "--output_dir", tmp_path / "x"]) == 2
    assert "1 weight(s) [1.0] for 2 adapter(s)" in capsys.readouterr().err
    assert run_cli([*argv[:5], "--sweep_data", "dev.jsonl", "--output_dir", tmp_path / "x"]) == 2
    assert "--sweep_data only apply with --sweep" in capsys.readouterr().err
    assert run_cli([*argv[:5], "--sweep", "0", "1", "--output_dir", tmp_path / "x"]) == 2
    assert "--sweep needs --sweep_data" in capsys.readouterr().err
    assert run_cli([*argv[:2], "--adapters", f"a={llama['task']}", f"a={llama['align']}", "--output_dir", out]) == 2
    assert "two adapters share a name" in capsys.readouterr().err
    assert run_cli([*argv[:5], "--weights", "1", "half", "--output_dir", tmp_path / "x"]) == 2
    assert "argument --weights: invalid float value: 'half'" in capsys.readouterr().err
    assert nothing_written(tmp_path / "x")


def test_cli_sweep_generates_scores_and_keeps_the_best(llama, tmp_path, capsys):
    dev = tmp_path / "dev.jsonl"
    rows = [
        {"lang": "en", "prompt": "wake me up at nine", "gold": "time: nine"},
        {"lang": "es", "prompt": "despierta me a las nueve", "gold": "time: nueve"},
        {"lang": "fr", "prompt": "le chat", "gold": "None"},
    ]
    dev.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "m"
    argv = ["--model_name_or_path", llama["base"], "--adapters", f"task={llama['task']}", f"align={llama['align']}"]
    argv += ["--weights", "1", "9", "--sweep", "0", "0.5", "1", "--sweep_data", dev, "--sweep_task", "slot"]
    argv += ["--sweep_metric", "slot_type_f1", "--supervised_languages", "en", "--transfer_languages", "es"]
    argv += ["--chat_template", "off", "--batch_size", "2", "--max_new_tokens", "3", "--device", "cpu"]
    assert run_cli([*argv, "--output_dir", out]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "| language | group | align=0 | align=0.5 | align=1 |" in printed
    sweep = json.loads((out / RECIPE).read_text())["sweep"]
    assert sweep["metric"] == "slot_type_f1" and sweep["criterion"] == "transfer"
    assert sweep["table"]["transfer"] == ["es"] and "fr" in sweep["table"]["languages"]
    averages = {label: a["transfer"] for label, a in sweep["table"]["averages"].items()}
    assert averages[f"align={sweep['best']:g}"] == max(averages.values())
    recipe = json.loads((out / RECIPE).read_text())
    assert recipe["weights"] == {"task": 1.0, "align": sweep["best"]}
    assert re.search(r"best: align=\S+ \(slot_type_f1, avg transfer", printed)
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"chart: {out / 'sweep.png'}" in printed
    assert "merge sweep: weight of 'align'" in captured.err  # the progress bar, one step per weight


def test_sweep_with_a_model_object_uses_the_given_tokenizer(llama, tmp_path):
    base = AutoModelForCausalLM.from_pretrained(llama["base"])
    examples = [{"lang": "en", "prompt": "wake me up", "gold": "None"}, {"lang": "es", "prompt": "a", "gold": "None"}]
    sweep = Sweep([1, 0], examples, tokenizer=make_tokenizer(), max_new_tokens=2, supervised=["en"])
    out = merge_adapters(base, adapters_of(llama), out_dir=tmp_path / "m", sweep=sweep)
    recipe = json.loads((out / RECIPE).read_text())
    assert recipe["sweep"]["values"] == [1.0, 0.0] and recipe["weights"]["align"] == recipe["sweep"]["best"]
    assert recipe["base_model_name_or_path"] == str(llama["base"])


def test_cli_checks_the_output_folder_numbers_and_device_before_loading(llama, tmp_path, capsys, monkeypatch):
    import midalign.merging.adapters

    monkeypatch.setattr(midalign.merging.adapters, "load_adapters", lambda *a, **k: pytest.fail("loaded"))
    afile = tmp_path / "afile"
    afile.write_text("", encoding="utf-8")
    argv = ["--model_name_or_path", llama["base"], "--adapters", f"task={llama['task']}", f"align={llama['align']}"]
    cases = {
        f"--output_dir {afile} is a file, not a folder": ["--output_dir", afile],
        f"--output_dir {afile / 'x'}: {afile} is a file": ["--output_dir", afile / "x"],
        "--max_new_tokens must be at least 1, got 0": ["--output_dir", tmp_path / "m", "--max_new_tokens", "0"],
        "--device 'foo' is not a device": ["--output_dir", tmp_path / "m", "--device", "foo"],
    }
    for message, extra in cases.items():
        assert run_cli([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_a_rank_the_shapes_cannot_hold_is_refused_and_files_keep_the_umask(llama, tmp_path):
    from midalign.files import current_umask

    with pytest.raises(ConfigError, match=r"rank 1000 is more than any module's merged update can have \(32 here"):
        merge_adapters(llama["base"], adapters_of(llama), out_dir=tmp_path / "m", method="ties", density=0.5, rank=1000)
    assert nothing_written(tmp_path / "m")
    out = merge_adapters(llama["base"], adapters_of(llama), out_dir=tmp_path / "ok", method="svd", rank=2)
    expected = 0o666 & ~current_umask()
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()} == dict.fromkeys(
        ["adapter_config.json", "adapter_model.safetensors", "merge_recipe.json"], expected
    )


def test_a_truncated_adapter_is_named_before_loading(llama, tmp_path):
    broken = shutil.copytree(llama["align"], tmp_path / "broken")
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ConfigError, match=rf"{weights} is truncated or not a safetensors file"):
        merge_adapters(llama["base"], {"task": llama["task"], "align": broken}, out_dir=tmp_path / "m")
