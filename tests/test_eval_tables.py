"""Per-language tables: averages, transfer gap, Markdown / CSV / JSON, bar chart."""

from __future__ import annotations

import csv
import io
import json

import pytest

from midalign.errors import ConfigError
from midalign.evaluation.tables import language_table, plot_language_table, tables_to_csv

SCORES = {
    "baseline": {"en": {"slot_f1": 80.0}, "de": {"slot_f1": 50.0}, "zh": {"slot_f1": 40.0}, "sw": {"slot_f1": 10.0}},
    "mid-align": {"en": {"slot_f1": 78.0}, "de": {"slot_f1": 60.0}, "zh": {"slot_f1": 50.0}, "sw": {"slot_f1": 25.0}},
}


def test_averages_and_gap_with_transfer_defaulting_to_the_rest():
    table = language_table(SCORES, "slot_f1", supervised=["en"])
    assert table.languages == ("en", "de", "zh", "sw")
    assert table.transfer == ("de", "zh", "sw")
    assert table.averages("baseline") == {
        "supervised": 80.0,
        "transfer": pytest.approx(100 / 3),
        "gap": pytest.approx(140 / 3),
        "all": 45.0,
    }
    assert table.averages("mid-align")["transfer"] == pytest.approx(45.0)
    assert table.averages("mid-align")["gap"] == pytest.approx(33.0)


def test_languages_in_neither_group_count_only_in_all():
    table = language_table(SCORES, "slot_f1", supervised=["en"], transfer=["de", "zh"])
    assert table.languages == ("en", "de", "zh", "sw") and table.group("sw") == "other"
    assert table.averages("baseline") == {"supervised": 80.0, "transfer": 45.0, "gap": 35.0, "all": 45.0}


def test_no_groups_gives_only_the_overall_average():
    table = language_table(SCORES, "slot_f1")
    assert table.transfer == ()
    assert table.averages("baseline") == {"supervised": None, "transfer": None, "gap": None, "all": 45.0}
    assert [row[0] for row in table.rows()][-1] == "avg all (4)"
    assert "gap" not in table.to_markdown()


def test_markdown():
    table = language_table(SCORES, "slot_f1", supervised=["en"], transfer=["de"])
    assert table.to_markdown() == (
        "| language | group | baseline | mid-align |\n"
        "|---|---|---|---|\n"
        "| en | supervised | 80.0 | 78.0 |\n"
        "| de | transfer | 50.0 | 60.0 |\n"
        "| zh | other | 40.0 | 50.0 |\n"
        "| sw | other | 10.0 | 25.0 |\n"
        "| avg supervised (1) | average | 80.0 | 78.0 |\n"
        "| avg transfer (1) | average | 50.0 | 60.0 |\n"
        "| gap (supervised - transfer) | average | 30.0 | 18.0 |\n"
        "| avg all (4) | average | 45.0 | 53.2 |\n"
    )


def test_csv_and_json():
    table = language_table(SCORES, "slot_f1", supervised=["en"])
    rows = list(csv.reader(io.StringIO(table.to_csv())))
    assert rows[0] == ["metric", "language", "group", "baseline", "mid-align"]
    assert rows[1] == ["slot_f1", "en", "supervised", "80.0", "78.0"]
    assert rows[-1][:2] == ["slot_f1", "avg all (4)"]
    other = language_table({s: {lang: {"x": 1.0} for lang in v} for s, v in SCORES.items()}, "x")
    both = list(csv.reader(io.StringIO(tables_to_csv([table, other]))))
    assert [r[0] for r in both].count("metric") == 1 and both[-1][0] == "x"
    data = json.loads(json.dumps(table.to_dict()))
    assert data["languages"]["de"] == {"baseline": 50.0, "mid-align": 60.0}
    assert data["averages"]["baseline"]["supervised"] == 80.0


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"unknown language\(s\) \['fr'\]"):
        language_table(SCORES, "slot_f1", supervised=["en"], transfer=["fr"])
    with pytest.raises(ConfigError, match="both supervised and transfer"):
        language_table(SCORES, "slot_f1", supervised=["en"], transfer=["en", "de"])
    with pytest.raises(ConfigError, match=r"transfer language\(s\) \['de'\] listed more than once"):
        language_table(SCORES, "slot_f1", supervised=["en"], transfer=["de", "de"])  # would count twice
    with pytest.raises(ConfigError, match=r"supervised language\(s\) \['en'\] listed more than once"):
        language_table(SCORES, "slot_f1", supervised=["en", "en"])
    with pytest.raises(ConfigError, match="cover different languages"):
        language_table({**SCORES, "merged": {"en": {"slot_f1": 1.0}}}, "slot_f1")
    with pytest.raises(ConfigError, match="metric 'intent_acc' is missing"):
        language_table(SCORES, "intent_acc")
    with pytest.raises(ConfigError, match="no systems"):
        language_table({}, "slot_f1")


def test_bar_chart_png(tmp_path):
    table = language_table({**SCORES, "merged": SCORES["mid-align"]}, "slot_f1", supervised=["en"])
    path = plot_language_table(table, tmp_path / "charts" / "slot_f1.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000
    assert not list((tmp_path / "charts").glob(".*.tmp"))  # written atomically: no temporary left behind
