"""`midalign analyze`: which layer is most aligned across languages, for a model and its adapters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from midalign.analysis.metrics import METRICS
from midalign.commands.parser import at_least, named_paths
from midalign.errors import ConfigError
from midalign.modeling import model_init_kwargs
from midalign.pooling import POOLINGS

DESCRIPTION = """\
Translation retrieval at every layer over all language directions of a multi-way parallel set;
writes CSV/JSON, summary.json with the recommended layer, plots and report.md into --output_dir.
"""


@dataclass(kw_only=True)
class AnalyzeArguments:
    """What `midalign analyze` measures, on which model and data, and where it writes."""

    model_name_or_path: str = field(metadata={"help": "HF hub id or local model folder."})
    data: str = field(
        metadata={
            "help": "FLORES-style folder, JSONL of {lang: sentence} rows, or a data set (hub id "
            "owner/name[:config[:split]], save_to_disk folder, parquet) of such rows, translation dicts or FLORES+."
        }
    )
    output_dir: str = field(metadata={"help": "Output folder."})
    adapters: list[str] | None = field(
        default=None, metadata={"help": "PEFT adapters to compare.", "metavar": "NAME=PATH"}
    )
    include_base: bool = field(default=True, metadata={"help": "Analyze the bare model too (not only the adapters)."})
    languages: list[str] | None = field(default=None, metadata={"help": "Languages to use (default: all in the data)."})
    pivot_language: str | None = field(
        default=None, metadata={"help": "Only directions to and from this language (default: all ordered pairs)."}
    )
    groups: str | None = field(default=None, metadata={"help": 'JSON file {"group": ["lang", ...]} for averages.'})
    metric: str = field(default="margin", metadata={"help": "Metric that picks the layer.", "choices": METRICS[:3]})
    k: int = field(default=4, metadata={"help": "Neighbours in the ratio margin."})
    pooling: str = field(default="mean", metadata={"help": "Pooling over the tokens.", "choices": POOLINGS})
    include_special_tokens: bool = field(default=False, metadata={"help": "Pool BOS/EOS too."})
    batch_size: int = field(default=32, metadata={"help": "Sentences per forward."})
    max_length: int = field(default=128, metadata={"help": "Tokens per sentence (truncated)."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model repository's own code."})
    model_init_kwargs: str | None = field(
        default=None,
        metadata={
            "help": "JSON object of from_pretrained arguments: dtype, attn_implementation, revision, device_map, "
            'quantization_config, e.g. \'{"attn_implementation": "sdpa", "revision": "main"}\'.'
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where pooled vectors are cached (default: OUTPUT_DIR/cache)."}
    )

    def __post_init__(self):
        self.adapter_paths = named_paths(self.adapters, flag="--adapters")
        if not self.include_base and not self.adapter_paths:
            raise ConfigError("--no_include_base needs at least one adapter in --adapters")
        model_init_kwargs(self.model_init_kwargs)  # a bad JSON object fails here, before anything loads
        for flag in ("k", "batch_size", "max_length"):
            at_least(f"--{flag}", getattr(self, flag))


ARGUMENTS = AnalyzeArguments


def run(args: AnalyzeArguments) -> int:
    """Run `midalign analyze`: check the adapters and the data, then load the model, measure and write."""
    from midalign.analysis.report import write_report
    from midalign.analysis.run import analyze, load_groups
    from midalign.data.readers import read_multiway
    from midalign.files import check_output_folder
    from midalign.modeling import check_adapter_matches, load_model, load_tokenizer, read_adapter_config

    check_output_folder(args.output_dir, "--output_dir")
    if args.cache_dir is not None:
        check_output_folder(args.cache_dir, "--cache_dir")
    configs = {}
    for name, path in args.adapter_paths.items():
        try:
            configs[name] = read_adapter_config(path)  # before the model loads
        except ConfigError as e:
            raise ConfigError(f"adapter {name}: {e}") from e
    languages = sorted(read_multiway(args.data, args.languages))  # validate the data before loading the model
    groups = load_groups(args.groups, languages)
    tokenizer = load_tokenizer(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    model = load_model(
        args.model_name_or_path,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        init_kwargs=args.model_init_kwargs,
    )
    for name, path in args.adapter_paths.items():  # every adapter, before the base model's layers are measured
        check_adapter_matches(model, configs[name], f"adapter {name} ({path})", adapter=path)
    result = analyze(
        model,
        tokenizer,
        args.data,
        adapters=args.adapter_paths,
        include_base=args.include_base,
        languages=args.languages,
        pivot=args.pivot_language,
        groups=groups,
        k=args.k,
        metric=args.metric,
        batch_size=args.batch_size,
        max_length=args.max_length,
        pooling=args.pooling,
        include_special_tokens=args.include_special_tokens,
        cache_dir=args.cache_dir or Path(args.output_dir) / "cache",
    )
    written = write_report(result, args.output_dir)
    for system, s in result.summary()["systems"].items():
        print(
            f"{system}: recommended layer {s['recommended_layer']} "
            f"({args.metric} retrieval {s['at_recommended_layer'][args.metric]:.3f})"
        )
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
