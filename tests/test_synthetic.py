"""The synthetic world: determinism, formats read back by the real readers, scripts, slots; tiny pretraining."""

from __future__ import annotations

import collections
import dataclasses
import json
import random
import unicodedata
from pathlib import Path

import pytest
import torch

from midalign.data.readers import read_multiway, read_parallel, read_task_examples
from midalign.errors import ConfigError
from midalign.evaluation.loaders import load_examples, load_massive_jsonl
from midalign.evaluation.slots import parse_annot_utt, parse_slot_output
from midalign.synthetic.languages import SOUND_CHANGES, Language, cognate
from midalign.synthetic.pretrain import PretrainConfig, _cache_key, is_finished, pretrain
from midalign.synthetic.probe import alignment_by_layer, copy_rates, heldout_loss, retrieval_by_layer
from midalign.synthetic.words import CONCEPTS
from midalign.synthetic.world import (
    INTENTS,
    LANGUAGE_TABLE,
    PIVOT,
    SCRIPTS,
    SEPARATOR,
    SLOT_TYPES,
    World,
    WorldConfig,
    build_world,
    corpus_lines,
    transliterate,
)

SMALL = dict(corpus_lines=1500, n_train=40, n_dev=8, n_test=20, n_parallel=10, n_multiway=12)
UNICODE_SCRIPT = {script: script.upper() for script in SCRIPTS}  # the first word of a letter's Unicode name


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    config = WorldConfig.preset("ci", supervised=("en", "xb"), **SMALL)
    return config, build_world(config, tmp_path_factory.mktemp("world"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_text(world_dir, tmp_path):
    config, paths = world_dir
    again = build_world(config, tmp_path / "again")
    assert _files(paths.root) == _files(again.root)
    other = build_world(WorldConfig.preset("ci", seed=1, supervised=("en", "xb"), **SMALL), tmp_path / "other")
    assert other.corpus.read_bytes() != paths.corpus.read_bytes()
    assert other.task_test.read_bytes() != paths.task_test.read_bytes()


def test_files_round_trip_through_the_readers(world_dir):
    config, paths = world_dir
    codes = [spec.code for spec in LANGUAGE_TABLE[: config.n_languages]]
    train = read_task_examples(paths.task_train)
    assert len(train) == config.n_train * 2  # both supervised languages
    for path, n in ((paths.task_dev, config.n_dev), (paths.task_test, config.n_test)):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(read_task_examples(path)) == n * len(codes)
        assert sorted({r["lang"] for r in rows}) == codes
    assert {json.loads(line)["lang"] for line in paths.task_train.read_text().splitlines()} == {"en", "xb"}
    pairs = read_parallel(paths.parallel)
    assert len(pairs) == config.n_parallel * (len(codes) - 1)
    assert {p.tgt_lang for p in pairs} == {PIVOT} and sorted({p.src_lang for p in pairs}) == codes[1:]
    multiway = read_multiway(paths.multiway)
    assert sorted(multiway) == codes and all(len(s) == config.n_multiway for s in multiway.values())
    corpus = set(paths.corpus.read_text(encoding="utf-8").splitlines())
    assert not any(s in corpus for sentences in multiway.values() for s in sentences)  # held out
    info = json.loads(paths.info.read_text())
    assert [lang["code"] for lang in info["languages"]] == codes and info["intents"] == list(INTENTS)


def test_every_language_is_written_in_its_script(world_dir):
    config, paths = world_dir
    text: dict[str, str] = {}
    for line in paths.task_test.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        text[row["lang"]] = text.get(row["lang"], "") + row["utt"]
    for spec in LANGUAGE_TABLE[: config.n_languages]:
        letters = {unicodedata.name(ch).split()[0] for ch in text[spec.code] if ch != " "}
        assert letters == {UNICODE_SCRIPT[spec.script]}, spec.code
    assert {spec.script for spec in LANGUAGE_TABLE} == set(UNICODE_SCRIPT)  # the table uses every script


def test_slots_are_verbatim_and_both_formats_agree(world_dir):
    _, paths = world_dir
    rows = [json.loads(line) for line in paths.task_test.read_text(encoding="utf-8").splitlines()]
    for row in rows:
        assert row["prompt"] == row["utt"] + SEPARATOR and row["completion"].startswith(" ")
        frame = parse_slot_output(row["completion"])
        assert frame.intent in INTENTS and not frame.malformed
        for slot_type, value in frame.slots:
            assert slot_type in SLOT_TYPES
            assert f" {value} " in f" {row['utt']} ", (value, row["utt"])
    massive = {e["id"]: e for e in load_massive_jsonl(paths.massive, partition=None, with_intent=True)}
    for row in rows:
        raw = next(json.loads(x) for x in (paths.massive / f"{row['lang']}.jsonl").open() if row["id"] in x)
        utt, slots = parse_annot_utt(raw["annot_utt"])
        assert utt == row["utt"] and tuple(slots) == parse_slot_output(row["completion"]).slots
        assert massive[row["id"]]["gold"] == row["completion"].strip()
    assert len(load_examples(paths.task_test, "slot")) == len(rows)  # the evaluation loader reads it as is


def test_entities_are_shared_in_latin_and_transliterated_elsewhere():
    world = World(8, seed=0)
    city = world.entities["city"][0]
    for code, language in world.languages.items():
        expected = city if language.spec.script == "latin" else transliterate(city, language.spec.script)
        assert world.entity("@city:0", code) == expected
    assert transliterate("kanto mi", "hangul") == "칸토 미"
    assert transliterate("kanto mi", "cyrillic") == "канто ми"
    with pytest.raises(ConfigError):
        WorldConfig(supervised=("zz",))
    with pytest.raises(ConfigError):
        WorldConfig.preset("huge")
    with pytest.raises(ConfigError):
        PretrainConfig.preset("huge")


def test_same_meaning_differs_in_order_across_languages():
    world = World(8, seed=0)
    clause = world.sample_clause(random.Random(3))
    english = world.render_clause(clause, "en")
    assert english.startswith("the ")
    assert len({world.render_clause(clause, code) for code in world.languages}) == 8


TINY = PretrainConfig(
    vocab_size=400,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    seq_len=32,
    batch_size=4,
    steps=3,
    compile=False,
)


def test_tiny_pretraining_writes_a_loadable_model_and_is_cached(world_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, paths = world_dir
    out = pretrain(paths.corpus, tmp_path / "model", TINY, progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("칸토 ->")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "칸토 ->"
    assert model.config.num_hidden_layers == 2 and model(torch.tensor([ids])).logits.shape[-1] == len(tokenizer)

    weights = out / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert pretrain(paths.corpus, out, TINY, progress=False) == out
    assert weights.stat().st_mtime_ns == stamp  # reused, not retrained
    assert not is_finished(out, dataclasses.replace(TINY, steps=4), paths.corpus)
    again = pretrain(paths.corpus, tmp_path / "again", TINY, progress=False)  # seeded: the same bytes
    assert (again / "model.safetensors").read_bytes() == weights.read_bytes()
    assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert json.loads((out / "pretrain.json").read_text())["device"] == "cpu"  # where it trained, for the record

    multiway = {k: v[:4] for k, v in read_multiway(paths.multiway, ["en", "xa", "xd"]).items()}
    retrieval = retrieval_by_layer(model, tokenizer, multiway)
    assert set(retrieval["raw"]) == {"xa", "xd"} and len(retrieval["centred"]["xd"]) == 3
    assert heldout_loss(model, tokenizer, multiway["xd"]) > 0
    alignment = alignment_by_layer(model, tokenizer, multiway)
    assert len(alignment["margin"]) == 3 and set(alignment["to_pivot"]) == {"xa", "xd"}
    assert all(0 <= v <= 100 for curve in alignment["per_language"].values() for v in curve)
    rates = copy_rates(model, tokenizer, World(3, seed=0), n=2)
    assert set(rates) == {"en", "xa", "xb"} and set(rates["xb"]) == {"list", "sentence"}


def test_everyday_clauses_share_the_commands_vocabulary():
    from midalign.synthetic.world import EVERYDAY_OBJECTS, FOODS

    rng = random.Random(0)
    plain, everyday = World(8, seed=0), World(8, seed=0, everyday_share=1.0)
    clauses = [everyday.sample_clause(rng) for _ in range(200)]
    assert all(c.verb in EVERYDAY_OBJECTS for c in clauses)
    assert any(c.time for c in clauses) and any(c.date for c in clauses)
    english = " ".join(everyday.render_clause(c, PIVOT) for c in clauses).split()
    assert {"pizza", "alarm", "ticket", "off"} <= set(english) and "turn_offs" not in english
    named = next(c for c in clauses if c.subject.noun.startswith("@"))
    for code in ("xb", "xd"):  # a name is written as the entity, in the language's script, with no article
        assert everyday.render_clause(named, code).split()[0] in everyday.entity(named.subject.noun, code).split()
    # share 0 is the first world's general domain, whose verbs and objects are not the commands' words
    assert not {w for c in [plain.sample_clause(rng) for _ in range(300)] for w in (c.verb, c.object.noun)} & {
        *FOODS,
        "alarm",
        "ticket",
    }


def _trigrams(text: str) -> set[str]:
    padded = f" {text} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def _shared_subwords(world: World, code: str) -> float:
    """Mean share of the English word's character trigrams that the language's word for the concept also has."""
    english, language = world.pivot, world.languages[code]
    shares = [len(_trigrams(english.word(c)) & _trigrams(language.word(c))) / len(_trigrams(english.word(c)))
              for c in CONCEPTS]  # fmt: skip
    return sum(shares) / len(shares)


@pytest.mark.parametrize("seed", [0, 1])
def test_families_share_subwords_with_english_by_distance(seed):
    world = World(10, seed=seed)
    share = {code: _shared_subwords(world, code) for code in world.languages if code != PIVOT}
    by_family: dict[str, list[float]] = {}
    for code, value in share.items():
        spec = world.languages[code].spec
        if spec.script != "latin":  # another script shares no subword, whatever the family (xi: a cognate language)
            assert value == 0, code
        else:
            by_family.setdefault(spec.family, []).append(value)
    assert min(by_family["close"]) > 0.5  # a close relative shares most subwords with English ...
    for code, language in world.languages.items():  # ... but spells most of its words otherwise
        identical = sum(language.word(c) == world.pivot.word(c) for c in CONCEPTS) / len(CONCEPTS)
        assert identical < 0.5 or code == PIVOT, code
    assert 0.1 < min(by_family["middle"]) <= max(by_family["middle"]) < min(by_family["close"])
    assert "distant" not in by_family  # every distant language has its own script
    # The cognates are regular: the same sound changes turn the same English word into the same word.
    assert cognate("teacher", SOUND_CHANGES[:4]) == cognate("teacher", SOUND_CHANGES[:4])
    assert cognate("living_room", ((r"v", "f"),)) == "lifing room"


def test_close_changes_set_how_many_subwords_close_relatives_share():
    plain, far = World(8, seed=0), World(8, seed=0, close_changes=(12, 5))
    for code in ("xa", "xd"):
        same = [sum(w.languages[code].word(c) == w.pivot.word(c) for c in CONCEPTS) for w in (plain, far)]
        assert same[1] < same[0] / 2, code
        assert _shared_subwords(far, code) < _shared_subwords(plain, code), code
    for code in ("xb", "xc", "xe", "xf", "xg"):  # the other families keep their words
        assert far.languages[code].lexicon == plain.languages[code].lexicon, code
    assert WorldConfig(close_changes=[4, 3]) == WorldConfig()  # as read back from world.json
    for bad in ((4, 6), (25, 3), (4,), (4.0, 3), (-1, 3), 4, "4,3"):
        with pytest.raises(ConfigError, match="close_changes"):
            WorldConfig(close_changes=bad)


def test_resource_level_is_independent_of_distance():
    families: dict[str, list[float]] = {}
    for spec in LANGUAGE_TABLE[: WorldConfig().n_languages]:
        families.setdefault(spec.family, []).append(spec.resource)
    assert set(families) == {"pivot", "close", "middle", "distant"}
    for family in ("close", "middle", "distant"):  # each family has a well- and a poorly-resourced member
        assert max(families[family]) >= 1.5 and min(families[family]) <= 0.4, family


def test_lexicons_are_one_to_one_and_cognate_languages_keep_latin_inflection():
    for spec in LANGUAGE_TABLE:
        language = Language(spec, seed=0)
        if spec.code == PIVOT:
            continue
        assert len(set(language.lexicon.values())) == len(language.lexicon), spec.code  # no two concepts share a word
        if spec.family != "distant":
            assert language.noun("living_room", True).endswith(language.spell(language.plural_suffix))
            assert language.verb("turn_off", True, False).split()[0].endswith(language.spell(language.past_suffix))


def test_translated_documents_hold_the_same_sentences_on_both_sides():
    config = WorldConfig.preset("ci", parallel_share=0.5, copy_share=0.1, switch_share=0.1, **SMALL)
    world = World(config.n_languages, config.seed, config.everyday_share)
    codes = set(world.languages)
    documents = []
    for line in corpus_lines(world, config, set(), random.Random(0)):
        source, sep, rest = line.partition(f"{SEPARATOR} ")
        target_lang, colon, target = rest.partition(": ")
        if sep and colon and target_lang in codes:
            documents.append((source, target_lang, target))
    assert len(documents) > 100
    assert all(len(s.split(" . ")) == len(t.split(" . ")) for s, _, t in documents)
    assert {len(s.split(" . ")) for s, _, _ in documents} == {1, 2, 3}
    into_english = [d for d in documents if d[1] == PIVOT]
    assert 0.3 < len(into_english) / len(documents) < 0.7  # both directions
    assert all(t.isascii() for _, _, t in into_english)  # the English side is in English
    into_hangul = [s for s, lang, t in documents if world.languages[lang].spec.script == "hangul"]
    assert into_hangul and all(s.isascii() for s in into_hangul)  # ... and so is the source of the other direction


def test_every_character_the_tasks_write_is_common_in_the_corpus():
    # A character the corpus never holds keeps the random embedding it started with, and a model fine-tuned to
    # write it writes a rare token instead (the second world's first default base scored 0 everywhere for `|`).
    config = WorldConfig.preset("ci")
    world = World(config.n_languages, config.seed, config.everyday_share)
    counts = collections.Counter("\n".join(corpus_lines(world, config, set(), random.Random(0))))
    rng = random.Random(1)
    written = set(SEPARATOR)
    for _ in range(300):
        command = world.sample_command(rng)
        for code in world.languages:
            utt = world.render_command(command, code)
            as_json = json.dumps({"intent": utt.intent, **dict(utt.slots)}, ensure_ascii=False)
            written |= set(utt.completion) | set(as_json)
    # Names' letters in Hangul or Devanagari are many and each rare; the format's ASCII must be common.
    rare = {char: counts[char] for char in written if counts[char] < (30 if char.isascii() else 1)}
    assert not rare, f"characters of task outputs rare in the corpus: {rare}"


def test_pretraining_goes_on_uncompiled_when_compiling_fails(world_dir, tmp_path, monkeypatch, caplog):
    # Inductor needs a C++ compiler; a machine without one must still get its base model, the eager one.
    _, paths = world_dir
    eager = pretrain(paths.corpus, tmp_path / "eager", TINY, progress=False)

    def broken(model):
        def call(**kwargs):
            raise RuntimeError("InductorError: no C++ compiler")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    fallback = pretrain(paths.corpus, tmp_path / "fallback", dataclasses.replace(TINY, compile=True), progress=False)
    assert "torch.compile failed (InductorError: no C++ compiler)" in caplog.text
    assert json.loads((fallback / "pretrain.json").read_text())["compiled"] is False
    assert (fallback / "model.safetensors").read_bytes() == (eager / "model.safetensors").read_bytes()


def test_untied_embeddings_are_their_own_cached_model(world_dir, tmp_path):
    # `tie_embeddings=False` (a row of docs/synthetic-world.md) gives the LM head its own table and its own cache key;
    # the field's default must leave the keys of bases cached before it existed unchanged, so it is not hashed then.
    from transformers import AutoModelForCausalLM

    _, paths = world_dir
    untied = dataclasses.replace(TINY, tie_embeddings=False)
    out = pretrain(paths.corpus, tmp_path / "untied", untied, progress=False)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert not torch.equal(model.get_output_embeddings().weight, model.get_input_embeddings().weight)
    assert is_finished(out, untied, paths.corpus) and not is_finished(out, TINY, paths.corpus)
    assert json.loads((out / "pretrain.json").read_text())["config"]["tie_embeddings"] is False


def test_the_demo_base_keeps_its_documented_cache_key(tmp_path):
    # docs/demo.md cites the demo's base by this key, and every workdir made since holds it: a change to the world,
    # the loop or the key's recipe that retrains the demo's base must be deliberate (then update the docs and this).
    paths = build_world(WorldConfig.preset("default"), tmp_path / "world")
    key = _cache_key(PretrainConfig.preset("default"), paths.corpus)
    assert key.startswith("9397acf9"), f"the default base's cache key changed: {key[:8]}"


def test_lexical_alignment_counts_shared_tokens_only():
    from midalign.synthetic.pretrain import train_tokenizer
    from midalign.synthetic.probe import lexical_alignment

    english = ["the red cat sleeps", "a green frog jumps high", "seven blue birds sing", "my old dog eats bread"]
    greek = ["η κόκκινη γάτα κοιμάται", "ένας πράσινος βάτραχος", "επτά μπλε πουλιά", "ο σκύλος μου τρώει"]
    tokenizer = train_tokenizer(english + greek, 300)
    shuffled = [english[i] for i in (1, 2, 3, 0)]  # the same sentences, misaligned: nothing may count
    result = lexical_alignment(tokenizer, {"en": english, "xa": list(english), "xc": greek, "xe": shuffled})
    assert result["to_pivot"]["xa"] == 100.0  # identical sentences are found
    assert result["to_pivot"]["xc"] == 0.0  # no token in common: nothing retrieved, ties count for nothing
    assert result["to_pivot"]["xe"] == 0.0
    # 12 ordered pairs; en <-> xa both ways are right, nothing else is: 2 of 12 directions at 100%
    assert result["margin"] == pytest.approx(100 * 2 / 12)
