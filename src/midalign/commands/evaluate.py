"""`midalign evaluate`: generate with a base model and its adapters (or re-score predictions), per language."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from midalign.commands.parser import at_least, named_paths
from midalign.errors import ConfigError, DataError
from midalign.files import read_json_file
from midalign.modeling import BASE, check_device, model_init_kwargs

Format = Literal["jsonl", "massive", "massive-hf", "text", "flores"]
FORMATS = get_args(Format)
CHAT_TEMPLATE = {"auto": None, "on": True, "off": False}

DESCRIPTION = """\
Generate greedily with a base model and its adapters (--model_name_or_path), or re-score predictions
files (--predictions), then write per-language scores, tables and charts into --output_dir.
"""
GROUPS = {
    "data": ["format", "data", "columns", "locales", "partition", "with_intent", "pairs", "split", "limit"],
    "generation": [
        "backend",
        "vllm_kwargs",
        "adapters",
        "include_base",
        "dtype",
        "device",
        "trust_remote_code",
        "model_init_kwargs",
        "batch_size",
        "max_new_tokens",
        "chat_template",
        "system_prompt",
        "progress",
    ],
    "scoring": ["supervised_languages", "transfer_languages", "char_languages", "schema", "comet"],
}


@dataclass(kw_only=True)
class EvaluateArguments:
    """What `midalign evaluate` scores (generating with a model, or re-scoring predictions) and where it writes."""

    task: Literal["slot", "mt", "json"] = field(metadata={"help": "The task the outputs are scored for."})
    output_dir: str = field(metadata={"help": "Output folder."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model (hub id or folder) to generate with; or give --predictions."}
    )
    predictions: list[str] | None = field(
        default=None,
        metadata={
            "help": "Re-score instead of generating: a predictions JSONL this command wrote, or (with --data) a file "
            "aligned with the data: JSONL with 'prediction', or plain text, one per line.",
            "metavar": "NAME=FILE",
        },
    )
    # data
    format: Format = field(default="jsonl", metadata={"help": "Data format."})
    data: str | None = field(
        default=None,
        metadata={
            "help": "jsonl: a JSONL, parquet, CSV or JSON file, a save_to_disk folder or a hub id "
            "owner/name[:config[:split]]; massive: the same, or the release's folder of <locale>.jsonl; text: a path "
            "pattern with {lang} (and {src}, {tgt}); flores: the dataset folder."
        },
    )
    columns: list[str] | None = field(
        default=None,
        metadata={"help": "jsonl: the data's column names when they differ, e.g. prompt=utt gold=answer lang=locale."},
    )
    locales: list[str] | None = field(default=None, metadata={"help": "massive, massive-hf: locales to evaluate."})
    partition: str = field(default="test", metadata={"help": "massive, massive-hf: train, dev or test."})
    with_intent: bool = field(default=False, metadata={"help": "massive: golds start with the intent."})
    pairs: list[str] | None = field(default=None, metadata={"help": "text, flores: directions SRC-TGT."})
    split: str = field(default="devtest", metadata={"help": "flores: dev or devtest."})
    limit: int | None = field(default=None, metadata={"help": "Keep the first N examples of each language."})
    # generation
    backend: Literal["transformers", "vllm"] = field(
        default="transformers",
        metadata={
            "help": "transformers: batched generate (data parallel under accelerate launch / torchrun); vllm: one "
            "vLLM engine with LoRA adapters (pip install 'midalign[vllm]', CUDA only, unverified)."
        },
    )
    vllm_kwargs: str | None = field(
        default=None,
        metadata={"help": "vllm: JSON object of vllm.LLM arguments, e.g. '{\"tensor_parallel_size\": 2}'."},
    )
    adapters: list[str] | None = field(
        default=None, metadata={"help": "PEFT adapters to generate with.", "metavar": "NAME=PATH"}
    )
    include_base: bool = field(default=False, metadata={"help": "With --adapters: also score the bare base model."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})
    device: str = field(default="auto", metadata={"help": "auto (cuda when available), cpu, cuda, cuda:1, ..."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model repository's own code."})
    model_init_kwargs: str | None = field(
        default=None,
        metadata={
            "help": "JSON object of from_pretrained arguments: dtype, attn_implementation, revision, device_map, "
            'quantization_config, e.g. \'{"attn_implementation": "sdpa", "revision": "main"}\'.'
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per generation batch."})
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens generated per prompt at most."})
    chat_template: Literal["auto", "on", "off"] = field(
        default="auto", metadata={"help": "Wrap prompts in the tokenizer's chat template (auto: when it has one)."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Replace every example's system prompt."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})
    # scoring
    supervised_languages: list[str] = field(
        default_factory=list, metadata={"help": "Languages the systems were trained on."}
    )
    transfer_languages: list[str] | None = field(
        default=None,
        metadata={"help": "Zero-shot languages (default: all others when --supervised_languages is set)."},
    )
    char_languages: list[str] | None = field(
        default=None, metadata={"help": "slot: languages split into characters (default: ja zh)."}
    )
    schema: str | None = field(default=None, metadata={"help": "json: JSON schema file the outputs should satisfy."})
    comet: bool = field(default=False, metadata={"help": "mt: add COMET (pip install 'midalign[comet]')."})

    def __post_init__(self):
        if self.model_name_or_path is None and self.predictions is None:
            raise ConfigError("needs --model_name_or_path (to generate) or --predictions (to re-score)")
        if self.model_name_or_path is not None and self.predictions is not None:
            raise ConfigError("give --model_name_or_path (to generate) or --predictions (to re-score), not both")
        if self.adapters and self.predictions:
            raise ConfigError("--adapters needs --model_name_or_path")
        if self.limit is not None:
            at_least("--limit", self.limit)
        at_least("--batch_size", self.batch_size)
        at_least("--max_new_tokens", self.max_new_tokens)
        model_init_kwargs(self.model_init_kwargs)  # a bad JSON object fails here, before anything loads
        model_init_kwargs(self.vllm_kwargs, "--vllm_kwargs")
        if self.backend == "vllm" and self.predictions:
            raise ConfigError("--backend vllm generates: give --model_name_or_path, not --predictions")
        check_device(self.device)
        # Options that would change nothing are refused, not ignored (docs/evaluation.md, "Bad input").
        if self.predictions:
            self._refuse_given(GROUPS["generation"], "when generating (--model_name_or_path), not re-scoring")
            if not self.data and self.format != "massive-hf":
                self._refuse_given(GROUPS["data"], "to --data; predictions files are re-scored whole")

    def _refuse_given(self, names: list[str], why: str) -> None:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        given = [f"--{name}" for name in names if name != "progress" and getattr(self, name) != defaults[name]]
        if given:
            raise ConfigError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} {why}")

    def system_names(self) -> list[str]:
        """The systems this evaluation scores, in order (known before anything loads)."""
        if self.predictions:
            return list(named_paths(self.predictions, "system", flag="--predictions", dots=True))
        adapters = list(named_paths(self.adapters, flag="--adapters"))
        return [BASE] * (self.include_base or not adapters) + adapters


ARGUMENTS = EvaluateArguments


def _is_massive_release(data: str) -> bool:
    """MASSIVE's JSONL release: one `.jsonl` file or its folder of `<locale>.jsonl` (rows carry a `partition`)."""
    from midalign.data.sources import is_saved_dataset

    path = Path(data)
    return path.suffix.lower() == ".jsonl" or (path.is_dir() and not is_saved_dataset(path))


