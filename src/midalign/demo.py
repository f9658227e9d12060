"""`midalign demo`: the whole method on a synthetic multilingual world, from nothing, on a CPU.

Stages (each cached in the work folder and reused when its inputs are unchanged):
1. build the world (languages, corpus, task data, parallel pairs, a held-out multi-way set);
2. pretrain a tiny Llama on the corpus;
3. analyze the base model's layers (translation retrieval over every direction);
4. fine-tune on slot filling in the supervised language: a task-only `baseline` and `mid-align`;
5. train an `align-only` adapter and merge it into the baseline (`merged`);
6. evaluate every language zero-shot (slot F1 with copied values, slot-type F1, intent accuracy);
   stages 4-6 run in two lanes at once (baseline and merged; mid-align), one process and one thread each;
7. analyze the fine-tuned and merged models; write `results.json`, `report.md` and plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from midalign.demo_report import TASKS, plot_gain_vs_alignment, report
from midalign.errors import EXIT_INTERRUPTED, ConfigError, MidalignError
from midalign.files import check_name, write_bytes_atomic, write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)


SETTINGS = Path(__file__).parent / "configs" / "demo.yaml"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs. `preset` sizes the world and the pretraining: `ci` (plumbing, ~1.5 min), `default` (the
    README's demo, about 12.5 minutes on 2 cores) or `bench` (the transfer benchmark's larger base, pretrained once).

    The fine-tuning settings come from a YAML file (`settings`, default `midalign/configs/demo.yaml`): its
    `training` section holds `MidAlignConfig` fields, its `demo` section the alignment-only steps and the merge
    weight. `overrides` replaces single `training` fields (a benchmark's `align_weight`, a test's `lora_r`).
    """

    preset: Literal["ci", "default", "bench"] = "default"
    seed: int = 0
    # CPU threads of the pretraining, and how many systems fine-tune and evaluate at once (one thread each): a fixed
    # count, so the numbers do not depend on the machine
    threads: int = 2
    world_seed: int = 0
    align_layer: str = "0.5"
    settings: str = str(SETTINGS)
    overrides: dict = dataclasses.field(default_factory=dict)
    # Names the outputs of runs whose `overrides` change the alignment (`mid-align@subset-a`), so that they sit
    # beside the main run's instead of replacing them. The baseline is shared: it does not align.
    variant: str | None = None
    # slot: `utterance ->` then ` intent | type: value; ...`; json: the same commands answered as a JSON object
    # `{"intent": ..., "<type>": "<value>"}` (the paper's structured-generation task; outputs in `json-seed<N>/`).
    task: Literal["slot", "json"] = "slot"
    eval_limit: int | None = None  # test utterances per language (None: all)
    smallest: bool = False  # the test suite's settings: a few steps of everything

    def read_settings(self) -> tuple[dict, dict]:
        """`(training, demo)` sections of the settings file, with the overrides applied to `training`."""
        from midalign.files import read_yaml_file

        raw = read_yaml_file(self.settings)
        unknown = sorted(set(raw) - {"training", "demo"})
        if unknown or not isinstance(raw.get("training"), dict) or not isinstance(raw.get("demo"), dict):
            raise ConfigError(f"{self.settings}: expected the sections 'training' and 'demo' (found {sorted(raw)})")
        return {**raw["training"], **self.overrides}, raw["demo"]

    @property
    def runs_folder(self) -> str:
        """The folder of this seed's fine-tunings in the workdir: `seed0`, or `json-seed0` for the JSON task."""
        return f"seed{self.seed}" if self.task == "slot" else f"{self.task}-seed{self.seed}"

    @property
    def tag(self) -> str:
        """Suffix of the outputs of runs at another alignment layer (`mid-align@1.0`, `results@1.0.json`)."""
        layer = "" if self.align_layer == DemoConfig.align_layer else f"@{self.align_layer}"
        return layer + (f"@{check_name(self.variant, 'variant')}" if self.variant else "")

    def world_config(self):
        from midalign.synthetic.world import WorldConfig

        overrides = dict(corpus_lines=1500, n_train=64, n_dev=8, n_test=8, n_parallel=32, n_multiway=16)
        return WorldConfig.preset(self.preset, seed=self.world_seed, **(overrides if self.smallest else {}))

    def pretrain_config(self):
        from midalign.synthetic.pretrain import PretrainConfig

        overrides = dict(vocab_size=600, hidden_size=32, num_layers=4, intermediate_size=64, steps=8, seq_len=64)
        return PretrainConfig.preset(self.preset, seed=self.world_seed, **(overrides if self.smallest else {}))


