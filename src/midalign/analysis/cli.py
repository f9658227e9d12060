"""`midalign analyze`: which layer is most aligned across languages, for a model and its adapters."""

from __future__ import annotations

import argparse

from midalign.analysis.metrics import METRICS
from midalign.cliargs import named_path, named_paths
from midalign.errors import ConfigError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="layer-wise cross-lingual alignment (translation retrieval) of a model and its adapters",
        description="Translation retrieval at every layer over all language directions of a multi-way parallel "
        "set; writes CSV/JSON, summary.json with the recommended layer, plots and report.md.",
    )
    p.add_argument("--model", required=True, help="HF hub id or local model folder")
    p.add_argument(
        "--adapter", action="append", type=named_path, metavar="NAME=PATH", help="PEFT adapter to compare (repeatable)"
    )
    p.add_argument("--no-base", action="store_true", help="analyze only the adapters, not the bare model")
    p.add_argument("--data", required=True, help="FLORES-style folder or JSONL of {lang: sentence} rows")
    p.add_argument("--languages", nargs="+", help="languages to use (default: all in the data)")
    p.add_argument("--pivot", help="only directions to and from this language (default: all ordered pairs)")
    p.add_argument("--groups", help='JSON file {"group": ["lang", ...]} for per-group averages')
    p.add_argument("--metric", choices=METRICS[:3], default="margin", help="metric that picks the layer")
    p.add_argument("--k", type=int, default=4, help="neighbours in the ratio margin")
    p.add_argument("--pooling", choices=["mean", "last"], default="mean")
    p.add_argument("--include-special-tokens", action="store_true", help="pool BOS/EOS too")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--dtype", default="auto")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--cache-dir", help="where pooled vectors are cached (default: OUT/cache)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from midalign.analysis.report import write_report
    from midalign.analysis.run import analyze, load_groups
    from midalign.data.readers import read_multiway
    from midalign.modeling import load_model, load_tokenizer, read_adapter_config

    adapters = named_paths(args.adapter)
    if args.no_base and not adapters:
        raise ConfigError("--no-base needs at least one --adapter")
    for name, path in adapters.items():
        try:
            read_adapter_config(path)  # before the model loads
        except ConfigError as e:
            raise ConfigError(f"adapter {name}: {e}") from e
    languages = sorted(read_multiway(args.data, args.languages))  # validate the data before loading the model
    groups = load_groups(args.groups, languages)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    result = analyze(
        model,
        tokenizer,
        args.data,
        adapters=adapters,
        include_base=not args.no_base,
        languages=args.languages,
        pivot=args.pivot,
        groups=groups,
        k=args.k,
        metric=args.metric,
        batch_size=args.batch_size,
        max_length=args.max_length,
        pooling=args.pooling,
        include_special_tokens=args.include_special_tokens,
        cache_dir=args.cache_dir or Path(args.out) / "cache",
    )
    written = write_report(result, args.out)
    for system, s in result.summary()["systems"].items():
        print(
            f"{system}: recommended layer {s['recommended_layer']} "
            f"({args.metric} retrieval {s['at_recommended_layer'][args.metric]:.3f})"
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
