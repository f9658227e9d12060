"""benchmarks/transfer.py's report on hand-made results (the schema of the demo's results.json), so that its
arithmetic and its verdicts are checked without an hour of runs: each verdict must follow from the numbers beside
it, a claim that cannot be decided says so, and the translation task (no English row, sources other than English
supervised) reports as well as the slot task."""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest

from midalign.files import write_json_atomic

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "transfer.py"
SPEC = importlib.util.spec_from_file_location("transfer_benchmark", PATH)
transfer = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(transfer)

TRANSFER = ["xa", "xb", "xc", "xd"]
BASE_ALIGNMENT = {"xa": 90.0, "xb": 70.0, "xc": 40.0, "xd": 10.0}


def fake_run(
    scores: dict[str, dict[str, dict[str, float]]], *, retrieval: dict[str, float], supervised=("en",), layer=2
):
    """One seed's results.json: `scores[system][lang][metric]`, `retrieval[system]` the margin at `layer`."""
    systems = {}
    for system, per_language in scores.items():
        metrics = next(iter(per_language.values())).keys()
        groups = {"supervised": list(supervised), "transfer": [lang for lang in per_language if lang not in supervised]}
        systems[system] = {
            "per_language": per_language,
            "averages": {
                group: {m: statistics.fmean(per_language[lang][m] for lang in langs) for m in metrics}
                for group, langs in groups.items()
                if all(lang in per_language for lang in langs)
            },
        }
    curve = [0.1, 0.2, 0.3, 0.2]
    return {
        "config": {"training": {"align_weight": 0.2}, "demo": {"merge_weight": 0.5}},
        "languages": ["en", *TRANSFER],
        "supervised": list(supervised),
        "align_layer_index": layer,
        "systems": systems,
        "retrieval": {
            "base": {"cosine": curve, "margin": curve, "centred": curve},
            **{s: {"margin": [r if i == layer else 0.0 for i in range(4)]} for s, r in retrieval.items()},
        },
        "base_alignment": {"layer": layer, "pivot": "en", "margin": BASE_ALIGNMENT},
    }


def slot_run(base: float, mid: float, merged: float, english=(90.0, 90.0, 90.0), retrieval=(0.3, 0.8, 0.5), layer=2):
    """Every transfer language at the same score per system; English as given."""

    def system(score, en):
        rows = {lang: {"slot_type_f1": score, "intent_acc": score, "slot_f1": score} for lang in TRANSFER}
        return {"en": {"slot_type_f1": en, "intent_acc": en, "slot_f1": en}, **rows}

    scores = {
        "baseline": system(base, english[0]),
        "mid-align": system(mid, english[1]),
        "merged": system(merged, english[2]),
    }
    return fake_run(
        scores, retrieval=dict(zip(("baseline", "mid-align", "merged"), retrieval, strict=True)), layer=layer
    )


def row(report: str, start: str) -> str:
    lines = [line for line in report.splitlines() if line.startswith(start)]
    assert len(lines) == 1, (start, lines)
    return lines[0]


def make_report(runs, layer_runs=None, subset_runs=None, subsets=None, task="slot"):
    return transfer.report(
        runs, layer_runs or {}, subset_runs or {}, subsets or {}, task=task, preset="bench", seconds=12.0
    )


def test_a_clear_gain_meets_the_claims_and_the_table_holds_the_means():
    runs = {11: slot_run(30, 60, 45), 12: slot_run(32, 62, 47, english=(91, 90.5, 90))}
    text = make_report(runs)
    assert row(text, "| baseline |").startswith("| baseline | 31.0 ± 1.4 | 31.0 ± 1.4 | 31.0 ± 1.4 | 90.5 ± 0.7 |")
    assert row(text, "| 1. mechanism").endswith("| 50.0 ± 0.0; yes |")  # 80% - 30% at the aligned block
    assert row(text, "| 2. transfer slot_type_f1").endswith("(4.2)? | +30.0; yes |")  # 3 x 1.41
    assert row(text, "| 3. supervised").endswith("(seeds: +0.0, -0.5); yes |")
    assert row(text, "| 7. merged: share of mid-align's mean transfer slot_f1").endswith(
        "| 50.0 (+15.0 of +30.0); yes |"
    )
    assert row(text, "| 7. merged: supervised").endswith("| -0.5 ± 0.7; yes |")
    assert row(text, "| total benchmark seconds |") == "| total benchmark seconds | 12 |"
    # Every language scores the same here: no correlation exists, and the report says so instead of failing.
    assert row(text, "| 8. base retrieval").endswith("| n/a (constant over the languages) |")


