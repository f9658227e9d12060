"""The demo pipeline on its smallest settings: every stage writes its outputs; the alignment loss falls."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import pytest
import torch
from safetensors.torch import load_file, save_file

from midalign import evaluation
from midalign.cli import main
from midalign.demo import DemoConfig, run_demo
from midalign.demo_report import METRICS

# Reruns on one thread: in this process, where the tests can watch `generate` (with two threads the systems fine-tune
# and evaluate in two child processes; the fixture's first run takes that path).
ONE = dict(preset="ci", smallest=True, threads=1)
CLI = ["demo", "--preset", "ci", "--smallest", "--threads", "1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    return work, run_demo(DemoConfig(preset="ci", smallest=True, threads=2), work)


def test_every_stage_writes_its_outputs(demo):
    work, results = demo
    assert (work / "world" / "world.json").is_file() and (work / "world" / "corpus.txt").is_file()
    assert (work / "base" / "model.safetensors").is_file() and (work / "base" / "tokenizer.json").is_file()
    runs = work / "seed0"
    merged = f"merged-w{results['config']['demo']['merge_weight']}"
    for name in ("baseline", "mid-align", "align-only", merged):
        assert (runs / name / "adapter_model.safetensors").is_file(), name
    assert (runs / merged / "merge_recipe.json").is_file()
    outputs = ("results.json", "report.md", "transfer.png", "retrieval.png", "gain-vs-alignment.png")
    for name in (*outputs, "analysis/summary.json"):
        assert (runs / name).is_file(), name
    assert json.loads((runs / "results.json").read_text()) == json.loads(json.dumps(results))


def test_results_cover_every_system_language_and_layer(demo):
    _, results = demo
    assert set(results["systems"]) == {"baseline", "mid-align", "merged"}
    languages = set(results["languages"])
    for system in results["systems"].values():
        assert set(system["per_language"]) == languages
        assert all(set(scores) == set(METRICS) for scores in system["per_language"].values())
        assert set(system["averages"]) == {"supervised", "transfer"}
    assert set(results["retrieval"]) == {"base", "baseline", "mid-align", "merged"}
    assert len(results["retrieval"]["base"]["margin"]) == 5  # 4 blocks + embeddings


def test_alignment_loss_fell(demo):
    work, _ = demo
    history = json.loads((work / "seed0" / "align-only" / "log_history.json").read_text())
    losses = [h["align_loss"] for h in history if "align_loss" in h]
    assert len(losses) == 12
    assert sum(losses[-3:]) < sum(losses[:3])


def test_rerun_reuses_every_stage(demo, capsys, monkeypatch):
    work, _ = demo
    before = {p: p.stat().st_mtime_ns for p in (work / "seed0").rglob("adapter_model.safetensors")}
    monkeypatch.setattr(evaluation, "generate", _refuse)  # the predictions come from the cache
    assert main([*CLI, "--output_dir", str(work)]) == 0
    after = {p: p.stat().st_mtime_ns for p in (work / "seed0").rglob("adapter_model.safetensors")}
    assert before == after
    assert "transfer" in capsys.readouterr().out
    # The report keeps the seconds of the run that made each stage (a rerun said `pretrain: 0.0`).
    times = json.loads((work / "seed0" / "results.json").read_text())["seconds"]
    assert times["pretrain"]["reused"] and times["pretrain"]["seconds"] > 0
    lanes = times["fine-tune, merge, evaluate"]
    assert lanes["reused"] and lanes["seconds"] > 1
    parts = ("fine-tune baseline", "align-only", "merge", "evaluate baseline", "evaluate merged", "fine-tune mid-align")
    assert set(lanes["parts"]) == {*parts, "evaluate mid-align"}  # each part's seconds, from the two lanes


def test_two_lanes_give_the_numbers_of_one(demo, tmp_path):
    """The fixture fine-tuned and evaluated in two one-thread processes; one thread in this process gives the same
    adapters and scores (the base model is copied, so only the fine-tuning runs again)."""
    work, results = demo
    shutil.copytree(work / "world", tmp_path / "world")
    shutil.copytree(work / "base", tmp_path / "base")
    again = run_demo(DemoConfig(**ONE), tmp_path)
    assert again["systems"] == json.loads(json.dumps(results["systems"]))
    for name in ("baseline", "mid-align"):
        first, second = (load_file(w / "seed0" / name / "adapter_model.safetensors") for w in (work, tmp_path))
        assert all(torch.equal(first[k], second[k]) for k in first), name


def test_a_failing_lane_is_one_line_and_stops_the_run(demo, tmp_path, capfd):
    work, _ = demo
    for folder in ("world", "base"):
        shutil.copytree(work / folder, tmp_path / folder)
    settings = tmp_path / "bad.yaml"
    settings.write_text((files("midalign") / "configs" / "demo.yaml").read_text().replace("lora_r: 32", "lora_r: -1"))
    code = main(["demo", "--preset", "ci", "--smallest", "--output_dir", str(tmp_path), "--settings", str(settings)])
    err = capfd.readouterr().err  # the lanes' processes print to the same stderr
    assert code == 2 and "failed; its error is printed above" in err.splitlines()[-1]
    assert "midalign demo: error: --lora_r must be >= 1, got -1" in err and "Traceback" not in err
    assert not (tmp_path / "seed0" / "results.json").exists()


def _refuse(*args, **kwargs):
    raise AssertionError("generated again")


def test_a_rewritten_adapter_is_evaluated_again(demo, monkeypatch):
    work, results = demo
    calls = []

    def counting(*args, **kwargs):
        calls.append(kwargs["desc"])
        return real(*args, **kwargs)

    real = evaluation.generate
    monkeypatch.setattr(evaluation, "generate", counting)
    weights = work / "seed0" / f"merged-w{results['config']['demo']['merge_weight']}" / "adapter_model.safetensors"
    # Rewritten with the same tensors (new bytes, the same function): evaluated again, with the same outputs.
    save_file(load_file(weights), weights, metadata={"format": "pt", "rewritten": "yes"})
    again = run_demo(DemoConfig(**ONE), work)
    assert calls == ["evaluate merged"]
    assert again["systems"] == json.loads(json.dumps(results["systems"]))  # greedy decoding: the same outputs


def test_another_alignment_layer_reuses_the_baseline(demo, capsys):
    work, _ = demo
    baseline = work / "seed0" / "baseline" / "adapter_model.safetensors"
    stamp = baseline.stat().st_mtime_ns
    assert main([*CLI, "--output_dir", str(work), "--align_layer", "1.0"]) == 0
    assert baseline.stat().st_mtime_ns == stamp
    results = json.loads((work / "seed0" / "results@1.0.json").read_text())
    assert results["align_layer_index"] == 4  # the top of the 4 blocks
    assert (work / "seed0" / "mid-align@1.0" / "adapter_model.safetensors").is_file()
    assert "report@1.0.md" in capsys.readouterr().out
    report = (work / "seed0" / "report@1.0.md").read_text()
    for plot in ("transfer@1.0.png", "retrieval@1.0.png"):  # the report shows its own run's plots
        assert f"]({plot})" in report and (work / "seed0" / plot).is_file()


def test_changed_inputs_set_old_stages_aside_and_an_interrupted_stage_reruns(demo):
    work, _ = demo
    runs = work / "seed0"
    (runs / "align-only" / "log_history.json").unlink()  # killed between the adapter's save and its log
    run_demo(DemoConfig(**ONE), work)
    assert (runs / "align-only" / "log_history.json").is_file()

    copy = work.parent / (work.name + "-changed")
    shutil.copytree(work, copy)
    changed = run_demo(DemoConfig(**ONE, overrides={"lora_r": 4}), copy)
    for name in ("baseline", "mid-align", "align-only"):
        assert (copy / "seed0" / f"{name}.stale-1" / "adapter_model.safetensors").is_file(), name  # nothing lost
        config = json.loads((copy / "seed0" / name / "midalign_config.json").read_text())
        assert config["lora_r"] == 4
    assert (copy / "seed0" / f"merged-w{changed['config']['demo']['merge_weight']}.stale-1").is_dir()
    assert set(changed["systems"]) == {"baseline", "mid-align", "merged"}


def test_the_report_reads_as_a_result_section_in_percent(demo):
    work, results = demo
    report = (work / "seed0" / "report.md").read_text()
    for part in ("**What ran.**", "## Results", "**What it shows.**", "## Per language", "## Alignment per layer"):
        assert part in report
    assert "## Stage times" in report and "{'world'" not in report  # a table, not a Python dict
    layer = results["align_layer_index"]
    for name in ("base", "mid-align"):  # retrieval in percent, as the scores
        assert f"{name} {100 * results['retrieval'][name]['margin'][layer]:.1f}%" in report
    baseline, aligned = (
        results["systems"][n]["averages"]["transfer"]["slot_type_f1"] for n in ("baseline", "mid-align")
    )
    assert f"slot-type F1 {aligned - baseline:+.1f}" in report  # the verdict is computed from the table
    kept = (
        results["systems"]["mid-align"]["averages"]["supervised"]["slot_f1"]
        - (results["systems"]["baseline"]["averages"]["supervised"]["slot_f1"])
    )
    verdict = "holds in this run" if kept >= -1 else "does not hold in this run"  # a rise is kept too
    assert f"*The supervised language is kept* (at most 1 point lower): slot F1 {kept:+.1f}; {verdict}." in report
    rise = 100 * (
        results["retrieval"]["mid-align"]["margin"][layer] - results["retrieval"]["baseline"]["margin"][layer]
    )
    assert f", {rise:+.1f}; {'holds' if rise >= 25 else 'does not hold'} in this run." in report


def test_the_report_shows_the_gain_against_the_base_alignment(demo):
    work, results = demo
    report = (work / "seed0" / "report.md").read_text()
    base = results["base_alignment"]
    transfer = [lang for lang in results["languages"] if lang not in results["supervised"]]
    assert sorted(base["margin"]) == sorted(transfer) and base["layer"] == results["align_layer_index"]
    assert "## Gain against the base model's alignment" in report and "](gain-vs-alignment.png)" in report
    per_language = {s: results["systems"][s]["per_language"] for s in ("baseline", "mid-align")}
    for lang in transfer:
        slot, intent = (per_language["mid-align"][lang][m] - per_language["baseline"][lang][m] for m in METRICS[1:])
        assert f"| {lang} | {base['margin'][lang]:.1f} | {slot:+.1f} | {intent:+.1f} |" in report


def test_a_variant_aligns_other_languages_beside_the_main_run(demo):
    work, results = demo
    baseline = work / "seed0" / "baseline" / "adapter_model.safetensors"
    stamp, main_run = baseline.stat().st_mtime_ns, (work / "seed0" / "mid-align" / "adapter_model.safetensors")
    main_stamp = main_run.stat().st_mtime_ns
    languages = [lang for lang in results["languages"] if lang not in results["supervised"]][:2]
    config = DemoConfig(**ONE, variant="sub", overrides={"parallel_languages": languages})
    variant = run_demo(config, work)
    assert baseline.stat().st_mtime_ns == stamp and main_run.stat().st_mtime_ns == main_stamp  # shared, untouched
    recorded = json.loads((work / "seed0" / "mid-align@sub" / "midalign_config.json").read_text())
    assert recorded["parallel_languages"] == languages
    assert (work / "seed0" / "report@sub.md").is_file() and set(variant["systems"]) == set(results["systems"])


def test_the_json_task_runs_beside_the_slot_task(demo):
    """Claim 9's structured task: the same commands answered as JSON objects, fine-tuned and scored by the JSON
    metrics in `json-seed0/`, on the same world and base model."""
    from midalign.demo_config import json_answer, task_files
    from midalign.demo_report import TASKS
    from midalign.synthetic.world import WorldPaths

    work, _ = demo
    results = run_demo(DemoConfig(**ONE, task="json"), work)
    assert results["task"] == "json"
    runs = work / "json-seed0"
    for name in ("baseline", "mid-align", "align-only"):
        recorded = json.loads((runs / name / "midalign_config.json").read_text())
        assert recorded["task_data"].endswith("task-json/train.jsonl")
    metrics = set(TASKS["json"].metrics)
    for system in results["systems"].values():
        assert all(set(scores) == metrics for scores in system["per_language"].values())
    paths = WorldPaths.in_dir(work / "world")
    slot_row = json.loads(paths.task_test.read_text().splitlines()[0])
    json_row = json.loads(task_files(DemoConfig(task="json"), paths)["test"].read_text().splitlines()[0])
    assert json.loads(json_row["completion"]) == json_answer(slot_row["completion"])
    assert "JSON field F1" in (runs / "report.md").read_text()


def test_the_translation_task_runs_beside_the_slot_task(demo, monkeypatch):
    """Claim 9's translation task: into English, fine-tuned from `MT_SOURCES` and scored by chrF++ and BLEU per source
    language in `mt-seed0/`; its files go through the real readers."""
    from midalign import demo_config
    from midalign.data.readers import read_multiway, read_parallel, read_task_examples
    from midalign.demo_config import MT_PAIRS_PER_SOURCE, MT_SOURCES, task_files
    from midalign.evaluation.loaders import load_examples
    from midalign.synthetic.world import WorldPaths

    work, _ = demo
    results = run_demo(DemoConfig(**ONE, task="mt"), work)
    assert results["task"] == "mt" and results["supervised"] == list(MT_SOURCES)
    transfer = set(results["languages"]) - set(MT_SOURCES) - {"en"}
    for system in results["systems"].values():
        assert set(system["per_language"]) == set(MT_SOURCES) | transfer  # no English -> English row
        assert all(set(scores) == {"chrf", "bleu"} for scores in system["per_language"].values())
    paths = WorldPaths.in_dir(work / "world")
    files = task_files(DemoConfig(task="mt"), paths)
    train = read_task_examples(files["train"])
    pairs = [p for p in read_parallel(paths.parallel) if p.src_lang in MT_SOURCES]
    assert len(pairs) <= MT_PAIRS_PER_SOURCE * len(MT_SOURCES)  # this world has fewer: all are taken
    assert [r["completion"] for r in train] == [" " + p.tgt for p in pairs]
    assert all(p.src in r["prompt"] for r, p in zip(train, pairs, strict=True))
    multiway = read_multiway(paths.multiway)
    dev, test = (load_examples(files[split], "mt") for split in ("dev", "test"))
    assert len(dev) + len(test) == len(multiway["en"]) * (len(multiway) - 1)
    held_out = set(multiway["en"])
    assert all(e["gold"].strip() in held_out and e["tgt_lang"] == "en" for e in dev + test)
    assert not held_out & {p.tgt for p in read_parallel(paths.parallel)}  # the test references are never trained on
    assert "chrF++" in (work / "mt-seed0" / "report.md").read_text()
    monkeypatch.setattr(demo_config, "MT_PAIRS_PER_SOURCE", 3)  # a cap below the world's pairs keeps the first ones
    capped = demo_config._mt_rows(paths)["train"]
    first = {lang: [" " + p.tgt for p in pairs if p.src_lang == lang][:3] for lang in MT_SOURCES}
    assert {lang: [r["completion"] for r in capped if r["lang"] == lang] for lang in MT_SOURCES} == first


def test_the_claims_judge_a_rise_as_kept_and_count_the_metrics_that_improved():
    from midalign.demo_report import TASKS, _claims

    def scores(supervised_f1, transfer):
        return {"supervised": {"slot_f1": supervised_f1}, "transfer": dict(zip(METRICS, transfer, strict=True))}

    avg = {"baseline": scores(85.5, (16.7, 31.6, 21.2)), "mid-align": scores(87.1, (14.9, 38.0, 27.7))}
    text = "\n".join(_claims(avg, {"baseline": 15.1, "mid-align": 47.9}, TASKS["slot"]))
    assert "(at most 1 point lower): slot F1 +1.6; holds in this run." in text  # a rise is not a loss
    assert "intent accuracy +6.5; holds in this run on 2 of 3 metrics" in text
    avg["mid-align"] = scores(84.4, (10.0, 20.0, 20.0))
    text = "\n".join(_claims(avg, {"baseline": 15.1, "mid-align": 20.0}, TASKS["slot"]))
    assert "slot F1 -1.1; does not hold in this run." in text
    assert "does not hold in this run on any metric" in text
    assert "+4.9; does not hold in this run." in text  # the retrieval rise asked is 25 points


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--align_layer", "99"], "align_layer 99 is out of range for a model with 4 decoder blocks"),
        (["--settings", "BAD"], "bad.yaml:2: invalid YAML"),
        (["--settings", "UNKNOWN"], "section 'training' names no MidAlignConfig field ['lora_rank']"),
    ],
)
def test_bad_options_fail_before_the_world_is_built(tmp_path, capsys, monkeypatch, extra, message):
    import midalign.synthetic.world

    monkeypatch.setattr(midalign.synthetic.world, "build_world", lambda *a, **k: pytest.fail("the world was built"))
    (tmp_path / "bad.yaml").write_text("training: [1\n", encoding="utf-8")
    unknown = (
        files("midalign").joinpath("configs/demo.yaml").read_text(encoding="utf-8").replace("lora_r:", "lora_rank:")
    )
    (tmp_path / "unknown.yaml").write_text(unknown, encoding="utf-8")
    extra = [{"BAD": tmp_path / "bad.yaml", "UNKNOWN": tmp_path / "unknown.yaml"}.get(x, x) for x in extra]
    out = tmp_path / "work"
    assert main([*CLI, "--output_dir", str(out), *map(str, extra)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # no stage started, no empty mid-align@99/ folder
