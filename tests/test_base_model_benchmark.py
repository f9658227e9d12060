"""benchmarks/base_model.py: bad overrides are one line, before the world is built."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from midalign.errors import ConfigError
from midalign.synthetic.pretrain import PretrainConfig
from midalign.synthetic.world import WorldConfig

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "base_model.py"
SPEC = importlib.util.spec_from_file_location("base_model_benchmark", PATH)
base_model = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(base_model)


def test_overrides_take_each_fields_type():
    assert base_model.overrides(["switch_prob=0.6", "corpus_lines=100"], WorldConfig, "--world") == {
        "switch_prob": 0.6,
        "corpus_lines": 100,
    }
    assert base_model.overrides(["tie_embeddings=False"], PretrainConfig, "--pretrain") == {"tie_embeddings": False}
    for pairs, config, message in (
        (["nonsense=1"], WorldConfig, "WorldConfig has no field 'nonsense'"),
        (["steps=x"], PretrainConfig, "steps=x is not of type int"),
        (["tie_embeddings=1"], PretrainConfig, "tie_embeddings=1 is not of type bool"),
        (["corpus_lines=0.5"], WorldConfig, "corpus_lines=0.5 is not of type int"),
    ):
        with pytest.raises(ConfigError, match=message):
            base_model.overrides(pairs, config, "--x")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--world", "switch_share=0.2"], "corpus shares must sum to at most 1"),  # was a traceback
        (["--threads", "0"], "--threads must be at least 1"),
        (["--pretrain", "steps=x"], "steps=x is not of type int"),  # failed only after the world was built
    ],
)
def test_bad_settings_stop_before_any_work(tmp_path, monkeypatch, capsys, extra, message):
    workdir = tmp_path / "w"
    monkeypatch.setattr(sys, "argv", ["base_model.py", "--preset", "bench", "--workdir", str(workdir), *extra])
    with pytest.raises(SystemExit) as exit_info:
        base_model.main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not workdir.exists()