def test_the_correlations_with_the_base_alignment():
    def run():
        # The baseline follows the base alignment; mid-align gains most where the base aligns worst.
        base = {
            lang: {"slot_type_f1": a / 2, "intent_acc": 0.0, "slot_f1": a / 2} for lang, a in BASE_ALIGNMENT.items()
        }
        mid = {lang: {m: v + (100 - BASE_ALIGNMENT[lang]) / 4 for m, v in row.items()} for lang, row in base.items()}
        en = {"en": {"slot_type_f1": 90.0, "intent_acc": 90.0, "slot_f1": 90.0}}
        scores = {"baseline": {**en, **base}, "mid-align": {**en, **mid}, "merged": {**en, **base}}
        return fake_run(scores, retrieval={"baseline": 0.3, "mid-align": 0.8, "merged": 0.3})

    text = make_report({11: run(), 12: run()})
    assert row(text, "| 8. base retrieval").endswith("Pearson r over 4 languages (the paper: 0.56 / 0.70) | +1.00 |")
    assert row(text, "| 2. gain largest where").endswith("| -1.00 |")


def test_verdicts_follow_the_numbers_when_the_claims_fail():
    # Retrieval +10, a gain inside the seeds' noise, English -4, the merge recovering a tenth.
    runs = {
        11: slot_run(30, 33, 30.3, english=(90, 86, 85), retrieval=(0.3, 0.4, 0.3)),
        12: slot_run(40, 43, 40.3, english=(90, 86, 85), retrieval=(0.3, 0.4, 0.3)),
    }
    text = make_report(runs)
    assert row(text, "| 1. mechanism").endswith("; no |")
    assert row(text, "| 2. transfer intent_acc").endswith("(21.2)? | +3.0; no |")
    assert row(text, "| 3. supervised").endswith("; no |")
    assert row(text, "| 7. merged: share of mid-align's mean transfer slot_type_f1").endswith(
        "| 10.0 (+0.3 of +3.0); no |"
    )
    assert row(text, "| 7. merged: supervised").endswith("| -5.0 ± 0.0; no |")


def test_a_supervised_score_that_rises_is_kept_and_one_that_falls_is_not():
    # English +10 with mid-align and +5 merged: not lost, so both checks pass (they were two-sided before).
    runs = {11: slot_run(30, 60, 45, english=(60, 70, 65)), 12: slot_run(32, 62, 47, english=(60, 70, 65))}
    text = make_report(runs)
    assert row(text, "| 3. supervised").endswith("(seeds: +10.0, +10.0); yes |")
    assert row(text, "| 7. merged: supervised").endswith("| 5.0 ± 0.0; yes |")
    # A mean of -1 passes; a single seed 4 points lower fails the check.
    runs = {11: slot_run(30, 60, 45, english=(90, 89, 88)), 12: slot_run(32, 62, 47, english=(90, 86, 88))}
    assert row(make_report(runs), "| 3. supervised").endswith("(seeds: -1.0, -4.0); no |")
    runs[12] = slot_run(32, 62, 47, english=(90, 89, 88))
    assert row(make_report(runs), "| 3. supervised").endswith("(seeds: -1.0, -1.0); yes |")


def test_one_seed_leaves_the_significance_undecided():
    text = make_report({11: slot_run(30, 60, 45)})
    assert row(text, "| 2. transfer slot_f1").endswith("undecided: 1 seed(s) with a value, a spread needs two |")


