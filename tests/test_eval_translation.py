"""Translation scorer: BLEU/chrF++ with the target language's tokenizer, signatures, optional COMET."""

from __future__ import annotations

import importlib.util
import sys
import types

import pytest
import sacrebleu

from midalign.errors import ConfigError, DataError
from midalign.evaluation import translation
from midalign.evaluation.translation import COMET_MODEL, bleu_tokenizer, score_comet, score_translation

HYPS = ["the cat sat on the mat", "a dog barks loudly"]
REFS = ["the cat is on the mat", "the dog barks loudly"]


def _mecab(lang: str) -> bool:
    try:
        sacrebleu.BLEU(tokenize=f"{lang}-mecab")
    except (ImportError, RuntimeError):
        return False
    return True


def test_tokenizer_per_target_language():
    assert bleu_tokenizer("de") == ("13a", None)
    assert bleu_tokenizer("en-US") == ("13a", None)
    assert bleu_tokenizer("zh") == ("zh", None)
    assert bleu_tokenizer("zho_Hans") == ("zh", None)
    assert bleu_tokenizer("th")[0] == "char"
    for lang in ("ja", "ko"):
        name, note = bleu_tokenizer(lang)
        if _mecab(lang):
            assert (name, note) == (f"{lang}-mecab", None)
        else:
            assert name == "char" and f"{lang}-mecab" in note


def test_bleu_and_chrf_plus_plus_match_sacrebleu():
    s = score_translation(HYPS, REFS, tgt_lang="en")
    assert s["bleu"] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS], tokenize="13a").score)
    assert s["chrf"] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score)
    assert s["chrf"] != pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score)  # ++ really adds word bigrams
    assert "tok:13a" in s["bleu_signature"] and "nw:2" in s["chrf_signature"]
    assert s["n"] == 2 and "note" not in s and "comet" not in s


def test_identical_output_scores_100_and_surrounding_whitespace_is_ignored():
    s = score_translation(["  the cat sat on the mat \n"], ["the cat sat on the mat"], tgt_lang="en")
    assert s["bleu"] == pytest.approx(100.0) and s["chrf"] == pytest.approx(100.0)


def test_chinese_needs_its_tokenizer():
    hyp, ref = ["今天天气很好"], ["今天天气不错"]
    s = score_translation(hyp, ref, tgt_lang="zh-CN")
    assert "tok:zh" in s["bleu_signature"]
    assert s["bleu"] > 0
    assert sacrebleu.corpus_bleu(hyp, [ref], tokenize="13a").score == 0  # one "word" per sentence


def test_fallback_tokenizer_leaves_a_note():
    if _mecab("ja"):
        pytest.skip("MeCab is installed: no fallback")
    s = score_translation(["今日は晴れ"], ["今日は晴れです"], tgt_lang="ja")
    assert "tok:char" in s["bleu_signature"] and "ja-mecab" in s["note"]


def test_bad_inputs():
    with pytest.raises(DataError, match="2 hypotheses but 1 references"):
        score_translation(HYPS, REFS[:1], tgt_lang="en")
    with pytest.raises(DataError, match="source"):
        score_translation(HYPS, REFS, tgt_lang="en", comet=True)
    with pytest.raises(DataError):
        score_comet(["a"], ["b", "c"], ["d"])


@pytest.fixture
def fresh_comet_cache():
    translation._comet_model.cache_clear()
    yield
    translation._comet_model.cache_clear()


def test_comet_without_the_extra_is_a_clear_config_error(monkeypatch, fresh_comet_cache):
    monkeypatch.setitem(sys.modules, "comet", None)  # makes `import comet` fail even where it is installed
    with pytest.raises(ConfigError, match=r"midalign\[comet\]"):
        score_translation(HYPS, REFS, tgt_lang="en", sources=["x", "y"], comet=True)


def test_comet_code_path_with_a_stand_in_package(monkeypatch, fresh_comet_cache):
    calls = {}

    class FakeModel:
        def predict(self, data, batch_size, gpus, progress_bar):
            calls["data"], calls["gpus"] = data, gpus
            return types.SimpleNamespace(system_score=0.8125)

    fake = types.ModuleType("comet")
    fake.download_model = lambda name: calls.setdefault("downloaded", name)
    fake.load_from_checkpoint = lambda path: FakeModel()
    monkeypatch.setitem(sys.modules, "comet", fake)
    s = score_translation(HYPS, REFS, tgt_lang="en", sources=["s1", "s2"], comet=True)
    assert s["comet"] == pytest.approx(81.25)
    assert calls["downloaded"] == COMET_MODEL == "Unbabel/wmt22-comet-da"
    assert calls["data"][0] == {"src": "s1", "mt": HYPS[0], "ref": REFS[0]}


@pytest.mark.skipif(importlib.util.find_spec("comet") is None, reason="unbabel-comet is not installed")
def test_real_comet_when_the_model_is_available(fresh_comet_cache):
    try:
        value = score_comet(["Hallo Welt"], ["Hello world"], ["Hello world"])
    except Exception as e:  # the checkpoint cannot be downloaded here
        pytest.skip(f"COMET model unavailable: {e}")
    assert 0 < value <= 100
