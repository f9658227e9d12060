"""The demo's systems: fine-tune (or merge) and evaluate the task-only baseline, mid-align and the merged adapter,
each part cached in the workdir; two lanes of systems run at once, each in its own one-thread process."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

from midalign.demo_config import DemoConfig, record_stage, stage_is_current, task_path
from midalign.errors import EXIT_INTERRUPTED, MidalignError
from midalign.files import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)


def _train(
    config: DemoConfig, base: Path, paths, out: Path, mode: str, *, layer: str | None = None
) -> tuple[Path, bool]:
    """Fine-tune one system (returns its folder and whether it ran), reused when a finished run
    (`log_history.json`, written last) has the same inputs.

    A run killed before it finished is trained again (`resume`), from its last checkpoint if it has one.
    """
    from midalign.modeling import file_fingerprint
    from midalign.synthetic.languages import PIVOT
    from midalign.train import MidAlignConfig, train

    training, demo = config.read_settings()
    train_file = task_path(config, paths, "train")  # written by `task_files` before the lanes start
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
        task_data=str(train_file),
        parallel_data=[str(paths.parallel)],
        pivot_language=PIVOT,  # the world's English: the language every other one aligns to
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
        "data": file_fingerprint(train_file, paths.parallel),
    }
    if stage_is_current(out, key) and (out / "log_history.json").is_file():
        return out, False
    out.mkdir(parents=True, exist_ok=True)
    record_stage(out, key)
    logger.info("demo: training %s", out.name)
    interrupted = (out / "midalign_config.json").is_file() or any(out.glob("checkpoint-*"))
    trainer = train(MidAlignConfig(**settings, resume=interrupted))
    write_json_atomic(out / "log_history.json", trainer.state.log_history)
    return out, True


def eval_examples(path: Path, limit: int | None, task: str = "slot") -> list[dict]:
    """The test rows of `path` as `midalign.evaluation` examples, at most `limit` per language."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    per_lang: dict[str, int] = {}
    out = []
    for r in rows:
        if limit is not None and per_lang.get(r["lang"], 0) >= limit:
            continue
        per_lang[r["lang"]] = per_lang.get(r["lang"], 0) + 1
        if task == "mt":
            example = {"gold": r["completion"].strip()} | {k: r[k] for k in ("src_lang", "tgt_lang", "source")}
        else:
            example = {"gold": json.loads(r["completion"]) if task == "json" else r["completion"], "utt": r["utt"]}
        out.append({"lang": r["lang"], "prompt": r["prompt"]} | example)
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
    key = {"model": file_fingerprint(base, adapter), "lora": "merged"}  # how the adapter was applied (below)
    if max_new_tokens != 48:  # the budget the cached outputs were generated with (48: the slot task's, unrecorded)
        key["max_new_tokens"] = max_new_tokens
    if path.is_file():
        head, *lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        if json.loads(head) == key and [r["prompt"] for r in rows] == prompts:
            return [r["output"] for r in rows], False
    # Folded into the weights (this model is loaded for this system only): generation runs 1.4 times as fast on one
    # thread as through PEFT's LoRA layers, with the same greedy outputs (benchmarks/RESULTS.md, "Demo evaluation").
    model = load_model(base, adapter=adapter, dtype="float32").merge_and_unload()
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
    if stage_is_current(merged, key) and (merged / "merge_recipe.json").is_file():
        return merged, False
    merge_adapters(base, {"task": baseline, "align": align_only}, [1.0, weight], out_dir=merged)
    record_stage(merged, key)
    return merged, True


def run_systems(config: DemoConfig, work: Path, names, seconds: dict) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """Fine-tune (or merge) and evaluate the systems `names` in order, each part reused when its inputs are unchanged.

    Returns each system's adapter folder and its outputs on the test set; `seconds` gets each part's time and
    whether it was reused.
    """
    from midalign.modeling import load_tokenizer
    from midalign.synthetic.world import WorldPaths

    base, paths, runs, tag = work / "base", WorldPaths.in_dir(work / "world"), work / config.runs_folder, config.tag
    tokenizer = load_tokenizer(base)
    examples = eval_examples(task_path(config, paths, "test"), config.eval_limit, config.task)
    # A JSON object spells its keys and quotes; the world's longest English sentence is 18 tokens.
    budget = {"slot": 48, "json": 96, "mt": 32}[config.task]

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


def run_lanes(config: DemoConfig, work: Path, lanes) -> tuple[dict, dict[str, Path], dict[str, list[str]]]:
    """Run the lanes' systems (`run_systems`), each lane in its own one-thread process when there are several.

    Returns the seconds of every part, and every system's adapter folder and test outputs (as `run_systems`). A lane
    that fails stops the others (what they finished stays cached).
    """
    import subprocess
    import sys

    seconds: dict = {}
    if len(lanes) == 1:
        return seconds, *run_systems(config, work, lanes[0], seconds)
    runs = work / config.runs_folder
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = []
    try:
        for row, names in enumerate(lanes):
            job = json.dumps({"config": dataclasses.asdict(config), "work": str(work), "names": names, "row": row})
            code = f"from midalign.demo_systems import lane_main; lane_main({job!r})"
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
    # Everything is cached now; this pass reads the lanes' adapters and outputs back.
    return seconds, *run_systems(config, work, [name for lane in lanes for name in lane], {})


def lane_main(job: str) -> None:
    """One lane of `run_lanes`, in its own process: its systems on one thread, bars on the lane's own row."""
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
        run_systems(config, Path(job["work"]), job["names"], seconds)
    except (MidalignError, OSError, KeyboardInterrupt) as error:
        sys.exit(report("demo", error))
    runs = Path(job["work"]) / config.runs_folder
    write_json_atomic(runs / _LANE_FILE.format(row=job["row"], tag=config.tag), seconds)
