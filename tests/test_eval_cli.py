"""`midalign evaluate` in-process: re-scoring shipped predictions, generating with adapters, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import pytest
from eval_fixtures import MASSIVE_ROWS, saved_model_dir, write_jsonl

from midalign.cli import main

ROOT = Path(__file__).resolve().parents[1]
SLOT = ROOT / "examples" / "eval" / "slot"
SYSTEMS = ("baseline", "mid-align", "merged")


def run_cli(argv: list[str]) -> int:
    return main(["evaluate", *map(str, argv)])


def scores_of(out: Path) -> dict:
    return json.loads((out / "scores.json").read_text(encoding="utf-8"))


def test_rescore_shipped_slot_predictions_then_rescore_the_written_files(tmp_path, capsys):
    out = tmp_path / "slot"
    argv = ["--task", "slot", "--format", "massive", "--data", SLOT / "massive_mini.jsonl", "--output_dir", out]
    argv += ["--predictions", *(f"{s}={SLOT / s}.txt" for s in SYSTEMS)]
    assert run_cli([*argv, "--supervised_languages", "en-US"]) == 0
    printed = capsys.readouterr().out
    assert "| avg transfer (4) | average | 32.9 | 92.2 | 77.6 |" in printed
    names = {p.name for p in out.iterdir()}
    assert {f"predictions-{s}.jsonl" for s in SYSTEMS} | {
        "scores.json",
        "scores.csv",
        "tables.md",
        "tables.csv",
    } <= names
    assert {"chart-slot_f1.png", "chart-slot_type_f1.png", "chart-exact_match.png"} <= names
    report = scores_of(out)
    assert list(report["systems"]) == list(SYSTEMS)
    assert report["tables"]["slot_f1"]["transfer"] == ["de-DE", "fr-FR", "zh-CN", "ja-JP"]
    assert report["systems"]["baseline"]["zh-CN"]["slot_f1"] == pytest.approx(25.0)

    again = tmp_path / "again"
    argv = ["--task", "slot", "--output_dir", again, "--supervised_languages", "en-US"]
    argv += ["--predictions", *(f"{s}={out / f'predictions-{s}.jsonl'}" for s in SYSTEMS)]
    assert run_cli(argv) == 0
    assert scores_of(again) == report


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return saved_model_dir(str(tmp_path_factory.mktemp("cli-models")))


@pytest.fixture
def slot_data(tmp_path):
    rows = [
        {"lang": "en", "prompt": "wake me up at nine am", "gold": "time: nine am"},
        {"lang": "de", "prompt": "weck mich um neun uhr", "gold": "time: neun uhr"},
        {"lang": "en", "prompt": "play some music", "gold": "None"},
    ]
    return write_jsonl(tmp_path / "slot.jsonl", rows)


def test_generate_with_base_and_two_adapters(tmp_path, models, slot_data):
    out = tmp_path / "gen"
    argv = [
        "--task",
        "slot",
        "--data",
        slot_data,
        "--model_name_or_path",
        models / "base",
        "--include_base",
        "--output_dir",
        out,
    ]
    argv += ["--adapters", f"lora_a={models / 'lora_a'}", f"lora_b={models / 'lora_b'}"]
    argv += ["--dtype", "float32", "--device", "cpu", "--max_new_tokens", "4", "--batch_size", "2", "--no_progress"]
    assert run_cli([*argv, "--supervised_languages", "en"]) == 0
    report = scores_of(out)
    assert list(report["systems"]) == ["base", "lora_a", "lora_b"]
    assert report["tables"]["slot_f1"]["transfer"] == ["de"]
    rows = [json.loads(line) for line in (out / "predictions-lora_a.jsonl").read_text().splitlines()]
    assert [r["system"] for r in rows] == ["lora_a"] * 3 and all(isinstance(r["prediction"], str) for r in rows)

    again = tmp_path / "again"
    assert (
        run_cli(
            ["--task", "slot", "--predictions", f"lora_a={out / 'predictions-lora_a.jsonl'}", "--output_dir", again]
        )
        == 0
    )
    assert scores_of(again)["systems"]["lora_a"] == report["systems"]["lora_a"]


def test_generate_base_only_with_limit_and_system_prompt(tmp_path, models, slot_data):
    out = tmp_path / "gen"
    argv = [
        "--task",
        "slot",
        "--data",
        slot_data,
        "--model_name_or_path",
        models / "base",
        "--output_dir",
        out,
        "--limit",
        "1",
    ]
    argv += ["--system_prompt", "extract slots", "--dtype", "float32", "--device", "cpu", "--max_new_tokens", "2"]
    assert run_cli([*argv, "--no_progress", "--chat_template", "off"]) == 0
    rows = [json.loads(line) for line in (out / "predictions-base.jsonl").read_text().splitlines()]
    assert [(r["lang"], r["system_prompt"]) for r in rows] == [("en", "extract slots"), ("de", "extract slots")]


def test_mt_from_a_file_pattern_and_flores(tmp_path):
    mt = ROOT / "examples" / "eval" / "mt"
    out = tmp_path / "mt"
    argv = [
        "--task",
        "mt",
        "--format",
        "text",
        "--data",
        str(mt / "test.{src}-{tgt}.{lang}"),
        "--pairs",
        "de-en",
        "en-zh",
    ]
    assert run_cli([*argv, "--predictions", f"baseline={mt / 'baseline.txt'}", "--output_dir", out]) == 0
    report = scores_of(out)
    assert "tok:zh" in report["systems"]["baseline"]["en-zh"]["bleu_signature"]
    assert "tok:13a" in (out / "tables.md").read_text()

    for code, text in (
        ("deu_Latn", "Hallo Welt, wie geht es dir heute?\n"),
        ("eng_Latn", "Hello world, how are you today?\n"),
    ):
        (tmp_path / "flores" / "dev").mkdir(parents=True, exist_ok=True)
        (tmp_path / "flores" / "dev" / f"{code}.dev").write_text(text, encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("Hello world, how are you today?\n", encoding="utf-8")
    argv = ["--task", "mt", "--format", "flores", "--data", tmp_path / "flores", "--split", "dev"]
    argv += [
        "--pairs",
        "deu_Latn-eng_Latn",
        "--predictions",
        f"sys={tmp_path / 'hyp.txt'}",
        "--output_dir",
        tmp_path / "fl",
    ]
    assert run_cli(argv) == 0
    assert scores_of(tmp_path / "fl")["systems"]["sys"]["deu_Latn-eng_Latn"]["bleu"] == pytest.approx(100.0)


def test_json_with_schema(tmp_path):
    js = ROOT / "examples" / "eval" / "json"
    argv = ["--task", "json", "--data", js / "ner.jsonl", "--schema", js / "schema.json"]
    assert run_cli([*argv, "--predictions", f"baseline={js / 'baseline.txt'}", "--output_dir", tmp_path]) == 0
    en = scores_of(tmp_path)["systems"]["baseline"]["en"]
    assert en["schema_valid"] == pytest.approx(200 / 3) and en["parse_rate"] == 100.0


def test_a_parquet_eval_set_with_its_own_column_names(tmp_path):
    rows = [{"locale": "de", "utt": "weck mich um neun", "answer": "time: neun"}] * 2
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "dev.parquet"))
    (tmp_path / "p.txt").write_text("time: neun\nNone\n", encoding="utf-8")
    argv = ["--task", "slot", "--data", tmp_path / "dev.parquet", "--columns", "prompt=utt", "gold=answer"]
    argv += ["lang=locale", "--predictions", f"x={tmp_path / 'p.txt'}", "--output_dir", tmp_path / "out"]
    assert run_cli(argv) == 0
    assert scores_of(tmp_path / "out")["systems"]["x"]["de"]["slot_f1"] == pytest.approx(200 / 3)
    assert run_cli([*argv, "--format", "massive"]) == 2  # --columns maps generic rows only


def test_massive_hf_format(tmp_path, monkeypatch):
    class Rows(list):
        features = {"intent": None}  # noqa: RUF012 - a stand-in for datasets.Features

    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda name, locale, split: Rows(r for r in MASSIVE_ROWS if r["locale"] == locale and r["partition"] == split),
    )
    (tmp_path / "p.txt").write_text("date: freitag\n", encoding="utf-8")
    argv = [
        "--task",
        "slot",
        "--format",
        "massive-hf",
        "--locales",
        "de-DE",
        "--predictions",
        f"x={tmp_path / 'p.txt'}",
    ]
    assert run_cli([*argv, "--output_dir", tmp_path / "out"]) == 0
    assert scores_of(tmp_path / "out")["systems"]["x"]["de-DE"]["slot_precision"] == 100.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--predictions", "a={slot}/baseline.txt", "--supervised_languages", "xx"], r"unknown language\(s\) \['xx'\]"),
        (["--predictions", "a={short}"], r"short\.txt:20: 19 predictions but the data has 20 examples"),
        (["--predictions", "a={slot}/baseline.txt", "--schema", "{slot}/massive_mini.jsonl"], "cannot read the schema"),
        (["--predictions", "a={slot}/baseline.txt", "--schema", "{schema}"], "schema applies to the 'json' task"),
        (["--predictions", "a={slot}/baseline.txt", "--comet"], "comet applies to the 'mt' task"),
        (["--predictions", "a={slot}/baseline.txt", "a={slot}/merged.txt"], "given twice"),
        (["--predictions", "a/b={slot}/baseline.txt"], "may only hold letters"),
        (["--predictions", "a={slot}/baseline.txt", "--adapters", "x=y"], "--adapters needs --model_name_or_path"),
        (["--predictions", "a={slot}/baseline.txt", "--locales", "xx-XX"], "unknown MASSIVE locale"),
    ],
)
def test_errors_exit_2_with_a_message(tmp_path, capsys, extra, message):
    short = tmp_path / "short.txt"
    short.write_text("".join((SLOT / "baseline.txt").read_text().splitlines(keepends=True)[:19]))
    places = {"slot": SLOT, "short": short, "schema": ROOT / "examples" / "eval" / "json" / "schema.json"}
    argv = [
        "--task",
        "slot",
        "--format",
        "massive",
        "--data",
        SLOT / "massive_mini.jsonl",
        "--output_dir",
        tmp_path / "o",
    ]
    assert run_cli(argv + [x.format(**places) for x in extra]) == 2
    assert re.search(message, capsys.readouterr().err)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "mt", "--format", "text", "--data", "x.{{lang}}"], "needs --pairs"),
        (["--task", "slot", "--format", "massive"], "needs --data"),
        (["--task", "slot", "--format", "massive-hf"], "needs --locales"),
        (["--task", "mt", "--format", "massive", "--data", "x"], "MASSIVE data is for --task slot"),
        (["--task", "slot", "--format", "flores", "--data", "x", "--pairs", "de-en"], "is for --task mt"),
        (["--task", "slot", "--data", "{data}", "--limit", "0"], "--limit must be at least 1"),
        (["--task", "slot", "--data", "{data}", "--adapters", "a={models}/base"], "not a PEFT adapter folder"),
        (["--task", "slot", "--data", "{data}", "--adapters", "a=x", "a=y"], "share a name"),
        (["--task", "slot", "--data", "{data}", "--chat_template", "on"], "no chat template"),
    ],
)
def test_generation_errors_exit_2(tmp_path, capsys, models, slot_data, argv, message):
    argv = [x.format(data=slot_data, models=models) for x in argv]
    if "--model_name_or_path" not in argv and "--predictions" not in argv:
        argv += ["--model_name_or_path", models / "base", "--dtype", "float32", "--device", "cpu", "--no_progress"]
    assert run_cli([*argv, "--output_dir", tmp_path / "o"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--supervised_languages", "xx"], "unknown language(s) ['xx']"),
        (["--schema", str(ROOT / "examples" / "eval" / "json" / "schema.json")], "schema applies to the 'json' task"),
    ],
)
def test_bad_options_fail_before_the_model_is_loaded(tmp_path, capsys, slot_data, extra, message):
    argv = [
        "--task",
        "slot",
        "--data",
        slot_data,
        "--model_name_or_path",
        tmp_path / "no-such-model",
        "--output_dir",
        tmp_path / "o",
    ]
    assert run_cli(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_named_paths_are_checked_when_parsed(capsys):
    assert run_cli(["--task", "slot", "--predictions", "no-equals-sign", "--output_dir", "o"]) == 2
    assert "--predictions: expected NAME=PATH, got 'no-equals-sign'" in capsys.readouterr().err


def test_the_midalign_command_dispatches_here(tmp_path):
    from midalign.cli import main

    argv = ["evaluate", "--task", "slot", "--format", "massive", "--data", str(SLOT / "massive_mini.jsonl")]
    assert main([*argv, "--predictions", f"b={SLOT / 'baseline.txt'}", "--output_dir", str(tmp_path)]) == 0


def test_predictions_are_matched_to_the_data_by_identity_not_line(tmp_path, capsys):
    data = ["--task", "slot", "--format", "massive", "--data", SLOT / "massive_mini.jsonl"]
    first = tmp_path / "first"
    assert run_cli([*data, "--predictions", f"mid-align={SLOT / 'mid-align.txt'}", "--output_dir", first]) == 0
    lines = (first / "predictions-mid-align.jsonl").read_text(encoding="utf-8").splitlines()
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    again = tmp_path / "again"
    assert run_cli([*data, "--predictions", f"mid-align={shuffled}", "--output_dir", again]) == 0
    assert scores_of(again)["systems"] == scores_of(first)["systems"]

    # Without ids the rows are matched by (lang, prompt).
    no_ids = tmp_path / "no-ids.jsonl"
    rows = [json.loads(line) for line in reversed(lines)]
    no_ids.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in rows), "utf-8")
    assert run_cli([*data, "--predictions", f"mid-align={no_ids}", "--output_dir", tmp_path / "no-ids"]) == 0
    assert scores_of(tmp_path / "no-ids")["systems"] == scores_of(first)["systems"]

    # A row that contradicts the example its id names, or names none, is refused with its line.
    contradicting = [dict(r) for r in rows]
    contradicting[2]["prompt"] = "something else"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in contradicting), "utf-8")
    assert run_cli([*data, "--predictions", f"mid-align={bad}", "--output_dir", tmp_path / "bad"]) == 2
    error = capsys.readouterr().err
    assert re.search(r"bad\.jsonl:3: field 'prompt': prompt 'something else' contradicts the data's", error)
    unknown = [dict(r) for r in rows]
    unknown[0]["id"] = "999"
    bad.write_text("".join(json.dumps(r) + "\n" for r in unknown), "utf-8")
    assert run_cli([*data, "--predictions", f"mid-align={bad}", "--output_dir", tmp_path / "bad"]) == 2
    assert re.search(r"bad\.jsonl:1: field 'id': lang .*, id '999' matches no example", capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()


MT = ROOT / "examples" / "eval" / "mt"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--pairs", "de-en", "de-en"], "--pairs: 'de-en' is given twice"),
        (["--pairs", "de-en", "en-zh", "--supervised_languages", "de-en", "de-en"], "--supervised_languages: 'de-en'"),
    ],
)
def test_a_value_repeated_in_a_list_option_is_refused(tmp_path, capsys, extra, message):
    # Kept, de-en was loaded twice and en-zh predictions lined up with its second copy (BLEU 15.6, not 36.3).
    argv = ["--task", "mt", "--format", "text", "--data", f"{MT}/test.{{src}}-{{tgt}}.{{lang}}", *extra]
    argv += ["--predictions", f"b={MT / 'baseline.txt'}", "--output_dir", tmp_path / "out"]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_rescoring_refuses_the_options_it_would_ignore(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["--task", "slot", "--format", "massive", "--data", SLOT / "massive_mini.jsonl", "--output_dir", out]
    assert run_cli([*argv, "--predictions", f"b={SLOT / 'baseline.txt'}"]) == 0
    capsys.readouterr()
    again = ["--task", "slot", "--predictions", f"b={out / 'predictions-b.jsonl'}", "--output_dir", tmp_path / "x"]
    assert run_cli([*again, "--locales", "en-US", "--limit", "1", "--format", "massive"]) == 2
    assert "--format, --locales, --limit apply to --data" in capsys.readouterr().err
    assert run_cli([*again, "--max_new_tokens", "4"]) == 2
    assert "--max_new_tokens applies when generating" in capsys.readouterr().err
    assert run_cli(["--task", "slot", "--predictions", f"b={out}", "--output_dir", tmp_path / "x"]) == 2
    assert "is a folder, not a predictions file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_folder_holds_one_evaluation(tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["--task", "slot", "--format", "massive", "--data", SLOT / "massive_mini.jsonl", "--output_dir", out]
    both = ["--predictions", f"baseline={SLOT / 'baseline.txt'}", f"merged={SLOT / 'merged.txt'}"]
    assert run_cli([*argv, *both]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert run_cli([*argv, "--predictions", f"mid-align={SLOT / 'mid-align.txt'}"]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier evaluation of other systems (baseline, merged)" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # refused before writing anything
    assert run_cli([*argv, *both]) == 0  # the same evaluation again replaces its files
    assert {p.name for p in out.iterdir()} == set(before)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_new_tokens", "0"], "--max_new_tokens must be at least 1, got 0"),
        (["--batch_size", "-1"], "--batch_size must be at least 1, got -1"),
        (["--device", "foo"], "--device 'foo' is not a device"),
        (["--device", "cuda:99"], "--device cuda:99"),
        (["--output_dir", "AFILE"], "--output_dir AFILE is a file, not a folder"),
    ],
)
def test_bad_generation_flags_fail_before_the_model_loads(tmp_path, capsys, monkeypatch, extra, message):
    import midalign.modeling

    monkeypatch.setattr(midalign.modeling, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    monkeypatch.chdir(tmp_path)
    Path("AFILE").write_text("", encoding="utf-8")
    argv = ["--task", "slot", "--format", "massive", "--data", SLOT / "massive_mini.jsonl"]
    argv += ["--model_name_or_path", tmp_path, "--output_dir", "out", *extra]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
