"""Safe loading: no pickle anywhere (weights through safetensors only), no remote code unless asked, YAML
through a safe loader, and names from users' files or flags can never make midalign write outside its
output folder."""

from __future__ import annotations

import ast
import dataclasses
import json
import pickle
import re
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_model, make_tokenizer
from hypothesis import given, settings
from hypothesis import strategies as st

from midalign.cli import main
from midalign.commands import COMMANDS, parse
from midalign.errors import ConfigError, DataError
from midalign.files import MAX_NAME_LENGTH, _StrictYamlLoader, check_name, read_yaml_file

SRC = Path(__file__).resolve().parents[1] / "src" / "midalign"
# Loads the tiny model the demo itself has just written with save_pretrained (safetensors); not user input.
MODEL_LOADS_ALLOWED_WITHOUT_USE_SAFETENSORS = {"synthetic/probe.py"}
UNPICKLERS = ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal")
UNSAFE_YAML_LOADERS = ("yaml.Loader", "yaml.UnsafeLoader", "yaml.FullLoader")


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(node: ast.AST) -> str:
    """`torch.load` for the call's function, as written."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return ""


def _keyword(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _sources():
    for path in sorted(SRC.rglob("*.py")):
        yield path.relative_to(SRC).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- (a) static scan of src/


def test_source_never_unpickles_or_loads_yaml_unsafely():
    problems = []
    for rel, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(m.split(".")[0] in UNPICKLERS for m in modules):
                    problems.append(f"{rel}:{node.lineno}: imports {modules}")
        for call in _calls(tree):
            name = _name(call.func)
            if name == "torch.load":
                weights_only = _keyword(call, "weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    problems.append(f"{rel}:{call.lineno}: torch.load without weights_only=True")
            if name in ("yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all"):
                problems.append(f"{rel}:{call.lineno}: {name}")
            if name == "yaml.load":
                loader = _keyword(call, "Loader")
                if not (isinstance(loader, ast.Name) and loader.id == "_StrictYamlLoader"):
                    problems.append(f"{rel}:{call.lineno}: yaml.load without the strict safe loader")
            if name.endswith("from_pretrained") and name.split(".")[0].startswith("AutoModel"):
                use_safetensors = _keyword(call, "use_safetensors")
                ok = isinstance(use_safetensors, ast.Constant) and use_safetensors.value is True
                if not ok and rel not in MODEL_LOADS_ALLOWED_WITHOUT_USE_SAFETENSORS:
                    problems.append(f"{rel}:{call.lineno}: {name} without use_safetensors=True")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _name(node) in UNSAFE_YAML_LOADERS:
                problems.append(f"{rel}:{node.lineno}: {_name(node)}")
    assert not problems, "\n".join(problems)
    assert issubclass(_StrictYamlLoader, yaml.SafeLoader)


def test_source_never_defaults_trust_remote_code_to_true():
    problems = []
    for rel, tree in _sources():
        for call in _calls(tree):
            value = _keyword(call, "trust_remote_code")
            if isinstance(value, ast.Constant) and value.value is True:
                problems.append(f"{rel}:{call.lineno}: trust_remote_code=True")
            default = _keyword(call, "default")
            dest = _keyword(call, "dest")
            flag = [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            names = [*flag, dest.value if isinstance(dest, ast.Constant) else ""]
            flagged = any("trust" in n and "remote" in n for n in names)
            if flagged and isinstance(default, ast.Constant) and default.value is True:
                problems.append(f"{rel}:{call.lineno}: a trust-remote-code flag defaults to True")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                args = node.args
                positional = args.posonlyargs + args.args
                pairs = list(zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True))
                pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
                for arg, default in pairs:
                    if arg.arg == "trust_remote_code" and not (
                        isinstance(default, ast.Constant) and default.value is False
                    ):
                        problems.append(f"{rel}:{node.lineno}: {node.name}(trust_remote_code=...) default is not False")
            if isinstance(node, ast.AnnAssign) and _name(node.target) == "trust_remote_code":
                value = node.value
                if isinstance(value, ast.Call):  # field(default=False, metadata=...)
                    value = _keyword(value, "default")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{rel}:{node.lineno}: trust_remote_code field default is not False")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- (b) weights: safetensors only


class _Touch:
    """A pickle that creates a file when it is loaded: proof that unpickling ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def pickle_model_dir(tmp_path):
    """A tiny model folder as old checkpoints ship it: config.json and a booby-trapped pytorch_model.bin."""
    folder = tmp_path / "pickled-model"
    model = make_model("llama", layers=2)
    model.config.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    marker = tmp_path / "code-ran"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"state": _Touch(marker)}))
    return folder, marker