def test_a_loss_has_no_share_to_recover_and_the_translation_task_reports():
    def mt(base, mid, merged):
        rows = lambda score: {lang: {"chrf": score, "bleu": score - 10} for lang in ["xa", "xb", "xc", "xd"]}  # noqa: E731
        scores = {"baseline": rows(base), "mid-align": rows(mid), "merged": rows(merged)}
        return fake_run(scores, retrieval={"baseline": 0.3, "mid-align": 0.7, "merged": 0.5}, supervised=("xa",))

    text = make_report({11: mt(60, 57, 58), 12: mt(62, 59, 60)}, task="mt")
    share = row(text, "| 7. merged: share of mid-align's mean transfer chrf")
    assert share.endswith("| n/a: mid-align's mean gain is -3.0, nothing to recover |")
    assert "(supervised: xa)" in text
    assert row(text, "| baseline |") == "| baseline | 61.0 ± 1.4 | 51.0 ± 1.4 | 61.0 ± 1.4 | 30.0 ± 0.0 |"
    assert row(text, "| 2. transfer chrf").endswith("| -3.0; no |")
    assert row(text, "| 8. base retrieval").startswith("| 8. base retrieval (to and from en, block 2)")


def test_the_layer_and_subset_tables():
    runs = {11: slot_run(30, 60, 45), 12: slot_run(32, 62, 47)}
    top = {seed: slot_run(30, 50, 40, retrieval=(0.2, 0.9, 0.5), layer=3) for seed in (11, 12)}
    text = make_report(runs, layer_runs={"1.0": top})
    assert "4. Alignment layer (seeds [11, 12];" in text
    assert "\n| 2 | 61.0 ± 1.4 | 61.0 ± 1.4 | 61.0 ± 1.4 | 90.0 ± 0.0 | 50.0 ± 0.0 |\n" in text  # the main runs
    assert "\n| 3 | 50.0 ± 0.0 | 50.0 ± 0.0 | 50.0 ± 0.0 | 90.0 ± 0.0 | 70.0 ± 0.0 |\n" in text  # gain at block 3

    # Claim 4: the best block for each transfer metric, and whether it is in the middle third (depth 3: block 1-2).
    assert row(text, "| 4. best aligned block for transfer slot_type_f1 among 2, 3").endswith(
        "in the middle third (1-2)? | block 2 (61.0); yes |"
    )
    assert row(text, "| 4. the base model's most aligned inner block").endswith("| block 2 (30.0%) |")
    better_top = {seed: slot_run(30, 61, 40, layer=3) for seed in (11, 12)}  # a tie at 61.0 for seed 12's mean
    text = make_report({11: slot_run(30, 60, 45), 12: slot_run(32, 62, 47)}, layer_runs={"1.0": better_top})
    assert row(text, "| 4. best aligned block for transfer intent_acc").endswith("| block 2 and block 3 (61.0); no |")

    subset = {11: slot_run(30, 40, 45), 12: slot_run(32, 44, 47)}
    text = make_report(runs, subset_runs={"A": subset}, subsets={"A": ["xa", "xb"]})
    assert row(text, "| A (xa, xb) | aligned: xa, xb |").startswith("| A (xa, xb) | aligned: xa, xb | 11.0 ± 1.4 |")
    assert row(text, "| every language | all 4 transfer languages |").startswith(
        "| every language | all 4 transfer languages | 30.0 ± 0.0 |"
    )
    # Claim 5 on the languages A never aligned (xc, xd): +10 and +12; claim 6 needs a second subset.
    assert row(text, "| 5. aligned through A:").endswith("| 11.0 ± 1.4 (seeds: +10.0, +12.0); yes |")
    assert row(text, "| 6. aligning through another subset").endswith("needs two subsets of two seeds or more |")


