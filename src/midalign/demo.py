"""`midalign demo`: the whole method on a synthetic multilingual world, from nothing, on a CPU.

Stages (each cached in the work folder and reused when its inputs are unchanged):
1. build the world (languages, corpus, task data, parallel pairs, a held-out multi-way set);
2. pretrain a tiny Llama on the corpus;
3. analyze the base model's layers (translation retrieval over every direction);
4. fine-tune on the task (slot filling by default) in the supervised languages: a task-only `baseline` and `mid-align`;
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
import time
from pathlib import Path

from midalign.demo_config import SETTINGS, DemoConfig, supervised_languages, task_files, task_path
from midalign.demo_report import TASKS, plot_gain_vs_alignment, report
from midalign.demo_systems import LANES, SYSTEMS, eval_examples, run_lanes
from midalign.files import write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["SETTINGS", "DemoConfig", "run_demo"]

logger = logging.getLogger(__name__)


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

    config.check()  # before the world is built and the base pretrained
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
    from midalign.synthetic.languages import PIVOT
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
    codes = [lang["code"] for lang in info["languages"]]
    supervised = supervised_languages(config, codes, list(world_cfg.supervised))
    done("world", built)

    pretrain_cfg = config.pretrain_config()
    trained = not is_finished(work / "base", pretrain_cfg, paths.corpus)
    base = pretrain(paths.corpus, work / "base", pretrain_cfg, progress=True)
    base_info = json.loads((base / INFO_FILE).read_text())
    done("pretrain", trained)
    if not trained:  # the base's own record of how long its pretraining took
        times["pretrain"]["seconds"] = base_info["seconds"]

    task_files(config, paths)  # written once here; the lanes read them (`task_path`)
    # Fine-tuning, merging and evaluating run on one thread per system, two systems at a time when `threads` allows:
    # the numbers are then the same for any thread count, and the second core is used (one fine-tuning spends
    # most of its time in Python, which a second thread does not speed up).
    lanes = LANES if config.threads >= 2 else (SYSTEMS,)
    clock = time.perf_counter()
    parts, systems, outputs = run_lanes(config, work, lanes)
    stage = "fine-tune, merge, evaluate"
    if not all(t["reused"] for t in parts.values()) or stage not in times:
        times[stage] = {"seconds": round(time.perf_counter() - clock, 1), "reused": False, "parts": parts}
    else:
        times[stage]["reused"] = True
    systems = {name: systems[name] for name in SYSTEMS}  # the report's order, whatever the lanes' order
    examples = eval_examples(task_path(config, paths, "test"), config.eval_limit, config.task)
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
    # Per language, the base model's retrieval with the pivot (English) at the aligned block (both directions).
    pivot, to_pivot = PIVOT, {}
    for r in analysis.rows:
        wanted = (r["system"], r["metric"], r["layer"]) == ("base", "margin", layer_index)
        if wanted and r["src"] != r["tgt"] and pivot in (r["src"], r["tgt"]):
            other = r["tgt"] if r["src"] == pivot else r["src"]
            to_pivot.setdefault(other, []).append(100 * r["value"])
    results = {
        "config": dataclasses.asdict(config) | {"training": training, "demo": demo_settings},
        "threads": config.threads,
        "task": config.task,
        "languages": codes,
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
