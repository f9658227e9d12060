"""`midalign demo`: the whole method on a synthetic multilingual world, from nothing, on a CPU (see docs/demo.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import get_type_hints

from midalign.commands.parser import at_least
from midalign.demo_config import SETTINGS, DemoConfig

# The presets and tasks are `DemoConfig`'s (Literals), so a new one needs no change here.
Preset = get_type_hints(DemoConfig)["preset"]
Task = get_type_hints(DemoConfig)["task"]

DESCRIPTION = """\
Build a synthetic world, pretrain a tiny Llama, fine-tune baseline / mid-align / merged adapters,
evaluate every language zero-shot and analyze the layers. Stages are cached in --output_dir and
reused.
"""


@dataclass(kw_only=True)
class DemoArguments:
    """What `midalign demo` runs and where its stages are written (and reused from)."""

    preset: Preset = field(
        default=DemoConfig.preset,
        metadata={
            "help": "Size of the world and the pretraining: ci (plumbing, ~1.5 min), default (10-14 min on 2 "
            "cores), bench (the transfer benchmark's base: pretrained once in about an hour, then reused)."
        },
    )
    threads: int = field(
        default=DemoConfig.threads,
        metadata={"help": "CPU threads for every stage (a fixed count makes the numbers the same on every machine)."},
    )
    output_dir: str = field(
        default="runs/demo", metadata={"help": "Where every stage writes, and is reused from when run again."}
    )
    seed: int = field(default=DemoConfig.seed, metadata={"help": "Fine-tuning seed."})
    task: Task = field(
        default=DemoConfig.task,
        metadata={
            "help": "slot: slot filling; json: the same commands answered as JSON objects (in json-seedN); mt: "
            "translation into English, fine-tuned from xa, xb and xc (in mt-seedN)."
        },
    )
    align_layer: str = field(
        default=DemoConfig.align_layer,
        metadata={
            "help": "Block whose output mid-align aligns: an index (4, -1) or a fraction of the depth (0.5: the "
            "middle, 1.0: the top); runs at other layers reuse the baseline."
        },
    )
    settings: str = field(
        default=str(SETTINGS),
        metadata={"help": "YAML file of the fine-tuning settings (a copy of midalign/configs/demo.yaml)."},
    )
    smallest: bool = field(default=False, metadata={"help": "A few steps of everything (what the tests run)."})

    def __post_init__(self):
        at_least("--threads", self.threads)  # torch would refuse it only when the demo sets it


ARGUMENTS = DemoArguments


def run(args: DemoArguments) -> int:
    """Run the demo, print the summary and point to the report."""
    from midalign.demo import run_demo

    config = DemoConfig(
        preset=args.preset,
        seed=args.seed,
        task=args.task,
        threads=args.threads,
        align_layer=args.align_layer,
        smallest=args.smallest,
        settings=args.settings,
    )
    run_demo(config, args.output_dir)  # checks the settings and the layer before building anything
    report = Path(args.output_dir) / config.runs_folder / f"report{config.tag}.md"
    print(report.read_text(encoding="utf-8").split("\n## Per language")[0])
    print(f"full report: {report}")
    return 0
