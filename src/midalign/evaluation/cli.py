"""`midalign evaluate`: generate with a base model and its adapters (or re-score predictions), per language."""

from __future__ import annotations

import argparse
from pathlib import Path

from midalign.cliargs import named_path, named_paths
from midalign.errors import ConfigError, DataError, MidalignError, report
from midalign.io import read_json_file

FORMATS = ("jsonl", "massive", "massive-hf", "text", "flores")


def add_parser(subparsers) -> None:
    """Register the `evaluate` subcommand on an argparse subparsers object (sets `func=run`)."""
    p = subparsers.add_parser(
        "evaluate",
        help="generate and score slot filling, translation or JSON per language",
        description="Generate greedily with a base model and its adapters, or re-score predictions files, "
        "then write per-language scores, tables and charts.",
    )
    p.add_argument("--task", choices=("slot", "mt", "json"), required=True)
    p.add_argument("--out", required=True, type=Path, help="output folder")

    data = p.add_argument_group("data")
    data.add_argument("--format", choices=FORMATS, default="jsonl", help="data format (default: jsonl)")
    data.add_argument(
        "--data",
        help="jsonl/massive: a file (massive: or the folder of <locale>.jsonl); "
        "text: a path pattern with {lang} (and {src}, {tgt}); flores: the dataset folder",
    )
    data.add_argument("--locales", nargs="+", help="massive, massive-hf: locales to evaluate")
    data.add_argument("--partition", default="test", help="massive, massive-hf: train, dev or test")
    data.add_argument("--with-intent", action="store_true", help="massive: golds start with the intent")
    data.add_argument("--pairs", nargs="+", help="text, flores: directions SRC-TGT")
    data.add_argument("--split", default="devtest", help="flores: dev or devtest")
    data.add_argument("--limit", type=int, help="keep the first N examples of each language")

    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="base model (hub id or folder) to generate with")
    source.add_argument(
        "--predictions",
        type=named_path,
        action="append",
        metavar="NAME=FILE",
        help="re-score instead of generating: a predictions JSONL this command wrote, or (with --data) "
        "a file aligned with the data: JSONL with 'prediction', or plain text, one per line; repeatable",
    )
    gen = p.add_argument_group("generation")
    gen.add_argument("--adapter", type=named_path, action="append", default=[], metavar="NAME=PATH")
    gen.add_argument("--include-base", action="store_true", help="with --adapter: also score the bare base")
    gen.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    gen.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    gen.add_argument("--trust-remote-code", action="store_true")
    gen.add_argument("--batch-size", type=int, default=8)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto")
    gen.add_argument("--system-prompt", help="replace every example's system prompt")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")

    score = p.add_argument_group("scoring")
    score.add_argument("--supervised-langs", nargs="+", default=[], help="languages the systems were trained on")
    score.add_argument(
        "--transfer-langs", nargs="+", help="zero-shot languages (default: all others when --supervised-langs is set)"
    )
    score.add_argument("--char-langs", nargs="+", help="slot: languages split into characters (default: ja zh)")
    score.add_argument("--schema", type=Path, help="json: JSON schema file the outputs should satisfy")
    score.add_argument("--comet", action="store_true", help="mt: add COMET (pip install 'midalign[comet]')")
    p.set_defaults(func=run)