STAGE_KEY = ".stage-key.json"


def _stage_is_current(out: Path, key: dict) -> bool:
    """Whether `out` was made from exactly `key`; a folder made from something else is set aside, not reused.

    A stage's key holds everything its output depends on (settings, fingerprints of the base model and data), so
    switching the preset, the base or a setting in one workdir reruns what changed. Nothing is deleted: an old
    output moves to `<name>.stale-N`.
    """
    recorded = out / STAGE_KEY
    if recorded.is_file() and json.loads(recorded.read_text(encoding="utf-8")) == key:
        return True
    if out.exists():
        aside, n = out.with_name(f"{out.name}.stale-1"), 1
        while aside.exists():
            n += 1
            aside = out.with_name(f"{out.name}.stale-{n}")
        logger.warning("demo: %s was made from other inputs; moved to %s", out, aside.name)
        out.rename(aside)
    return False


def _record_stage(out: Path, key: dict) -> None:
    write_json_atomic(out / STAGE_KEY, key)


def json_answer(completion: str) -> dict:
    """A slot-format answer (` intent | type: value; ...` or ` intent | None`) as the JSON task's object."""
    intent, _, slots = completion.strip().partition(" | ")
    answer: dict = {"intent": intent}
    if slots != "None":
        for part in slots.split("; "):
            key, _, value = part.partition(": ")
            answer[key] = [*answer[key], value] if isinstance(answer.get(key), list) else value
    return answer


def task_files(config: DemoConfig, paths) -> dict[str, Path]:
    """The task's train / dev / test JSONL: the world's own for `slot`; for `json` the same rows with the answer
    as a JSON object, written next to them (`world/task-json/`) and rewritten whenever the world's files change."""
    files = {"train": paths.task_train, "dev": paths.task_dev, "test": paths.task_test}
    if config.task == "slot":
        return files
    out = {}
    for split, path in files.items():
        target = path.parent.parent / f"task-{config.task}" / path.name
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for row in rows:
            row["completion"] = " " + json.dumps(json_answer(row["completion"]), ensure_ascii=False)
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            write_text_atomic(target, text)
        out[split] = target
    return out


def _train(
    config: DemoConfig, base: Path, paths, out: Path, mode: str, *, layer: str | None = None
) -> tuple[Path, bool]:
    """Fine-tune one system (returns its folder and whether it ran), reused when a finished run
    (`log_history.json`, written last) has the same inputs.

    A run killed before it finished is trained again (`resume`), from its last checkpoint if it has one.
    """
    from midalign.modeling import file_fingerprint
    from midalign.train import MidAlignConfig, train

    training, demo = config.read_settings()
    steps = {}
    if mode == "align-only":
        steps = dict(max_steps=12 if config.smallest else demo["align_only_steps"][config.preset])
    elif config.smallest:
        steps = dict(max_steps=4)
    settings = dict(
        training,
        model_name_or_path=str(base),
        output_dir=str(out),
        mode=mode,
        task_data=str(task_files(config, paths)["train"]),
        parallel_data=[str(paths.parallel)],
        pivot_language="en",
        # The baseline never aligns: runs at other layers share it (its key must not name the layer).
        align_layer=DemoConfig.align_layer if mode == "baseline" else layer or config.align_layer,
        seed=config.seed,
        logging_steps=1 if config.smallest else 10,
        save_strategy="no",
        report_to="none",
        disable_tqdm=False,  # a bar with the time left; the log lines go to <run>/log.jsonl
        **steps,
    )
    if mode == "baseline":  # which languages align does not change a model that never aligns
        settings.pop("parallel_languages", None)
    key = {
        "settings": settings,
        "base": file_fingerprint(base),
        "data": file_fingerprint(task_files(config, paths)["train"], paths.parallel),
    }
    if _stage_is_current(out, key) and (out / "log_history.json").is_file():
        return out, False
    out.mkdir(parents=True, exist_ok=True)
    _record_stage(out, key)
    logger.info("demo: training %s", out.name)
    interrupted = (out / "midalign_config.json").is_file() or any(out.glob("checkpoint-*"))
    trainer = train(MidAlignConfig(**settings, resume=interrupted))
    write_json_atomic(out / "log_history.json", trainer.state.log_history)
    return out, True


