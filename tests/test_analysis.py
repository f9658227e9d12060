"""Analysis: metrics against brute-force loops, extraction against output_hidden_states, reports, CLI, auto layer."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from midalign.analysis import analyze, analyze_states, margin_matrix, pair_metrics, pooled_states, tie_aware_accuracy
from midalign.analysis.report import write_report
from midalign.cli import main
from midalign.errors import DataError
from midalign.layers import all_hidden_states, hidden_states_at
from tests.conftest import make_model


# ---------------------------------------------------------------- brute force references
def cos(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


def nn_accuracy(score):
    """score(i, j) for an N x N problem; fractional credit for ties, by loops."""
    n, total = score.n, 0.0
    for i in range(n):
        values = [score(i, j) for j in range(n)]
        top = max(values)
        tied = [j for j, v in enumerate(values) if v == top]
        total += (1.0 / len(tied)) if i in tied else 0.0
    return total / n


class Scores:
    def __init__(self, n, fn):
        self.n, self.fn = n, fn

    def __call__(self, i, j):
        return self.fn(i, j)


def brute_force(x, y, k=4):
    n = len(x)
    c = [[cos(x[i], y[j]) for j in range(n)] for i in range(n)]
    knn_x = [sum(sorted(c[i], reverse=True)[:k]) / k for i in range(n)]  # x_i's k nearest y
    knn_y = [sum(sorted((c[i][j] for i in range(n)), reverse=True)[:k]) / k for j in range(n)]  # y_j's nearest x
    m = [[c[i][j] / ((knn_x[i] + knn_y[j]) / 2) for j in range(n)] for i in range(n)]
    xc, yc = x - x.mean(0), y - y.mean(0)
    cc = [[cos(xc[i], yc[j]) for j in range(n)] for i in range(n)]
    ab = {
        "cosine": nn_accuracy(Scores(n, lambda i, j: c[i][j])),
        "margin": nn_accuracy(Scores(n, lambda i, j: m[i][j])),
        "centred": nn_accuracy(Scores(n, lambda i, j: cc[i][j])),
    }
    ba = {
        "cosine": nn_accuracy(Scores(n, lambda i, j: c[j][i])),
        "margin": nn_accuracy(Scores(n, lambda i, j: m[j][i])),
        "centred": nn_accuracy(Scores(n, lambda i, j: cc[j][i])),
    }
    pos = sum(c[i][i] for i in range(n)) / n
    neg = sum(c[i][j] for i in range(n) for j in range(n) if i != j) / (n * n - n)
    return ab, ba, pos, neg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_metrics_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 6, generator=g)
    y = x + 0.9 * torch.randn(12, 6, generator=g)  # noisy translations: accuracies strictly between 0 and 1
    got = pair_metrics(x, y, k=4)
    ab, ba, pos, neg = brute_force(x, y, k=4)
    for metric in ("cosine", "margin", "centred"):
        assert got["a->b"][metric] == pytest.approx(ab[metric], abs=1e-6)
        assert got["b->a"][metric] == pytest.approx(ba[metric], abs=1e-6)
    assert got["a->b"]["cos_pos"] == pytest.approx(pos, abs=1e-5)
    assert got["a->b"]["cos_neg"] == pytest.approx(neg, abs=1e-5)


def test_ties_and_duplicates_get_fractional_credit():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # sentences 1 and 2 are duplicates
    got = pair_metrics(x, x.clone(), k=1)["a->b"]
    assert got["cosine"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    same = torch.ones(5, 3)  # degenerate vectors (e.g. BOS pooling): chance, not 100%
    assert pair_metrics(same, same)["a->b"]["cosine"] == pytest.approx(1 / 5)
    assert tie_aware_accuracy(torch.eye(4)).item() == 1.0


def test_margin_matrix_matches_definition():
    g = torch.Generator().manual_seed(3)
    sims = torch.rand(5, 5, generator=g)
    got = margin_matrix(sims, k=2)
    for i in range(5):
        for j in range(5):
            kx = sorted(sims[i].tolist(), reverse=True)[:2]
            ky = sorted(sims[:, j].tolist(), reverse=True)[:2]
            assert got[i, j].item() == pytest.approx(sims[i, j].item() / (sum(kx) / 4 + sum(ky) / 4), rel=1e-6)


# ---------------------------------------------------------------- extraction
def test_all_hidden_states_equal_hidden_states_at(tokenizer):
    model = make_model("qwen2")
    enc = tokenizer(["the cat sat", "big red house on the mat"], return_tensors="pt", padding=True)
    with torch.no_grad():
        every = all_hidden_states(model, enc["input_ids"], enc["attention_mask"])
        for layer in range(5):
            assert torch.equal(every[layer], hidden_states_at(model, enc["input_ids"], enc["attention_mask"], layer))


SENTENCES = {
    "en": ["the cat sat on the mat", "wake me up at nine am", "play song by artist", "big red house", "the dog"],
    "es": ["el gato", "despierta me a las nueve", "el perro casa", "casa grande rojo", "perro"],
    "fr": ["le chat rouge", "maison bleu", "le chien", "chat chien maison", "rouge bleu"],
}


@pytest.fixture()
def flores(tmp_path):
    folder = tmp_path / "flores"
    folder.mkdir()
    for lang, sents in SENTENCES.items():
        (folder / f"{lang}.devtest").write_text("\n".join(sents) + "\n", encoding="utf-8")
    return folder


def direct_vectors(model, tokenizer, sentences, layer):
    """Mean of hidden_states[layer] over non-BOS tokens, one sentence at a time, from output_hidden_states."""
    out = []
    for s in sentences:
        enc = tokenizer(s, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc, output_hidden_states=True).hidden_states[layer][0]  # [T, H]
        out.append(h[1:].mean(0))  # token 0 is BOS
    return torch.stack(out)


def test_reported_accuracy_equals_direct_computation(flores, tokenizer):
    model = make_model("llama")
    result = analyze(model, tokenizer, flores, batch_size=2)
    assert result.num_layers == 4 and result.languages == ["en", "es", "fr"]
    assert len({(r["src"], r["tgt"]) for r in result.rows}) == 6
    layer = 2
    x = direct_vectors(model, tokenizer, SENTENCES["es"], layer)
    y = direct_vectors(model, tokenizer, SENTENCES["en"], layer)
    ab, _, _, _ = brute_force(x, y)
    for metric in ("cosine", "margin"):
        (row,) = [
            r for r in result.rows if (r["layer"], r["src"], r["tgt"], r["metric"]) == (layer, "es", "en", metric)
        ]
        assert row["value"] == pytest.approx(ab[metric], abs=1e-5)


def test_pooled_states_are_order_independent(tokenizer):
    model = make_model("llama")
    sents = SENTENCES["en"]
    a = pooled_states(model, tokenizer, sents, batch_size=2)
    b = pooled_states(model, tokenizer, sents[::-1], batch_size=5)
    torch.testing.assert_close(a, b.flip(1), atol=1e-5, rtol=1e-5)
    assert a.shape == (5, 5, 32) and a.dtype == torch.float32


def test_adapters_cache_pivot_groups_and_report(flores, tokenizer, tmp_path):
    from peft import LoraConfig, get_peft_model

    adapter_dir = tmp_path / "adapter"
    lora = get_peft_model(
        make_model("llama", seed=1), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(adapter_dir)
    groups = {"latin": ["es", "fr"], "pivot": ["en"]}
    cache = tmp_path / "cache"

    def run():
        adapters = {"tuned": str(adapter_dir)}
        return analyze(
            make_model("llama"), tokenizer, flores, adapters=adapters, pivot="en", groups=groups, cache_dir=cache
        )

    result = run()
    assert result.systems == ["base", "tuned"]
    assert {(r["src"], r["tgt"]) for r in result.rows} == {("es", "en"), ("en", "es"), ("fr", "en"), ("en", "fr")}
    base, tuned = result.curve("base", "cos_pos"), result.curve("tuned", "cos_pos")
    assert base != tuned
    assert len(list(cache.glob("*.safetensors"))) == 6
    # Metrics are recomputed from the cache without running the model.
    import midalign.analysis.run as run_module

    def no_model(*a, **k):
        raise AssertionError("the model ran although the vectors were cached")

    original = run_module.pooled_states
    run_module.pooled_states = no_model
    try:
        again = run()
    finally:
        run_module.pooled_states = original
    assert again.rows == result.rows
    written = write_report(result, tmp_path / "out")
    assert {p.name for p in written} == {
        "alignment.csv",
        "alignment.json",
        "summary.json",
        "curve.png",
        "heatmap.png",
        "report.md",
    }
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert 1 <= summary["systems"]["base"]["recommended_layer"] <= 3
    assert set(summary["systems"]["tuned"]["per_group"]) == {"latin", "pivot"}


def test_analyze_states_without_a_model():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(3, 20, 8, generator=g)  # layer 1 is perfectly aligned, layers 0 and 2 are noise
    states = {"m": {lang: shared.clone() for lang in ("a", "b")}}
    states["m"]["b"][0] = torch.randn(20, 8, generator=g)
    states["m"]["b"][2] = torch.randn(20, 8, generator=g)
    result = analyze_states(states)
    assert result.curve("m", "cosine")[1] == 1.0 and result.recommended_layer("m") == 1
    assert not math.isnan(result.curve("m", "margin")[0])


def test_bad_input(flores, tokenizer, tmp_path):
    model = make_model("llama")
    (flores / "de.devtest").write_text("eins\n", encoding="utf-8")
    with pytest.raises(DataError, match="different sentence counts"):
        analyze(model, tokenizer, flores)
    (flores / "de.devtest").unlink()
    with pytest.raises(DataError, match="unknown languages"):
        analyze(model, tokenizer, flores, languages=["en", "xx"])
    with pytest.raises(DataError, match="pivot"):
        analyze(model, tokenizer, flores, pivot="de")
    groups = tmp_path / "groups.json"
    groups.write_text('{"low": ["sw"]}')
    with pytest.raises(DataError, match=r"groups\.json: field 'low': unknown languages \['sw'\]"):
        analyze(model, tokenizer, flores, groups=groups)


def test_cli_writes_report_and_refuses_bad_adapters(flores, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "analysis"
    assert (
        main(["analyze", "--model_name_or_path", str(tiny_model_dir), "--data", str(flores), "--output_dir", str(out)])
        == 0
    )
    assert (out / "report.md").is_file() and (out / "curve.png").is_file()
    assert "recommended layer" in capsys.readouterr().out
    code = main(
        [
            "analyze",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--data",
            str(flores),
            "--output_dir",
            str(tmp_path / "x"),
            "--adapters",
            f"bad={tmp_path}",
        ]
    )
    assert code == 2 and "not a PEFT adapter folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # nothing partial written


def test_align_layer_auto(tokenizer, tmp_path):
    from midalign.train import MidAlignConfig, build_trainer
    from tests.test_train import PAIRS, TASK, write_jsonl

    task = write_jsonl(tmp_path / "task.jsonl", TASK * 2)
    pairs = write_jsonl(
        tmp_path / "p.jsonl", [{"src": s, "tgt": t, "src_lang": lang, "tgt_lang": "en"} for s, t, lang in PAIRS]
    )
    config = MidAlignConfig(
        output_dir=str(tmp_path / "o"),
        task_data=task,
        parallel_data=pairs,
        align_layer="auto",
        align_batch_size=4,  # 6 pairs cannot fill the default batch of 8
        report_to="none",
        save_strategy="no",
    )
    trainer = build_trainer(config, model=make_model("llama"), tokenizer=tokenizer)
    assert 1 <= trainer.align_layer_index <= 3 and len(trainer.align_layer_curve) == 5
    assert config.align_layer == "auto"  # the config keeps what the user wrote; the index is resolved once
    assert trainer.resolved_settings()["align_layer_index"] == trainer.align_layer_index


def test_the_cache_answers_only_for_the_same_weights_dtype_and_adapter(flores, tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    from midalign.cli import main

    base = tmp_path / "base"
    make_model("llama", seed=0).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path / "out"

    def summary(*extra):
        assert (
            main(
                ["analyze", "--model_name_or_path", str(base), "--data", str(flores), "--output_dir", str(out), *extra]
            )
            == 0
        )
        return json.loads((out / "summary.json").read_text())

    first = summary()
    assert summary() == first  # same weights: answered from the cache
    make_model("llama", seed=5).save_pretrained(base)  # other weights at the same path
    assert summary() != first
    again = summary("--dtype", "bfloat16")
    cached = sorted((out / "cache").glob("*.safetensors"))
    assert len(cached) == 3 * len(SENTENCES)  # one entry per language for each of the three models
    assert again != first

    adapter = tmp_path / "adapter"
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(
        make_model("llama", seed=5), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    lora.save_pretrained(adapter)
    tuned = summary("--adapters", f"tuned={adapter}")
    weights = adapter / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(weights).items()}, weights)  # the adapter rewritten in place
    assert summary("--adapters", f"tuned={adapter}")["systems"]["tuned"] != tuned["systems"]["tuned"]


def _analyze(model_dir, data, out, *extra) -> int:
    return main(
        ["analyze", "--model_name_or_path", str(model_dir), "--data", str(data), "--output_dir", str(out), *extra]
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "0"], "--k must be at least 1, got 0"),
        (["--k", "-1"], "--k must be at least 1, got -1"),
        (["--batch_size", "0"], "--batch_size must be at least 1, got 0"),
        (["--max_length", "0"], "--max_length must be at least 1, got 0"),
        (["--languages", "en", "xx"], "unknown languages ['xx']; the data has ['en', 'es', 'fr']"),
        (["--languages", "en", "en"], "--languages: 'en' is given twice"),
        (["--groups", "."], ": is a folder, not a file"),
    ],
)
def test_cli_refuses_bad_settings_in_one_line_before_loading(flores, tmp_path, capsys, monkeypatch, extra, message):
    import midalign.modeling

    monkeypatch.setattr(midalign.modeling, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert _analyze(tmp_path, flores, tmp_path / "out", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_empty_groups_are_refused_and_k_is_recorded(flores, tiny_model_dir, tmp_path, capsys):
    groups = tmp_path / "groups.json"
    groups.write_text('{"high": ["de"], "low": []}', encoding="utf-8")
    assert _analyze(tiny_model_dir, flores, tmp_path / "a", "--groups", groups) == 2
    assert "field 'low': an empty group" in capsys.readouterr().err
    out = tmp_path / "b"
    assert _analyze(tiny_model_dir, flores, out, "--k", "50") == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"), parse_constant=pytest.fail)
    n = len(next(iter(SENTENCES.values())))
    assert (summary["k"], summary["k_used"], summary["sentences_per_language"]) == (50, n, n)
    assert f"ratio margin (k={n})" in (out / "report.md").read_text(encoding="utf-8")


def test_a_truncated_model_or_an_adapter_for_another_size_is_one_line(flores, tiny_model_dir, tmp_path, capsys):
    import shutil

    from peft import LoraConfig, get_peft_model

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    assert _analyze(broken, flores, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert f"{weights} is truncated or not a safetensors file" in err and len(err.strip().splitlines()) == 1

    wide = make_model("llama", hidden=64)  # another size; the adapter records the tiny model as its base
    adapter = tmp_path / "wide-adapter"
    get_peft_model(wide, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(adapter)
    config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(tiny_model_dir)
    (adapter / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert _analyze(tiny_model_dir, flores, tmp_path / "b", "--adapters", f"w={adapter}") == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the model's loading bar
    assert "does not fit the model" in last and "lora_A of model.layers.0.self_attn.q_proj is 4x64" in last
    assert "Traceback" not in err and "size mismatch" not in err
