"""The `midalign` commands, one module each: `train`, `evaluate`, `analyze`, `merge`, `demo`.

Each module holds the command's arguments as one dataclass (`ARGUMENTS`; for `train` it is `MidAlignConfig`),
optionally `DEFAULTS` that differ from the dataclass's (`train`: the paper's recipe), its `DESCRIPTION` and
`run(arguments) -> int`, which raises midalign's errors and leaves reporting them to
`midalign.cli.main`. Every command is parsed the same way (`parser.CommandParser`): underscore flags named as the
fields, `--config FILE.yaml`, and the same name for the same thing in every command (`model_name_or_path`,
`output_dir`, `dtype`, `pivot_language`, `max_length`, `batch_size`, `trust_remote_code`, `adapters`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

# The one-line summary of each command, in the order `midalign --help` lists them.
COMMANDS = {
    "train": "fine-tune: baseline, mid-align or align-only",
    "evaluate": "generate and score slot filling, translation or JSON per language",
    "analyze": "layer-wise cross-lingual alignment (translation retrieval) of a model and its adapters",
    "merge": "merge LoRA adapters (e.g. an alignment adapter into a task adapter) into one PEFT adapter",
    "demo": "the whole method on a synthetic multilingual world, from nothing, on a CPU",
}


def command_module(command: str) -> ModuleType:
    """The module of `command` (one of `COMMANDS`)."""
    return importlib.import_module(f"{__name__}.{command}")


def command_parser(command: str):
    """The `CommandParser` of `command`: its dataclass, description and help sections."""
    from midalign.commands.parser import CommandParser

    module = command_module(command)
    return CommandParser(
        module.ARGUMENTS,
        prog=f"midalign {command}",
        description=module.DESCRIPTION,
        usage=getattr(module, "USAGE", None),
        groups=getattr(module, "GROUPS", None),
        defaults=getattr(module, "DEFAULTS", None),
    )


def parse(command: str, argv: Sequence[str]):
    """The arguments dataclass of `midalign <command> <argv>` (see `CommandParser.parse`)."""
    return command_parser(command).parse(argv)