def _examples(path: Path, limit: int | None, task: str = "slot") -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    per_lang: dict[str, int] = {}
    out = []
    for r in rows:
        if limit is not None and per_lang.get(r["lang"], 0) >= limit:
            continue
        per_lang[r["lang"]] = per_lang.get(r["lang"], 0) + 1
        gold = json.loads(r["completion"]) if task == "json" else r["completion"]
        out.append({"lang": r["lang"], "prompt": r["prompt"], "gold": gold, "utt": r["utt"]})
    return out


def _predict(
    base: Path, tokenizer, adapter: Path, examples: list[dict], cache: Path, desc: str, max_new_tokens: int = 48
) -> tuple[list[str], bool]:
    """Greedy outputs of `base` + `adapter` for the examples' prompts (and whether they were generated now),
    reused from `cache` when still valid.

    The cache (`<cache>/<adapter folder>.jsonl`: a key line, then prompt and output per line) is valid for the same
    prompts in the same order and the same base and adapter files, so re-running the demo or the benchmark does not
    generate again.
    """
    from midalign.evaluation import generate
    from midalign.modeling import file_fingerprint, load_model

    prompts = [e["prompt"] for e in examples]
    path = cache / f"{adapter.name}.jsonl"
    key = {"model": file_fingerprint(base, adapter)}
    if max_new_tokens != 48:  # the budget the cached outputs were generated with (48: the slot task's, unrecorded)
        key["max_new_tokens"] = max_new_tokens
    if path.is_file():
        head, *lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        if json.loads(head) == key and [r["prompt"] for r in rows] == prompts:
            return [r["output"] for r in rows], False
    model = load_model(base, adapter=adapter, dtype="float32")
    outputs = generate(
        model, tokenizer, prompts, chat_template=False, batch_size=64, max_new_tokens=max_new_tokens, desc=desc
    )
    rows = [key] + [{"prompt": p, "output": o} for p, o in zip(prompts, outputs, strict=True)]
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return outputs, True


# The systems of each lane, in order (`merged` needs the baseline's adapter). With two threads or more the lanes run
# at the same time, each in its own process on one thread; with one thread, one after the other.
LANES = (("baseline", "merged"), ("mid-align",))
SYSTEMS = ("baseline", "mid-align", "merged")  # the order of the report's columns
_LANE_FILE = ".lane-{row}{tag}.json"  # what a lane process hands back: the seconds of its parts


def _merge(config: DemoConfig, base: Path, baseline: Path, align_only: Path, runs: Path) -> tuple[Path, bool]:
    """Merge the alignment-only adapter into the baseline at the settings' weight (returns the folder and whether it
    was merged now), reused while its inputs are the same."""
    from midalign.merging import merge_adapters
    from midalign.modeling import file_fingerprint

    weight = config.read_settings()[1]["merge_weight"]
    merged = runs / f"merged{config.tag}-w{weight}"
    key = {"weight": weight, "inputs": file_fingerprint(base, baseline, align_only)}
    if _stage_is_current(merged, key) and (merged / "merge_recipe.json").is_file():
        return merged, False
    merge_adapters(base, {"task": baseline, "align": align_only}, [1.0, weight], out_dir=merged)
    _record_stage(merged, key)
    return merged, True