def test_load_model_refuses_a_pickle_only_checkpoint(pickle_model_dir, monkeypatch):
    from midalign.modeling import load_model

    folder, marker = pickle_model_dir

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_torch_load)
    with pytest.raises(ConfigError, match=r"holds only pickle weights \(pytorch_model\.bin\); midalign loads "):
        load_model(folder)
    assert not marker.exists()
    empty = folder.parent / "empty-model"
    empty.mkdir()
    (empty / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="holds no weights"):
        load_model(empty)


def test_cli_refuses_a_pickle_only_checkpoint_before_generating(pickle_model_dir, tmp_path, capsys):
    folder, marker = pickle_model_dir
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"lang": "en", "prompt": "wake me", "gold": "None"}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    code = main(
        [
            "evaluate",
            "--task",
            "slot",
            "--data",
            str(data),
            "--model_name_or_path",
            str(folder),
            "--output_dir",
            str(out),
        ]
    )
    assert code == 2
    assert "midalign loads safetensors only" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_adapter_with_pickle_weights_only_is_refused(tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model

    from midalign.modeling import load_adapter, read_adapter_config

    adapter = tmp_path / "adapter"
    get_peft_model(make_model("llama", layers=2), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    (adapter / "adapter_model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps(_Touch(marker)))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(ConfigError, match=r"only pickle weights \(adapter_model\.bin\); midalign loads safetensors"):
        read_adapter_config(adapter)
    with pytest.raises(ConfigError, match="safetensors only"):
        load_adapter(make_model("llama", layers=2), adapter)
    assert not marker.exists()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ' + "[" * 5000, encoding="utf-8")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"unreadable adapter_config\.json"):
        read_adapter_config(adapter)


# ---------------------------------------------------------------- (c) trust_remote_code is off by default


def test_trust_remote_code_defaults_to_false_everywhere():
    import inspect

    from midalign.merging import merge_adapters
    from midalign.modeling import load_model, load_tokenizer
    from midalign.train import MidAlignConfig

    fields = {f.name: f for f in dataclasses.fields(MidAlignConfig)}
    assert fields["trust_remote_code"].default is False
    for function in (load_model, load_tokenizer):
        assert inspect.signature(function).parameters["trust_remote_code"].default is False
    assert "trust_remote_code" not in inspect.signature(merge_adapters).parameters  # merge never runs remote code

    for command, required in {
        "evaluate": ["--task", "slot", "--output_dir", "o", "--model_name_or_path", "m"],
        "analyze": ["--model_name_or_path", "m", "--data", "d", "--output_dir", "o"],
    }.items():
        assert parse(command, required).trust_remote_code is False, command
        assert parse(command, [*required, "--trust_remote_code"]).trust_remote_code is True, command
    merge = parse("merge", ["--model_name_or_path", "b", "--adapters", "a=p", "--output_dir", "o"])
    assert not hasattr(merge, "trust_remote_code")
    assert set(COMMANDS) >= {"evaluate", "analyze", "merge"}


# ---------------------------------------------------------------- YAML configs: safe loader, refusals pinned


def _yaml(tmp: Path, text: str) -> Path:
    path = tmp / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_training_yaml_cannot_run_code(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = f"mode: baseline\nlora_r: !!python/object/apply:pathlib.Path.touch [{json.dumps(str(marker))}]\n"
    path = _yaml(tmp_path, evil)
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: invalid YAML: could not determine a constructor for the tag" in err
    assert not marker.exists()
    # TRL's own parser, which reads the file again after midalign's check, uses yaml.safe_load too.
    from trl import TrlParser

    from midalign.train import MidAlignConfig

    with pytest.raises(yaml.constructor.ConstructorError):
        TrlParser((MidAlignConfig,)).parse_args_and_config(["--config", str(path)])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: baseline\nlora_r: 8\nlora_r: 16\n", r"run\.yaml:3: field 'lora_r': duplicate key 'lora_r'"),
        ("- mode\n- baseline\n", r"run\.yaml:1: expected a mapping of settings, got list"),
        ("mode: [baseline\n", r"run\.yaml:2: invalid YAML"),
        ("1: baseline\n", r"run\.yaml: field '1': setting names must be strings"),
        (
            "mode: baseline\ntask_data: t.jsonl\nnot_a_setting: 1\n",
            r"run\.yaml: unknown settings \['not_a_setting'\] for midalign train",
        ),
        ("mode: nonsense\n", r"mode 'nonsense' is not one of"),
    ],
    ids=["duplicate_key", "not_a_mapping", "invalid_yaml", "non_string_key", "unknown_key", "bad_value"],
)
def test_bad_training_yaml_is_a_clean_error(tmp_path, capsys, text, message):
    assert main(["train", "--config", str(_yaml(tmp_path, text))]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_config_flag_without_a_path_is_a_clean_error(capsys):
    assert main(["train", "--config"]) == 2
    assert "midalign train: error: --config needs the path of a YAML file" in capsys.readouterr().err
    assert main(["train", "--config", "no/such/run.yaml"]) == 2
    assert "midalign train: error: no/such/run.yaml: file not found" in capsys.readouterr().err


def test_training_yaml_reaches_the_config(tmp_path, monkeypatch):
    import midalign.train

    seen = {}

    def fake_train(config):
        seen["config"] = config
        raise ConfigError("stop before training")

    monkeypatch.setattr(midalign.train, "train", fake_train)
    text = "\ufeffmode: baseline\r\ntask_data: t.jsonl\r\nlora_r: 4\r\noutput_dir: " + str(tmp_path / "o") + "\r\n"
    assert main(["train", "--config", str(_yaml(tmp_path, text)), "--report_to", "none"]) == 2
    config = seen["config"]
    assert (config.mode, config.task_data, config.lora_r, config.trust_remote_code) == ("baseline", "t.jsonl", 4, False)


def test_yaml_aliases_cannot_blow_up():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    with tempfile.TemporaryDirectory() as tmp:
        path = _yaml(Path(tmp), "\n".join(lines) + "\n")
        with pytest.raises(DataError, match="values once aliases are expanded"):
            read_yaml_file(path)


# ---------------------------------------------------------------- (d) names never escape the output folder

UNSAFE_NAMES = ["../../evil", "a/b", "/etc/x", ".hidden", "..", "a\\b", "", "x" * (MAX_NAME_LENGTH + 1), "a b"]


@settings(max_examples=200, deadline=None)
@given(name=st.text(max_size=12) | st.sampled_from(UNSAFE_NAMES))
def test_check_name_accepts_only_single_safe_components(name):
    try:
        check_name(name, "system name")
    except ConfigError as e:
        assert str(e).startswith("system name ") and "may only hold" in str(e)
        return
    out = Path("/out")
    target = (out / f"predictions-{name}.jsonl").resolve()
    assert target.parent == out and len(Path(name).parts) == 1 and name not in (".", "..")
    assert not name.startswith(".")


def test_unsafe_system_name_writes_nothing(tmp_path, capsys):
    out = tmp_path / "work" / "out"
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"lang": "en", "prompt": "p", "gold": "None"}) + "\n", encoding="utf-8")
    predictions = tmp_path / "p.txt"
    predictions.write_text("None\n", encoding="utf-8")
    for name in ("../../evil", "a/b", ".hidden"):
        argv = ["evaluate", "--task", "slot", "--data", str(data), "--output_dir", str(out)]
        assert main([*argv, "--predictions", f"{name}={predictions}"]) == 2
        assert f"system name {name!r} may only hold letters, digits" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["dev.jsonl", "p.txt"]