def test_the_subset_claims_follow_their_numbers():
    runs = {11: slot_run(30, 60, 45), 12: slot_run(32, 62, 47), 13: slot_run(31, 61, 46)}

    def with_gains(gains):  # mid-align at baseline + gain in every transfer language
        out = {}
        for seed, g in gains.items():
            b = runs[seed]["systems"]["baseline"]["per_language"]["xa"]["slot_type_f1"]
            out[seed] = slot_run(b, b + g, b)
        return out

    a = with_gains({11: 10.0, 12: 12.0, 13: -1.0})  # one seed loses: claim 5 fails for A
    b = with_gains({11: 14.0, 12: 16.0, 13: 12.0})
    text = make_report(runs, subset_runs={"A": a, "B": b}, subsets={"A": ["xa"], "B": ["xb", "xc"]})
    assert row(text, "| 5. aligned through A:").endswith("(seeds: +10.0, +12.0, -1.0); no |")
    assert row(text, "| 5. aligned through B:").endswith("(seeds: +14.0, +16.0, +12.0); yes |")
    # Means +7.0 (std 7.0) and +14.0 (std 2.0): 7.0 apart is not less than 7.0.
    assert row(text, "| 6. aligning through another subset").endswith("| A +7.0, B +14.0: 7.0 vs 7.0; no |")
    b = with_gains({11: 4.0, 12: 10.0, 13: 5.0})  # +6.3 (std 3.2): 0.7 apart
    text = make_report(runs, subset_runs={"A": a, "B": b}, subsets={"A": ["xa"], "B": ["xb", "xc"]})
    assert row(text, "| 6. aligning through another subset").endswith("| A +7.0, B +6.3: 0.7 vs 7.0; yes |")


def test_bad_layer_seeds_fail_before_any_run(monkeypatch, capsys):
    def must_not_run(*args, **kwargs):
        raise AssertionError("a run started before the arguments were checked")

    monkeypatch.setattr(transfer, "run_demo", must_not_run)
    with pytest.raises(SystemExit):
        transfer.main(["--seeds", "1", "2", "--layer_seeds", "3"])
    assert "--layer_seeds [3] must be among --seeds [1, 2]" in capsys.readouterr().err


def test_a_seed_without_a_value_is_left_out_of_the_number_and_of_its_verdict():
    runs = {11: slot_run(30, 60, 45), 12: slot_run(32, 62, 47), 13: slot_run(31, 61, 46)}
    runs[13]["retrieval"]["mid-align"]["margin"][2] = math.nan  # a stage that could not measure
    text = make_report(runs)
    assert row(text, "| 1. mechanism").endswith("| 50.0 ± 0.0 (2 of 3 seeds); yes |")
    for system in ("baseline", "mid-align", "merged"):  # one language unscored in every system of seed 13
        runs[13]["systems"][system]["averages"]["transfer"]["slot_f1"] = math.nan
    text = make_report(runs)
    assert row(text, "| 2. transfer slot_f1").endswith("(4.2)? | +30.0; yes |")  # seeds 11 and 12 only
    assert row(text, "| 7. merged: share of mid-align's mean transfer slot_f1").endswith(
        "| 50.0 (+15.0 of +30.0); yes |"
    )


def test_the_report_is_the_same_from_the_saved_json(tmp_path, capsys):
    runs = {11: slot_run(30, 60, 45), 12: slot_run(32, 62, 47)}
    top = {11: slot_run(30, 50, 40, layer=3)}
    saved = dict(
        runs=runs, layer_runs={"1.0": top}, subset_runs={}, subsets={}, task="slot", preset="bench", seconds=12.0
    )
    path = tmp_path / "transfer.json"
    path.write_text(json.dumps(saved))  # the seeds become strings
    assert transfer.main(["--reprint", str(path)]) == transfer.report(**saved)
    assert "seeds [11, 12]" in capsys.readouterr().out
    # A value a run could not score is NaN in memory and null in the strict JSON written; reprinting reads it back.
    runs[12]["retrieval"]["mid-align"]["margin"][2] = math.nan
    write_json_atomic(path, saved)
    assert "NaN" not in path.read_text()
    assert transfer.main(["--reprint", str(path)]) == transfer.report(**saved)
    capsys.readouterr()

    path.write_text(json.dumps({"seeds": {}}))  # the layout of an older version
    with pytest.raises(SystemExit):
        transfer.main(["--reprint", str(path)])
    assert f"--reprint {path}: not a transfer benchmark's JSON" in capsys.readouterr().err

    with pytest.raises(ValueError, match=r"seeds \[13\] of a layer or subset run have no main run"):
        make_report(runs, layer_runs={"1.0": {13: top[11]}})