def _load_data(args: EvaluateArguments) -> list[dict]:
    from midalign.data.sources import parse_columns
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
    if args.columns and args.format != "jsonl":
        raise ConfigError(f"--columns applies to --format jsonl, not {args.format}")
    if args.format == "jsonl":
        examples = loaders.load_examples(args.data, args.task, columns=parse_columns(args.columns, "--columns"))
    elif args.format == "massive" and _is_massive_release(args.data):
        examples = loaders.load_massive_jsonl(args.data, locales=args.locales, **massive)
    elif args.format == "massive":  # MASSIVE's columns in any other source: the split names the partition
        examples = loaders.load_massive(args.data, locales=args.locales, with_intent=args.with_intent)
    elif args.format == "massive-hf":
        examples = loaders.load_massive_hf(args.locales, **massive)
    elif args.format == "text":
        examples = loaders.load_text_pairs(args.data, args.pairs)
    else:
        examples = loaders.load_flores(args.data, args.pairs, split=args.split)
    if args.limit is not None:
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


def _rescore(args: EvaluateArguments) -> dict[str, tuple[list[dict], list[str]]]:
    from midalign.evaluation.loaders import load_predictions, read_prediction_lines

    systems = {}
    examples = _load_data(args) if args.data or args.format == "massive-hf" else None
    for name, path in named_paths(args.predictions, "system", flag="--predictions", dots=True).items():
        if examples is None:
            systems[name] = load_predictions(path, args.task)
        else:
            systems[name] = (examples, read_prediction_lines(path, len(examples), examples))
    return systems


