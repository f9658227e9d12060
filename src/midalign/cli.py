"""`midalign` command line. Each subcommand is a function; `main(argv)` returns an exit code (tests call it)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from midalign import __version__
from midalign.errors import EXIT_USAGE, ConfigError, MidalignError, report
from midalign.io import read_yaml_file

TRAIN_HELP = """\
usage: midalign train [--config run.yaml] [--key value ...]

Fine-tune a causal LM with LoRA (or fully) on a task, alternating with the middle-layer alignment loss.
Every field of MidAlignConfig (and of transformers' TrainingArguments) is a flag; a YAML file given with
--config sets defaults that flags override. `midalign train --help` lists them all. Example:

  midalign train --config examples/train_tiny.yaml --max_steps 20 --output_dir runs/tiny
"""


def train_main(argv: list[str]) -> int:
    """`midalign train`: parse YAML + flags into a `MidAlignConfig` and train."""
    from trl import TrlParser

    from midalign.train import MidAlignConfig, train

    if argv[-1:] == ["--config"]:
        raise ConfigError("--config needs the path of a YAML file")
    if "--config" in argv:
        # TRL reads the file with yaml.safe_load; read it first with midalign's stricter safe loader, so that a
        # bad file (invalid UTF-8 or YAML, a repeated key, not a mapping) is a DataError naming file, line, key.
        read_yaml_file(argv[argv.index("--config") + 1])
    parser = TrlParser(
        (MidAlignConfig,),
        prog="midalign train",
        description=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        (config,) = parser.parse_args_and_config(argv)
    except MidalignError:
        raise
    except ValueError as e:  # unknown keys in the file, or a value TrainingArguments refuses
        raise ConfigError(str(e)) from e
    trainer = train(config)
    print(
        f"saved {config.finetuning} weights, tokenizer and {config.output_dir}/midalign_config.json "
        f"({trainer.state.global_step} steps)"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from midalign.demo import main as demo_main

    return demo_main(
        args.preset, args.workdir, args.seed, align_layer=args.align_layer, smallest=args.smallest, settings=args.config
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midalign", description="Middle-layer alignment for cross-lingual transfer.")
    parser.add_argument("--version", action="version", version=f"midalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(
        "train", help="fine-tune: baseline, mid-align or align-only (see `midalign train --help`)", add_help=False
    )
    from midalign.analysis.cli import add_parser as add_analyze
    from midalign.evaluation.cli import add_parser as add_evaluate
    from midalign.merge_cli import add_parser as add_merge

    add_evaluate(sub)
    add_analyze(sub)
    add_merge(sub)
    demo = sub.add_parser(
        "demo",
        help="the whole method on a synthetic multilingual world, from nothing, on a CPU",
        description="Build a synthetic world, pretrain a tiny Llama, fine-tune baseline / mid-align / merged "
        "adapters, evaluate every language zero-shot and analyze the layers. Stages are cached in --workdir.",
    )
    demo.add_argument(
        "--preset",
        choices=["ci", "default"],
        default="default",
        help="ci: ~1.5 min; default: ~9-10 min (times on one CPU thread)",
    )
    demo.add_argument("--workdir", default="runs/demo", help="where every stage writes (and is reused from)")
    demo.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    demo.add_argument(
        "--align_layer",
        default="0.5",
        help="block whose output mid-align aligns: an index (4, -1) or a fraction of the depth (0.5: the middle, "
        "1.0: the top); runs at other layers reuse the baseline",
    )
    demo.add_argument(
        "--config",
        help="YAML file of the fine-tuning settings (default: midalign/configs/demo.yaml, see docs/demo.md)",
    )
    demo.add_argument("--smallest", action="store_true", help="a few steps of everything (what the tests run)")
    demo.set_defaults(func=_demo)
    return parser


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

    Known failures (bad input, the machine refusing, Ctrl-C) end in one line and a documented exit code
    (`midalign.errors.report`); `--debug` anywhere on the line also prints their traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ["MIDALIGN_DEBUG"] = "1"
    _show_midalign_logs()
    command = argv[0] if argv and not argv[0].startswith("-") else ""
    try:
        if command == "train":
            return train_main(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except (MidalignError, OSError, KeyboardInterrupt) as e:
        return report(command, e)


if __name__ == "__main__":
    sys.exit(main())
