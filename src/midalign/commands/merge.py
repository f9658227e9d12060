"""`midalign merge`: merge LoRA adapters of one base model (e.g. alignment into task), optionally sweeping a weight."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from midalign.commands.evaluate import CHAT_TEMPLATE
from midalign.commands.parser import at_least, named_paths
from midalign.errors import ConfigError
from midalign.merging import METHODS, RECIPE
from midalign.merging.save import SWEEP_PLOT
from midalign.modeling import check_device

DESCRIPTION = """\
Merge LoRA adapters trained on one base model into one PEFT adapter, with the recipe recorded next
to it. `sum` is the exact weighted sum of the weight updates (rank: the sum of the ranks); `svd`
truncates that sum to --rank; `ties`, `dare_linear`, `dare_ties` apply PEFT's TIES / DARE to the
weight updates, then truncate to --rank. See docs/merging.md.
"""
SWEEP_ONLY = ("sweep_data", "sweep_metric", "supervised_languages", "transfer_languages")
GROUPS = {
    "sweep (try several weights for the last adapter on a dev set and keep the best)": [
        "sweep",
        "sweep_data",
        "sweep_task",
        "sweep_metric",
        "supervised_languages",
        "transfer_languages",
        "chat_template",
        "batch_size",
        "max_new_tokens",
    ]
}


@dataclass(kw_only=True)
class MergeArguments:
    """Which adapters `midalign merge` merges, how, and where it writes; optionally a weight sweep."""

    model_name_or_path: str = field(
        metadata={"help": "Base model: hub id or folder (the one the adapters were trained on)."}
    )
    adapters: list[str] = field(
        metadata={"help": "Adapter folders, e.g. task=runs/sft align=runs/align.", "metavar": "NAME=PATH"}
    )
    output_dir: str = field(metadata={"help": "Output folder (new or empty)."})
    weights: list[float] | None = field(
        default=None, metadata={"help": "One weight per adapter, in order, e.g. 1.0 0.5 (default: all 1)."}
    )
    method: str = field(default="sum", metadata={"help": "Merge method (sum is exact).", "choices": METHODS})
    rank: int | None = field(
        default=None, metadata={"help": "svd, ties, dare_*: rank of the result (default: the largest input rank)."}
    )
    density: float | None = field(
        default=None, metadata={"help": "ties, dare_*: fraction of each update's entries kept, in (0, 1]."}
    )
    seed: int = field(default=0, metadata={"help": "dare_*: seed of the random drop."})
    full: bool = field(default=False, metadata={"help": "Also write the merged full model to OUTPUT_DIR/full."})
    dtype: str = field(default="auto", metadata={"help": "Base model dtype: auto, float32, bfloat16 or float16."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, cuda, cuda:1, ..."})
    # sweep
    sweep: list[float] | None = field(default=None, metadata={"help": "Weights to try, e.g. 0 0.25 0.5 0.75 1.0."})
    sweep_data: str | None = field(default=None, metadata={"help": "Dev set, JSONL in `midalign evaluate` form."})
    sweep_task: Literal["slot", "mt", "json"] = field(default="slot", metadata={"help": "The dev set's task."})
    sweep_metric: str | None = field(
        default=None, metadata={"help": "Metric to compare (default: slot_f1, bleu or field_f1)."}
    )
    supervised_languages: list[str] = field(
        default_factory=list, metadata={"help": "Languages the task adapter was trained on."}
    )
    transfer_languages: list[str] | None = field(
        default=None, metadata={"help": "Zero-shot languages (default: all others)."}
    )
    chat_template: Literal["auto", "on", "off"] = field(
        default="auto", metadata={"help": "Wrap prompts in the tokenizer's chat template (auto: when it has one)."}
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens generated per prompt at most."})

    def __post_init__(self):
        self.adapter_paths = named_paths(self.adapters, flag="--adapters")
        if self.sweep is None:
            given = [f"--{name}" for name in SWEEP_ONLY if getattr(self, name)]
            if given:
                raise ConfigError(f"{', '.join(given)} only apply with --sweep")
        elif self.sweep_data is None:
            raise ConfigError("--sweep needs --sweep_data")
        at_least("--batch_size", self.batch_size)
        at_least("--max_new_tokens", self.max_new_tokens)
        check_device(self.device)


ARGUMENTS = MergeArguments


def run(args: MergeArguments) -> int:
    """Run `midalign merge`; nothing is written when it fails."""
    import torch

    from midalign.merging import Sweep, merge_adapters
    from midalign.merging.save import check_out_dir

    check_out_dir(args.output_dir, "--output_dir")  # before the dev set is read and the model loads
    sweep = None
    if args.sweep is not None:
        from midalign.evaluation.loaders import load_examples

        sweep = Sweep(
            values=args.sweep,
            examples=load_examples(args.sweep_data, args.sweep_task),
            task=args.sweep_task,
            metric=args.sweep_metric,
            supervised=args.supervised_languages,
            transfer=args.transfer_languages,
            chat_template=CHAT_TEMPLATE[args.chat_template],
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
        )
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    out = merge_adapters(
        args.model_name_or_path,
        args.adapter_paths,
        args.weights,
        out_dir=Path(args.output_dir),
        method=args.method,
        rank=args.rank,
        density=args.density,
        seed=args.seed,
        full=args.full,
        dtype=args.dtype,
        device=device,
        sweep=sweep,
        progress=True,
    )
    recipe = json.loads((out / RECIPE).read_text(encoding="utf-8"))
    if "sweep" in recipe:
        print(recipe["sweep"]["markdown"])
        print(f"chart: {out / SWEEP_PLOT}")
    weights = ", ".join(f"{name}={w:g}" for name, w in recipe["weights"].items())
    exact = "exact" if recipe["exact_weighted_sum"] else f"relative error {recipe['relative_error']:.3g}"
    print(f"merged {weights} with {recipe['method']} (rank {recipe['rank']}, {exact}) into {out}")
    return 0