def _generate(args: EvaluateArguments) -> dict[str, tuple[list[dict], list[str]]]:
    from accelerate import PartialState

    from midalign.evaluation.generation import adapter_systems, generate
    from midalign.evaluation.runner import prediction_rows
    from midalign.evaluation.tables import language_groups
    from midalign.files import write_jsonl_atomic
    from midalign.modeling import load_model, load_tokenizer

    examples = _load_data(args)
    # Checked now, not after hours of generation.
    languages = list(dict.fromkeys(e["lang"] for e in examples))
    language_groups(languages, args.supervised_languages, args.transfer_languages)
    adapters = named_paths(args.adapters, flag="--adapters")
    output_dir = Path(args.output_dir)
    if args.backend == "vllm":
        from midalign.evaluation.vllm_backend import generate_systems

        outputs = generate_systems(
            args.model_name_or_path,
            load_tokenizer(args.model_name_or_path, trust_remote_code=args.trust_remote_code),
            adapters,
            [e["prompt"] for e in examples],
            system_prompts=[e.get("system_prompt") for e in examples],
            include_base=args.include_base,
            chat_template=CHAT_TEMPLATE[args.chat_template],
            max_new_tokens=args.max_new_tokens,
            engine_kwargs=model_init_kwargs(args.vllm_kwargs, "--vllm_kwargs"),
        )
        for name, predictions in outputs.items():
            write_jsonl_atomic(output_dir / f"predictions-{name}.jsonl", prediction_rows(examples, predictions, name))
        return {name: (examples, predictions) for name, predictions in outputs.items()}
    # auto: this process's device (each process its own GPU under `accelerate launch`), else the CPU.
    device = PartialState().device if args.device == "auto" else args.device
    tokenizer = load_tokenizer(args.model_name_or_path, trust_remote_code=args.trust_remote_code)
    model = load_model(
        args.model_name_or_path,
        dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
        init_kwargs=args.model_init_kwargs,
    )
    if "device_map" not in model_init_kwargs(args.model_init_kwargs):  # else accelerate placed it already
        model = model.to(device)
    systems = {}
    for name, system_model in adapter_systems(model, adapters, include_base=args.include_base or not adapters):
        predictions = generate(
            system_model,
            tokenizer,
            [e["prompt"] for e in examples],
            system_prompts=[e.get("system_prompt") for e in examples],
            chat_template=CHAT_TEMPLATE[args.chat_template],
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            progress=args.progress,
            desc=name,
        )
        # Saved at once, so a failure in a later system keeps this one's predictions (rewritten, same rows, at the end).
        if PartialState().is_main_process:  # every process holds every output; one writes
            write_jsonl_atomic(output_dir / f"predictions-{name}.jsonl", prediction_rows(examples, predictions, name))
        systems[name] = (examples, predictions)
    return systems


def run(args: EvaluateArguments) -> int:
    """Run `midalign evaluate`: check the options, generate (or read the predictions), score and write.

    Under `accelerate launch` (or `torchrun`) every process generates a share of the prompts; the main one writes.
    """
    from accelerate import PartialState

    from midalign.evaluation.runner import (
        check_report_dir,
        check_score_options,
        prediction_rows,
        score_by_language,
        write_report,
    )

    score_options = {"comet": args.comet}
    if args.char_languages is not None:
        score_options["char_langs"] = args.char_languages
    if args.schema is not None:
        try:
            score_options["schema"] = read_json_file(args.schema)
        except DataError as e:
            raise DataError(f"cannot read the schema: {e.reason}", path=e.path, line=e.line, field=e.field) from e
    check_score_options(args.task, score_options.get("char_langs"), score_options.get("schema"), args.comet)
    check_report_dir(args.output_dir, args.system_names())  # before generating, not after
    systems = _rescore(args) if args.predictions else _generate(args)  # names checked there
    if not PartialState().is_main_process:  # data-parallel generation: the main process scores and writes
        return 0
    scores = {name: score_by_language(args.task, ex, preds, **score_options) for name, (ex, preds) in systems.items()}
    rows = {name: prediction_rows(ex, preds, name) for name, (ex, preds) in systems.items()}
    written = write_report(
        Path(args.output_dir),
        args.task,
        scores,
        predictions=rows,
        supervised=args.supervised_languages,
        transfer=args.transfer_languages,
    )
    print(written["tables.md"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(path) for path in written.values()))
    return 0