def _load_data(args: argparse.Namespace) -> list[dict]:
    from midalign.evaluation import loaders

    needs_data = args.format != "massive-hf"
    if needs_data and not args.data:
        raise ConfigError(f"--format {args.format} needs --data")
    if args.format in ("text", "flores") and not args.pairs:
        raise ConfigError(f"--format {args.format} needs --pairs")
    if args.format == "massive-hf" and not args.locales:
        raise ConfigError("--format massive-hf needs --locales")
    if args.format in ("massive", "massive-hf") and args.task != "slot":
        raise ConfigError("MASSIVE data is for --task slot")
    if args.format in ("text", "flores") and args.task != "mt":
        raise ConfigError(f"--format {args.format} is for --task mt")
    massive = {"partition": args.partition, "with_intent": args.with_intent}
    if args.format == "jsonl":
        examples = loaders.load_jsonl(args.data, args.task)
    elif args.format == "massive":
        examples = loaders.load_massive_jsonl(args.data, locales=args.locales, **massive)
    elif args.format == "massive-hf":
        examples = loaders.load_massive_hf(args.locales, **massive)
    elif args.format == "text":
        examples = loaders.load_text_pairs(args.data, args.pairs)
    else:
        examples = loaders.load_flores(args.data, args.pairs, split=args.split)
    if args.limit is not None:
        if args.limit < 1:
            raise ConfigError(f"--limit must be at least 1, got {args.limit}")
        seen: dict[str, int] = {}
        kept = []
        for example in examples:
            seen[example["lang"]] = seen.get(example["lang"], 0) + 1
            if seen[example["lang"]] <= args.limit:
                kept.append(example)
        examples = kept
    if args.system_prompt is not None:
        examples = [{**e, "system_prompt": args.system_prompt} for e in examples]
    return examples


def _rescore(args: argparse.Namespace) -> dict[str, tuple[list[dict], list[str]]]:
    from midalign.evaluation.loaders import load_predictions, read_prediction_lines

    systems = {}
    examples = _load_data(args) if args.data or args.format == "massive-hf" else None
    for name, path in named_paths(args.predictions, "system", dots=True).items():
        if examples is None:
            systems[name] = load_predictions(path, args.task)
        else:
            systems[name] = (examples, read_prediction_lines(path, len(examples), examples))
    return systems


def _generate(args: argparse.Namespace) -> dict[str, tuple[list[dict], list[str]]]:
    import torch

    from midalign.evaluation.generation import adapter_systems, generate
    from midalign.evaluation.runner import prediction_rows
    from midalign.evaluation.tables import language_groups
    from midalign.io import write_jsonl_atomic
    from midalign.modeling import load_model, load_tokenizer

    examples = _load_data(args)
    # Checked now, not after hours of generation.
    language_groups(list(dict.fromkeys(e["lang"] for e in examples)), args.supervised_langs, args.transfer_langs)
    adapters = named_paths(args.adapter)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code).to(device)
    systems = {}
    for name, system_model in adapter_systems(model, adapters, include_base=args.include_base or not adapters):
        predictions = generate(
            system_model,
            tokenizer,
            [e["prompt"] for e in examples],
            system_prompts=[e.get("system_prompt") for e in examples],
            chat_template={"auto": None, "on": True, "off": False}[args.chat_template],
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            progress=not args.no_progress,
            desc=name,
        )
        # Saved at once, so a failure in a later system keeps this one's predictions (rewritten, same rows, at the end).
        write_jsonl_atomic(args.out / f"predictions-{name}.jsonl", prediction_rows(examples, predictions, name))
        systems[name] = (examples, predictions)
    return systems


def run(args: argparse.Namespace) -> int:
    """Run `midalign evaluate`; returns 0, or 2 after printing the error for bad data or configuration."""
    from midalign.evaluation.runner import (
        check_score_options,
        prediction_rows,
        score_by_language,
        write_report,
    )

    try:
        if args.adapter and args.predictions:
            raise ConfigError("--adapter needs --model")
        score_options = {"comet": args.comet}
        if args.char_langs is not None:
            score_options["char_langs"] = args.char_langs
        if args.schema is not None:
            try:
                score_options["schema"] = read_json_file(args.schema)
            except DataError as e:
                raise DataError(f"cannot read the schema: {e.reason}", path=e.path, line=e.line, field=e.field) from e
        check_score_options(args.task, score_options.get("char_langs"), score_options.get("schema"), args.comet)
        systems = _rescore(args) if args.predictions else _generate(args)  # names checked there
        scores = {
            name: score_by_language(args.task, ex, preds, **score_options) for name, (ex, preds) in systems.items()
        }
        rows = {name: prediction_rows(ex, preds, name) for name, (ex, preds) in systems.items()}
        written = write_report(
            args.out,
            args.task,
            scores,
            predictions=rows,
            supervised=args.supervised_langs,
            transfer=args.transfer_langs,
        )
    except (MidalignError, OSError, KeyboardInterrupt) as e:
        return report("evaluate", e)
    print(written["tables.md"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0
