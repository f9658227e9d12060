"""`midalign` command line: `main(argv)` parses one command's arguments, runs it and returns the exit code.

The commands live in `midalign.commands`, one module each; every one is parsed the same way (a dataclass read by
Hugging Face's argument parser, `--config FILE.yaml`) and every known failure is reported here, by one handler
(`midalign.errors.report`). Tests call `main` in-process.
"""

from __future__ import annotations

import logging
import os
import sys

from midalign import __version__
from midalign.errors import EXIT_USAGE, ConfigError, MidalignError, report


def _overview() -> str:
    from midalign.commands import COMMANDS

    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, summary in COMMANDS.items()]
    return "\n".join(
        [
            "usage: midalign [--version] [--debug] COMMAND [--config FILE.yaml] [--OPTION VALUE ...]",
            "",
            "Middle-layer alignment for cross-lingual transfer.",
            "",
            "commands:",
            *lines,
            "",
            "`midalign COMMAND --help` lists a command's options; --debug also prints the traceback of an error.",
        ]
    )


def _show_midalign_logs() -> None:
    """Print midalign's own INFO messages; other libraries keep their levels (a root logger at INFO would print
    every library's INFO lines, such as accelerate's gather notice at each logging step)."""
    log = logging.getLogger("midalign")
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)


class _CurrentStderr(logging.StreamHandler):
    """Writes to `sys.stderr` as it is at each message (tests and notebooks replace it between calls)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the `midalign` command line with `argv` (default: `sys.argv[1:]`); returns the exit code.

    Known failures (a bad flag or setting, bad input, the machine refusing, Ctrl-C) end in one line and a
    documented exit code (`midalign.errors.report`); `--debug` anywhere on the line also prints their traceback.
    """

    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if "--debug" not in argv:
        return _main(argv)
    argv.remove("--debug")
    # For this call only: `main` also runs inside Python (tests, notebooks), where a flag must not outlive its call.
    previous = os.environ.get("MIDALIGN_DEBUG")
    os.environ["MIDALIGN_DEBUG"] = "1"
    try:
        return _main(argv)
    finally:
        if previous is None:
            del os.environ["MIDALIGN_DEBUG"]
        else:
            os.environ["MIDALIGN_DEBUG"] = previous


def _main(argv: list[str]) -> int:
    from midalign.commands import COMMANDS, command_module, parse

    if argv[:1] == ["--version"]:
        print(f"midalign {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0 if argv else EXIT_USAGE
    _show_midalign_logs()
    command = argv[0]
    try:
        if command not in COMMANDS:
            raise ConfigError(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)}")
        try:
            arguments = parse(command, argv[1:])
        except SystemExit as e:  # --help printed the help
            return e.code if isinstance(e.code, int) else 0
        return int(command_module(command).run(arguments) or 0)
    except (MidalignError, OSError, KeyboardInterrupt) as e:
        return report(command, e)


if __name__ == "__main__":
    sys.exit(main())
