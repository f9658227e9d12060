"""One command-line shape: every command is a dataclass read by the same parser, with `--config FILE.yaml`,
underscore flags, the same name for the same thing, one-line usage errors, and `train --help` own options first."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from midalign.cli import main
from midalign.commands import COMMANDS, command_module, command_parser, parse
from midalign.errors import EXIT_INPUT, EXIT_USAGE

ROOT = Path(__file__).resolve().parents[1]
SLOT = ROOT / "examples" / "eval" / "slot"

# Enough flags for each command to parse (nothing is loaded: only `parse` runs).
REQUIRED = {
    "train": ["--mode", "baseline", "--task_data", "t.jsonl", "--report_to", "none"],
    "evaluate": ["--task", "slot", "--output_dir", "o", "--model_name_or_path", "m"],
    "analyze": ["--model_name_or_path", "m", "--data", "d", "--output_dir", "o"],
    "merge": ["--model_name_or_path", "m", "--adapters", "a=x", "b=y", "--output_dir", "o"],
    "demo": [],
}
# A setting of each command written in the YAML file, then overridden by a flag: (field, in the file, flag value).
OVERRIDDEN = {
    "train": ("lora_r", 4, "16"),
    "evaluate": ("batch_size", 4, "2"),
    "analyze": ("max_length", 64, "32"),
    "merge": ("seed", 3, "7"),
    "demo": ("seed", 3, "7"),
}
# A setting only the file gives: (field, in the file, as parsed).
FROM_FILE = {
    "train": ("pivot_language", "de", "de"),
    "evaluate": ("supervised_languages", "en-US", ["en-US"]),  # one value for a list field is a list of one
    "analyze": ("pivot_language", "en", "en"),
    "merge": ("weights", [1, 0.5], [1.0, 0.5]),
    "demo": ("align_layer", 1.0, "1.0"),  # a number for a text field is the text a flag would give
}


def _yaml(path: Path, settings: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_config_file_sets_the_fields_and_flags_override_it(command, tmp_path):
    name, in_file, flag = OVERRIDDEN[command]
    key, value, parsed = FROM_FILE[command]
    config = _yaml(tmp_path / "args.yaml", {name: in_file, key: value})
    from_file = parse(command, ["--config", str(config), *REQUIRED[command]])
    assert (getattr(from_file, name), getattr(from_file, key)) == (in_file, parsed)
    overridden = parse(command, [*REQUIRED[command], f"--{name}", flag, f"--config={config}"])
    assert getattr(overridden, name) == type(in_file)(flag) and getattr(overridden, key) == parsed


def test_required_fields_can_come_from_the_file_and_choices_are_checked_there(tmp_path):
    settings = {"task": "slot", "format": "massive", "data": str(SLOT / "massive_mini.jsonl")}
    settings |= {"predictions": [f"{s}={SLOT / s}.txt" for s in ("baseline", "merged")], "output_dir": str(tmp_path)}
    assert main(["evaluate", "--config", str(_yaml(tmp_path / "eval.yaml", settings))]) == 0
    assert (tmp_path / "scores.json").is_file()
    bad = _yaml(tmp_path / "bad.yaml", {**settings, "task": "nonsense"})
    with pytest.raises(ValueError, match=r"bad\.yaml: task 'nonsense' is not one of \('slot', 'mt', 'json'\)"):
        parse("evaluate", ["--config", str(bad)])


@pytest.mark.parametrize("command", list(COMMANDS))
def test_unknown_settings_and_flags_are_one_line_usage_errors(command, tmp_path, capsys):
    config = _yaml(tmp_path / "args.yaml", {"no_such_setting": 1, "model": "m"})
    assert main([command, "--config", str(config), *REQUIRED[command]]) == EXIT_INPUT
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"midalign {command}: error: {config}: unknown settings ['model', 'no_such_setting']")
    assert main([command, *REQUIRED[command], "--no_such_flag", "1"]) == EXIT_INPUT
    line = _one_line(capsys.readouterr().err)
    assert (
        line == f"midalign {command}: error: unrecognized arguments: --no_such_flag 1 (see `midalign {command} --help`)"
    )
    number = OVERRIDDEN[command][0]  # an int field
    assert main([command, *REQUIRED[command], f"--{number}", "many"]) == EXIT_INPUT
    assert re.search(rf"argument --{number}(/--\S+)?: invalid int value: 'many'", _one_line(capsys.readouterr().err))


def test_usage_errors_name_the_flag(tmp_path, capsys):
    cases = {
        ("analyze", "--data", "d"): "the following arguments are required: --model_name_or_path",
        ("demo", "--preset", "huge"): "argument --preset: invalid choice: 'huge'",
        ("merge", *REQUIRED["merge"][:2], "--adapters", "a=x", "--adapters", "b=y", "--output_dir", "o"): (
            "--adapters is given more than once; list all its values after one --adapters"
        ),
        (
            "evaluate",
            "--task",
            "slot",
            "--output_dir",
            "o",
        ): "needs --model_name_or_path (to generate) or --predictions",
        ("evaluate", *REQUIRED["evaluate"], "--predictions", "a=p"): "not both",
        ("analyze", *REQUIRED["analyze"], "--no_include_base"): "--no_include_base needs at least one adapter",
        ("demo", "--config"): "--config needs the path of a YAML file",
        ("nonsense",): "unknown command 'nonsense'; the commands are train, evaluate, analyze, merge, demo",
    }
    for argv, message in cases.items():
        assert main(list(argv)) == EXIT_INPUT, argv
        assert message in _one_line(capsys.readouterr().err), argv
    assert main([]) == EXIT_USAGE  # no command: the overview is printed
    overview = capsys.readouterr().out
    assert all(f"  {name} " in overview for name in COMMANDS)


def test_train_help_shows_midalign_options_before_the_inherited_ones(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    own = text.index("\nMidAlignConfig options:\n")
    inherited = text.index("\ninherited options (SFTConfig, TrainingArguments):\n")
    assert text.index("--config FILE.yaml") < own < text.index("--align_layer") < inherited
    assert inherited < text.index("--learning_rate") and inherited < text.index("--per_device_train_batch_size")
    assert own < text.index("--truncate_task_rows") < inherited  # every own field, wherever it is declared
    assert text.count("--align_layer ALIGN_LAYER,") == 1


def _flags(command: str) -> set[str]:
    return {a.option_strings[0] for a in command_parser(command)._actions if a.option_strings}


def test_the_same_thing_has_the_same_name_in_every_command():
    flags = {command: _flags(command) for command in COMMANDS}
    shared = {
        "--model_name_or_path": {"train", "evaluate", "analyze", "merge"},
        "--output_dir": set(COMMANDS),
        "--config": set(COMMANDS),
        "--dtype": {"train", "evaluate", "analyze", "merge"},
        "--trust_remote_code": {"train", "evaluate", "analyze"},  # merge never runs remote code
        "--pivot_language": {"train", "analyze"},
        "--max_length": {"train", "analyze"},
        "--batch_size": {"evaluate", "analyze", "merge"},
        "--max_new_tokens": {"evaluate", "merge"},
        "--chat_template": {"evaluate", "merge"},
        "--adapters": {"evaluate", "analyze", "merge"},
        "--supervised_languages": {"evaluate", "merge"},
        "--seed": {"train", "merge", "demo"},
    }
    for flag, commands in shared.items():
        assert {c for c in COMMANDS if flag in flags[c]} == commands, flag
    for command in COMMANDS:  # underscore flags: the first spelling of each has no hyphen after `--`
        assert not [f for f in flags[command] if f.startswith("--") and "-" in f[2:]], command


def test_every_command_is_a_dataclass_with_help_on_every_field():
    for command in COMMANDS:
        module = command_module(command)
        assert dataclasses.is_dataclass(module.ARGUMENTS) and callable(module.run)
        if command != "train":  # MidAlignConfig: its own fields (TrainingArguments' are transformers')
            assert all(f.metadata.get("help") for f in dataclasses.fields(module.ARGUMENTS)), command


def test_demo_presets_are_those_the_demo_defines():
    from midalign.demo import DemoConfig

    presets = typing.get_args(typing.get_type_hints(DemoConfig)["preset"])
    choices = next(a.choices for a in command_parser("demo")._actions if a.dest == "preset")
    assert list(choices) == list(presets) and "ci" in presets


def test_help_of_every_command_exits_0(capsys):
    for command in COMMANDS:
        assert main([command, "--help"]) == 0
        assert re.search(rf"usage: midalign {command}", capsys.readouterr().out)
