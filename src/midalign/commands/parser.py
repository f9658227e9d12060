"""The one argument parser of every command: a dataclass read by Hugging Face's `HfArgumentParser`.

- A flag per field, spelled as the field (`--output_dir`; transformers also accepts `--output-dir`).
- `--config FILE.yaml` for every command: the file sets the fields it names, flags given with it override them.
  The file is read with midalign's strict YAML reader (`midalign.files.read_yaml_file`), so a bad file is a
  `DataError` naming file, line and key; a key that is no field is a `ConfigError` naming it.
- Usage errors (an unknown flag, a missing or bad value) are `ConfigError`s, so every command ends them the same
  way: one line through `midalign.errors.report`, exit code 2.
- `--help` shows a command's own fields first, then those inherited from a base dataclass (`midalign train`:
  `MidAlignConfig`'s fields before those of TRL's `SFTConfig` and transformers' `TrainingArguments`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Sequence

from transformers import HfArgumentParser

from midalign.errors import ConfigError
from midalign.files import check_name, read_yaml_file

CONFIG_FLAG = "--config"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each help line (as transformers shows them), descriptions printed as written."""


class CommandParser(HfArgumentParser):
    """`HfArgumentParser` for one dataclass, with `--config FILE.yaml`, one-line usage errors and grouped help.

    Args:
        dataclass_type: the command's arguments.
        prog: shown in the help, e.g. `midalign analyze`.
        groups: `{title: [field, ...]}`: help sections after the ungrouped fields, in this order. Without them, a
            dataclass that extends another shows its own fields in one section and the inherited ones in the next.
        defaults: `{field: value}` that replace the dataclass's defaults for this command (a YAML file and flags
            still override them).
        **kwargs: passed to `argparse.ArgumentParser` (`description`, `usage`, ...).
    """

    def __init__(
        self,
        dataclass_type: type,
        *,
        prog: str,
        groups: dict[str, Sequence[str]] | None = None,
        defaults: dict | None = None,
        **kwargs,
    ):
        if "config" in {f.name for f in dataclasses.fields(dataclass_type)}:
            raise TypeError(f"{dataclass_type.__name__} has a field 'config', which {CONFIG_FLAG} needs for itself")
        super().__init__(dataclass_type, prog=prog, formatter_class=_Formatter, **kwargs)
        self.add_argument(
            CONFIG_FLAG,
            metavar="FILE.yaml",
            default=argparse.SUPPRESS,
            help="YAML file of these options (keys as the flags, without --); flags given with it override it",
        )
        self._group_help(dataclass_type, groups or _own_then_inherited(dataclass_type))
        self._set_defaults(defaults or {})

    def _group_help(self, dataclass_type: type, groups: dict[str, Sequence[str]]) -> None:
        """Move each field's flags into its help section (the flags parse the same whichever section shows them).

        argparse adds every flag to its default section; the sections it prints are `_action_groups`, each listing
        its `_group_actions`. Moving an action between those two lists changes the help and nothing else.
        """
        options = self._optionals._group_actions
        config = next(a for a in options if a.dest == "config")
        options.remove(config)
        options.insert(1, config)  # right after --help
        for action in options:
            if action.option_strings[0].startswith("--no_"):  # transformers gives it the help of the field's flag
                action.help = f"Turn --{action.dest} off."
        known = {f.name for f in dataclasses.fields(dataclass_type)}
        for title, names in groups.items():
            if not set(names) <= known:
                raise TypeError(f"help section {title!r} names no field {sorted(set(names) - known)}")
            section = self.add_argument_group(title)
            for action in [a for a in self._optionals._group_actions if a.dest in names]:
                self._optionals._group_actions.remove(action)
                section._group_actions.append(action)

    def error(self, message: str):
        """argparse's usage errors (unknown flag, missing or invalid value) as one-line `ConfigError`s."""
        raise ConfigError(f"{message} (see `{self.prog} --help`)")

    def parse(self, argv: Sequence[str]):
        """The dataclass that `argv` (flags, and `--config FILE.yaml`) describes.

        Raises:
            ConfigError: an unknown flag or setting, a bad value, a flag given twice, or a refused combination.
            DataError: a YAML file that is not a mapping of settings (names file, line and key).
        """
        argv = [str(a) for a in argv]
        path, argv = _pop_config(argv)
        if path is not None:
            self._apply_file(path)
        self._refuse_repeated_lists(argv)
        try:
            arguments, unknown = self.parse_args_into_dataclasses(argv, return_remaining_strings=True)
        except ConfigError:
            raise
        except ValueError as e:  # a value the dataclass refuses (TrainingArguments raises ValueError)
            raise ConfigError(str(e)) from e
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        self._refuse_repeated_values(arguments)
        return arguments

    def _refuse_repeated_values(self, arguments) -> None:
        """A text value given twice in one list option (`--pairs de-en de-en`) is refused, naming the flag: kept, it
        would load or score the same thing twice (and shift predictions aligned by position); dropped, it would
        hide a typo. Numbers may repeat (`--weights 1.0 1.0`)."""
        actions = self._actions_by_field()
        for f in dataclasses.fields(arguments):
            action = actions.get(f.name)
            value = getattr(arguments, f.name, None)
            if action is None or action.nargs not in ("+", "*") or action.type is not str or not value:
                continue
            repeated = [v for i, v in enumerate(value) if v in value[:i]]
            if repeated:
                raise ConfigError(f"{action.option_strings[0]}: {repeated[0]!r} is given twice; give each value once")

    def _actions_by_field(self) -> dict[str, argparse.Action]:
        # A bool field with default True also has a `--no_<field>` flag (store_false): the field's own flag counts.
        actions: dict[str, argparse.Action] = {}
        for action in self._actions:
            if action.option_strings and not action.option_strings[0].startswith("--no_"):
                actions.setdefault(action.dest, action)
        return actions

    def _set_defaults(self, values: dict) -> None:
        """Make `values` the defaults of their fields' flags (and of their `--no_<field>` complements)."""
        for key, value in values.items():
            for flag_action in self._actions:
                if flag_action.dest == key:
                    flag_action.default = value
                    flag_action.required = False

    def _apply_file(self, path: str) -> None:
        """Set the defaults the YAML file names (its values are then checked as flags are, before any use)."""
        settings = read_yaml_file(path)
        fields = {f.name for dtype in self.dataclass_types for f in dataclasses.fields(dtype) if f.init}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise ConfigError(f"{path}: unknown settings {unknown} for {self.prog} (`{self.prog} --help` lists them)")
        actions = self._actions_by_field()
        self._set_defaults({key: _from_yaml(path, key, value, actions[key]) for key, value in settings.items()})

    def _refuse_repeated_lists(self, argv: list[str]) -> None:
        """A list option given twice would keep only its last values: refuse it (list them after one flag)."""
        flags = {}
        for action in self._actions:
            if action.nargs in ("+", "*"):
                flags.update(dict.fromkeys(action.option_strings, action.option_strings[0]))
        seen = [flags[a.split("=", 1)[0]] for a in argv if a.split("=", 1)[0] in flags]
        repeated = sorted({flag for flag in seen if seen.count(flag) > 1})
        if repeated:
            raise ConfigError(
                f"{repeated[0]} is given more than once; list all its values after one {repeated[0]} (it takes several)"
            )