def _systems(config: DemoConfig, work: Path, names, seconds: dict) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Fine-tune (or merge) and evaluate the systems `names` in order, each part reused when its inputs are unchanged.

    Returns each system's adapter folder and its outputs on the test set; `seconds` gets each part's time and
    whether it was reused.
    """
    from midalign.modeling import load_tokenizer
    from midalign.synthetic.world import WorldPaths

    base, paths, runs, tag = work / "base", WorldPaths.in_dir(work / "world"), work / config.runs_folder, config.tag
    tokenizer = load_tokenizer(base)
    examples = _examples(task_files(config, paths)["test"], config.eval_limit, config.task)
    budget = 48 if config.task == "slot" else 96  # a JSON object spells its keys and quotes

    def timed(part: str, make, *args):
        start = time.perf_counter()
        value, ran = make(*args)
        seconds[part] = {"seconds": round(time.perf_counter() - start, 1), "reused": not ran}
        return value

    folders, outputs = {}, {}
    for name in names:
        if name == "merged":
            align_only = timed("align-only", _train, config, base, paths, runs / f"align-only{tag}", "align-only")
            folders[name] = timed("merge", _merge, config, base, runs / "baseline", align_only, runs)
        else:
            # The baseline does not depend on the alignment layer: runs at other layers share it (`mid-align@1.0`).
            folder = runs / ("baseline" if name == "baseline" else f"mid-align{tag}")
            folders[name] = timed(f"fine-tune {name}", _train, config, base, paths, folder, name)
        cache, desc = runs / "eval-cache", f"evaluate {name}"
        outputs[name] = timed(desc, _predict, base, tokenizer, folders[name], examples, cache, desc, budget)
    return folders, outputs


def _run_lanes(config: DemoConfig, work: Path, lanes) -> dict:
    """Run the lanes' systems (`_systems`), each lane in its own one-thread process when there are several.

    Returns the seconds of every part. A lane that fails stops the others (what they finished stays cached).
    """
    import subprocess
    import sys

    seconds: dict = {}
    if len(lanes) == 1:
        _systems(config, work, lanes[0], seconds)
        return seconds
    runs = work / config.runs_folder
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = []
    try:
        for row, names in enumerate(lanes):
            job = json.dumps({"config": dataclasses.asdict(config), "work": str(work), "names": names, "row": row})
            code = f"from midalign.demo import lane_main; lane_main({job!r})"
            processes.append(subprocess.Popen([sys.executable, "-c", code], env=env))
        for process, names in zip(processes, lanes, strict=True):
            if process.wait() != 0:
                error = MidalignError(f"demo: fine-tuning {' and '.join(names)} failed; its error is printed above")
                error.exit_code = process.returncode if process.returncode > 0 else EXIT_INTERRUPTED
                raise error
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
    for row in range(len(lanes)):
        handed = runs / _LANE_FILE.format(row=row, tag=config.tag)
        seconds.update(json.loads(handed.read_text(encoding="utf-8")))
        handed.unlink()
    return seconds


def lane_main(job: str) -> None:
    """One lane of `_run_lanes`, in its own process: its systems on one thread, bars on the lane's own row."""
    import sys

    import datasets
    import torch
    import transformers

    from midalign.errors import report
    from midalign.progress import set_row

    job = json.loads(job)
    config = DemoConfig(**job["config"])
    torch.set_num_threads(1)
    set_row(job["row"])
    # Only the lane's own bars: the one-line bars of loading weights and preparing the data set would be drawn
    # on whatever row the terminal cursor is, over the other lane's.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    seconds: dict = {}
    try:
        _systems(config, Path(job["work"]), job["names"], seconds)
    except (MidalignError, OSError, KeyboardInterrupt) as error:
        sys.exit(report("demo", error))
    runs = Path(job["work"]) / config.runs_folder
    write_json_atomic(runs / _LANE_FILE.format(row=job["row"], tag=config.tag), seconds)