def test_write_report_refuses_a_system_name_with_a_separator(tmp_path):
    from midalign.evaluation.runner import prediction_rows, score_by_language, write_report

    examples = [{"lang": "en", "prompt": "p", "gold": "None"}]
    scores = {"../evil": score_by_language("slot", examples, ["None"])}
    with pytest.raises(ConfigError, match=r"system name '\.\./evil' may only hold"):
        write_report(tmp_path / "out", "slot", scores, predictions={"../evil": prediction_rows(examples, ["x"], "s")})
    assert not (tmp_path / "evil.jsonl").exists() and not list(tmp_path.glob("predictions-*"))


def test_unsafe_language_codes_are_refused_before_loading_anything(tmp_path, capsys):
    multiway = tmp_path / "multi.jsonl"
    multiway.write_text(json.dumps({"en": "a", "../../evil": "b"}) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert (
        main(
            [
                "analyze",
                "--model_name_or_path",
                str(tmp_path / "no-model"),
                "--data",
                str(multiway),
                "--output_dir",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"{multiway}:1: field '../../evil': language code '../../evil' may only hold" in err
    data = tmp_path / "dev.jsonl"
    data.write_text(json.dumps({"lang": "../evil", "prompt": "p", "gold": "None"}) + "\n", encoding="utf-8")
    assert (
        main(["evaluate", "--task", "slot", "--data", str(data), "--model_name_or_path", "m", "--output_dir", str(out)])
        == 2
    )
    assert f"{data}:1: field 'lang': language '../evil' may only hold" in capsys.readouterr().err
    assert main(["evaluate", "--task", "mt", "--format", "flores", "--data", str(tmp_path), "--pairs", "../x-en",
                 "--predictions", f"s={data}", "--output_dir", str(out)]) == 2  # fmt: skip
    assert "language code '../x' may only hold" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("command", ["analyze", "evaluate", "merge"])
def test_unsafe_adapter_names_are_refused(tmp_path, capsys, command):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    out = tmp_path / "out"
    data = tmp_path / "d.jsonl"
    argv = {
        "analyze": ["analyze", "--model_name_or_path", "m", "--data", str(tmp_path), "--output_dir", str(out)],
        "evaluate": [
            "evaluate",
            "--task",
            "slot",
            "--data",
            str(data),
            "--model_name_or_path",
            "m",
            "--output_dir",
            str(out),
        ],
        "merge": ["merge", "--model_name_or_path", "m", "--output_dir", str(out)],
    }[command]
    data.write_text(json.dumps({"lang": "en", "prompt": "p", "gold": "None"}) + "\n", "utf-8")
    for name in ("../evil", "mid.align"):  # a separator; and a '.', which PEFT refuses in adapter names
        assert main([*argv, "--adapters", f"{name}={adapter}"]) == 2
        assert f"adapter name {name!r}" in capsys.readouterr().err
    assert not out.exists()


def test_written_json_is_strict_and_a_folder_is_not_called_missing(tmp_path):
    import math

    from midalign.errors import DataError
    from midalign.files import read_json_file, write_json_atomic, write_jsonl_atomic

    path = write_json_atomic(tmp_path / "a.json", {"x": math.nan, "y": [math.inf, 1.5]})
    assert json.loads(path.read_text(encoding="utf-8"), parse_constant=pytest.fail) == {"x": None, "y": [None, 1.5]}
    rows = write_jsonl_atomic(tmp_path / "b.jsonl", [{"v": -math.inf}]).read_text(encoding="utf-8")
    assert rows == '{"v": null}\n'
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_json_file(tmp_path)