def _pop_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """The path given with `--config` (or `--config=PATH`), and the other arguments."""
    found = [i for i, a in enumerate(argv) if a == CONFIG_FLAG or a.startswith(CONFIG_FLAG + "=")]
    if not found:
        return None, argv
    if len(found) > 1:
        raise ConfigError(f"{CONFIG_FLAG} is given more than once; give one YAML file")
    i = found[0]
    if argv[i] != CONFIG_FLAG:
        path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1 :]
    elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
        path, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        path = ""
    if not path:
        raise ConfigError(f"{CONFIG_FLAG} needs the path of a YAML file")
    return path, rest


def _from_yaml(path: str, key: str, value, action: argparse.Action):
    """A YAML value as the flag would give it: numbers for text fields as written (`align_layer: 0.5` is '0.5'),
    one value for a list field as a list of one, and every choice checked (argparse checks only flags)."""
    many = action.nargs in ("+", "*")
    if many and not isinstance(value, list):
        value = [value]
    values = value if many else [value]
    converted = []
    for item in values:
        # int(8.7) would quietly train with 8, and a bool, list or mapping is never a number.
        fraction = action.type is int and isinstance(item, float) and not item.is_integer()
        if action.type in (int, float) and (fraction or isinstance(item, bool | list | dict)):
            raise ConfigError(f"{path}: {key} {item!r} is not a valid {action.type.__name__}")
        if action.type in (str, int, float) and item is not None and not isinstance(item, bool | list | dict):
            try:
                item = action.type(item)
            except ValueError:
                raise ConfigError(f"{path}: {key} {item!r} is not a valid {action.type.__name__}") from None
        if action.choices is not None and isinstance(item, str) and item not in action.choices:
            raise ConfigError(f"{path}: {key} {item!r} is not one of {tuple(action.choices)}")
        converted.append(item)
    return converted if many else converted[0]


def _own_then_inherited(dataclass_type: type) -> dict[str, list[str]]:
    """Help sections for a dataclass that extends others: its own fields, then the inherited ones."""
    bases = [base for base in dataclass_type.__mro__[1:] if dataclasses.is_dataclass(base)]
    inherited = {f.name for base in bases for f in dataclasses.fields(base)}
    if not inherited:
        return {}
    names = [f.name for f in dataclasses.fields(dataclass_type) if f.init]
    return {
        f"{dataclass_type.__name__} options": [n for n in names if n not in inherited],
        f"inherited options ({', '.join(b.__name__ for b in bases if not b.__name__.startswith('_'))})": [
            n for n in names if n in inherited
        ],
    }


def at_least(flag: str, value: int | float, minimum: int = 1):
    """`value` if it is at least `minimum`; numeric flags are checked with this when parsed, before any work.

    Raises:
        ConfigError: naming the flag and the value.
    """
    if value < minimum:
        raise ConfigError(f"{flag} must be at least {minimum}, got {value}")
    return value


def named_paths(
    values: Iterable[str] | None, what: str = "adapter", *, flag: str, dots: bool = False
) -> dict[str, str]:
    """`NAME=PATH` values of a list option as `{name: path}`, in order.

    A name given twice is refused (a dict would keep only the last path). Names become system names in reports
    and file names (`midalign.files.check_name`); adapter names hold no `.` (`dots=False`), which PEFT refuses.

    Raises:
        ConfigError: a value that is not NAME=PATH, a name given twice, or one that is not safe as a file name.
    """
    out: dict[str, str] = {}
    for value in values or ():
        name, sep, path = str(value).partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"{flag}: expected NAME=PATH, got {value!r}")
        check_name(name, f"{what} name", dots=dots)
        if name in out:
            raise ConfigError(f"two {what}s share a name: {name!r} is given twice")
        out[name] = path
    return out