def run_demo(config: DemoConfig, workdir: str | Path) -> dict:
    """Run every stage into `workdir` and return (and write) `results.json`.

    Floating-point sums, and so every number, depend on the thread count, so the count is fixed whatever the
    machine has: the pretraining runs on `config.threads` threads; each system fine-tunes and is evaluated on one
    thread, `min(2, config.threads)` systems at a time, so from a given base model the numbers are the same for
    every thread count. (The first world's base model was fragile there: a 2-thread run once gave a task-only
    English slot F1 of 74 where one thread gave 97; docs/synthetic-world.md checks the world's properties on 1 and
    2 threads.)
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _run_demo(config, Path(workdir))
    finally:
        torch.set_num_threads(threads)


def _run_demo(config: DemoConfig, work: Path) -> dict:
    from midalign.analysis import analyze
    from midalign.analysis.report import plot_curves, write_report
    from midalign.evaluation import language_table, prediction_rows, score_by_language
    from midalign.evaluation.tables import plot_language_tables
    from midalign.modeling import load_model, load_tokenizer
    from midalign.synthetic.pretrain import INFO_FILE, is_finished, pretrain
    from midalign.synthetic.world import WORLD_VERSION, WorldPaths, build_world

    runs = work / config.runs_folder
    metrics = TASKS[config.task].metrics
    tag = config.tag
    # Seconds of the run that made each stage's output; a reused stage keeps the seconds it took then.
    times_file = runs / f"stage-seconds{tag}.json"
    times = json.loads(times_file.read_text(encoding="utf-8")) if times_file.is_file() else {}
    clock = time.perf_counter()

    def done(stage: str, ran: bool) -> None:
        nonlocal clock
        seconds = round(time.perf_counter() - clock, 1)
        if ran or stage not in times:
            times[stage] = {"seconds": seconds, "reused": not ran}
        else:
            times[stage]["reused"] = True
        logger.info("demo: %s %s in %.1f s", stage, "done" if ran else "reused", seconds)
        clock = time.perf_counter()

    world_cfg = config.world_config()
    paths = WorldPaths.in_dir(work / "world")
    info = json.loads(paths.info.read_text()) if paths.info.is_file() else {}
    built = info.get("version") != WORLD_VERSION or info.get("config") != json.loads(
        json.dumps(dataclasses.asdict(world_cfg))
    )
    if built:
        paths = build_world(world_cfg, work / "world")
        info = json.loads(paths.info.read_text())
    supervised = list(world_cfg.supervised)
    done("world", built)

    pretrain_cfg = config.pretrain_config()
    trained = not is_finished(work / "base", pretrain_cfg, paths.corpus)
    base = pretrain(paths.corpus, work / "base", pretrain_cfg, progress=True)
    base_info = json.loads((base / INFO_FILE).read_text())
    done("pretrain", trained)
    if not trained:  # the base's own record of how long its pretraining took
        times["pretrain"]["seconds"] = base_info["seconds"]

    task_files(config, paths)  # written once here, not by two lanes at once
    # Fine-tuning, merging and evaluating run on one thread per system, two systems at a time when `threads` allows:
    # the numbers are then the same for any thread count, and the second core is used (one fine-tuning spends
    # most of its time in Python, which a second thread does not speed up).
    lanes = LANES if config.threads >= 2 else (SYSTEMS,)
    clock = time.perf_counter()
    parts = _run_lanes(config, work, lanes)
    stage = "fine-tune, merge, evaluate"
    if not all(t["reused"] for t in parts.values()) or stage not in times:
        times[stage] = {"seconds": round(time.perf_counter() - clock, 1), "reused": False, "parts": parts}
    else:
        times[stage]["reused"] = True
    # Everything is cached now; this pass reads the adapters' outputs back.
    systems, outputs = _systems(config, work, SYSTEMS, {})
    examples = _examples(task_files(config, paths)["test"], config.eval_limit, config.task)
    scores, predictions = {}, {}
    for name in systems:
        by_language = score_by_language(config.task, examples, outputs[name])
        scores[name] = {lang: {m: s.get(m, math.nan) for m in metrics} for lang, s in by_language.items()}
        predictions[name] = prediction_rows(examples, outputs[name], name)
    clock = time.perf_counter()

    tokenizer = load_tokenizer(base)
    model = load_model(base, dtype="float32")
    analysis = analyze(
        model,
        tokenizer,
        paths.multiway,
        adapters={k: str(v) for k, v in systems.items()},
        cache_dir=runs / "analysis-cache",
        batch_size=64,
    )
    write_report(analysis, runs / f"analysis{tag}")
    layer_index = json.loads((systems["mid-align"] / "midalign_config.json").read_text())["align_layer_index"]
    done("analyze", True)

    tables = {m: language_table(scores, m, supervised=supervised) for m in metrics}
    training, demo_settings = config.read_settings()
    # Per language, the base model's retrieval with the supervised language at the aligned block (both directions).
    pivot, to_pivot = supervised[0], {}
    for r in analysis.rows:
        wanted = (r["system"], r["metric"], r["layer"]) == ("base", "margin", layer_index)
        if wanted and r["src"] != r["tgt"] and pivot in (r["src"], r["tgt"]):
            other = r["tgt"] if r["src"] == pivot else r["src"]
            to_pivot.setdefault(other, []).append(100 * r["value"])
    results = {
        "config": dataclasses.asdict(config) | {"training": training, "demo": demo_settings},
        "threads": config.threads,
        "task": config.task,
        "languages": [lang["code"] for lang in info["languages"]],
        "language_info": info["languages"],
        "supervised": supervised,
        "base_model": {k: base_info[k] for k in ("parameters", "corpus_tokens", "tokens_seen")}
        | {k: pretrain_cfg.__dict__[k] for k in ("num_layers", "hidden_size")},
        "test_per_language": len(examples) // max(1, len(tables[metrics[0]].languages)),
        "align_layer_index": layer_index,
        "systems": {
            name: {
                "per_language": scores[name],
                "averages": {
                    group: {m: tables[m].averages(name)[group] for m in metrics} for group in ("supervised", "transfer")
                },
            }
            for name in systems
        },
        "retrieval": {
            name: {m: analysis.curve(name, m) for m in ("cosine", "margin", "centred")} for name in analysis.systems
        },
        "recommended_layer": {name: analysis.recommended_layer(name) for name in analysis.systems},
        "base_alignment": {
            "layer": layer_index,
            "pivot": pivot,
            "margin": {lang: sum(v) / len(v) for lang, v in sorted(to_pivot.items())},
        },
        "seconds": times,
    }
    write_json_atomic(times_file, times)
    write_json_atomic(runs / f"results{tag}.json", results)
    for name, rows in predictions.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        write_text_atomic(runs / f"predictions-{name}{tag}.jsonl", lines)
    write_bytes_atomic(runs / f"retrieval{tag}.png", plot_curves(analysis, "margin", mark_layer=layer_index))
    plot_language_tables(
        [tables[m] for m in metrics],
        runs / f"transfer{tag}.png",
        title=f"Zero-shot transfer from {', '.join(supervised)} (seed {config.seed}, alignment at block {layer_index})",
    )
    write_bytes_atomic(runs / f"gain-vs-alignment{tag}.png", plot_gain_vs_alignment(results))
    write_text_atomic(runs / f"report{tag}.md", report(results, tables, tag))  # demo_report.py
    return results
