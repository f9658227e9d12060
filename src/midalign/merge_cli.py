"""`midalign merge`: merge LoRA adapters of one base model (e.g. alignment into task), optionally sweeping a weight."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from midalign.cliargs import named_path, named_paths
from midalign.errors import ConfigError, MidalignError, report
from midalign.merging import METHODS, RECIPE


def _floats(value: str) -> list[float]:
    try:
        return [float(x) for x in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1.0,0.5, got {value!r}") from None


def add_parser(subparsers) -> None:
    """Register the `merge` subcommand on an argparse subparsers object (sets `func=run`)."""
    p = subparsers.add_parser(
        "merge",
        help="merge LoRA adapters (e.g. an alignment adapter into a task adapter) into one PEFT adapter",
        description="Merge LoRA adapters trained on one base model into one PEFT adapter, with the recipe recorded "
        "next to it. `sum` is the exact weighted sum of the weight updates (rank: the sum of the ranks); `svd` "
        "truncates that sum to --rank; `ties`, `dare_linear`, `dare_ties` apply PEFT's TIES / DARE to the weight "
        "updates, then truncate to --rank. See docs/merging.md.",
    )
    p.add_argument("--base", required=True, help="base model: hub id or folder (the one the adapters were trained on)")
    p.add_argument(
        "--adapter",
        type=named_path,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="an adapter folder, repeatable, e.g. --adapter task=runs/sft --adapter align=runs/align",
    )
    p.add_argument("--weights", type=_floats, help="one weight per adapter, in order, e.g. 1.0,0.5 (default: all 1)")
    p.add_argument("--method", default="sum", metavar="|".join(METHODS), help="merge method (default: sum, exact)")
    p.add_argument("--rank", type=int, help="svd, ties, dare_*: rank of the result (default: the largest input rank)")
    p.add_argument("--density", type=float, help="ties, dare_*: fraction of each update's entries kept, in (0, 1]")
    p.add_argument("--seed", type=int, default=0, help="dare_*: seed of the random drop (default: 0)")
    p.add_argument("--out", required=True, type=Path, help="output folder (new or empty)")
    p.add_argument("--full", action="store_true", help="also write the merged full model to OUT/full (safetensors)")
    p.add_argument("--dtype", default="auto", help="base model dtype: auto, float32, bfloat16 or float16")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")

    sweep = p.add_argument_group(
        "sweep",
        "try several weights for the last adapter (its --weights value is replaced) on a dev set and keep the best",
    )
    sweep.add_argument("--sweep", type=_floats, metavar="W1,W2,...", help="e.g. 0,0.25,0.5,0.75,1.0")
    sweep.add_argument("--sweep-data", type=Path, help="dev set, JSONL in `midalign evaluate` form")
    sweep.add_argument("--sweep-task", choices=("slot", "mt", "json"), default="slot")
    sweep.add_argument("--sweep-metric", help="metric to compare (default: slot_f1, bleu or field_f1)")
    sweep.add_argument("--supervised-langs", nargs="+", default=[], help="languages the task adapter was trained on")
    sweep.add_argument("--transfer-langs", nargs="+", help="zero-shot languages (default: all others)")
    sweep.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto")
    sweep.add_argument("--batch-size", type=int, default=8)
    sweep.add_argument("--max-new-tokens", type=int, default=128)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `midalign merge`; returns 0, or 2 after printing the error for bad input (nothing is then written)."""
    import torch

    from midalign.merging import Sweep, merge_adapters

    try:
        adapters = named_paths(args.adapter)
        sweep_only = {
            "--sweep-data": args.sweep_data,
            "--sweep-metric": args.sweep_metric,
            "--supervised-langs": args.supervised_langs,
            "--transfer-langs": args.transfer_langs,
        }
        sweep = None
        if args.sweep is None:
            given = [flag for flag, value in sweep_only.items() if value]
            if given:
                raise ConfigError(f"{', '.join(given)} only apply with --sweep")
        else:
            from midalign.evaluation.loaders import load_jsonl

            if args.sweep_data is None:
                raise ConfigError("--sweep needs --sweep-data")
            sweep = Sweep(
                values=args.sweep,
                examples=load_jsonl(args.sweep_data, args.sweep_task),
                task=args.sweep_task,
                metric=args.sweep_metric,
                supervised=args.supervised_langs,
                transfer=args.transfer_langs,
                chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
                batch_size=args.batch_size,
                max_new_tokens=args.max_new_tokens,
            )
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        out = merge_adapters(
            args.base,
            adapters,
            args.weights,
            out_dir=args.out,
            method=args.method,
            rank=args.rank,
            density=args.density,
            seed=args.seed,
            full=args.full,
            dtype=args.dtype,
            device=device,
            sweep=sweep,
        )
    except (MidalignError, OSError, KeyboardInterrupt) as e:
        return report("merge", e)
    recipe = json.loads((out / RECIPE).read_text(encoding="utf-8"))
    if "sweep" in recipe:
        print(recipe["sweep"]["markdown"])
    weights = ", ".join(f"{name}={w:g}" for name, w in recipe["weights"].items())
    exact = "exact" if recipe["exact_weighted_sum"] else f"relative error {recipe['relative_error']:.3g}"
    print(f"merged {weights} with {recipe['method']} (rank {recipe['rank']}, {exact}) into {out}")
    return 0
