"""A seeded synthetic multilingual world: languages, a pretraining corpus, slot-filling task data, parallel data.

One language-independent meaning layer holds two domains:

- the **voice-assistant** domain (9 intents, 11 slot types) is the task: commands such as
  `wake me at nine am friday` with gold slots `time: nine am; date: friday`;
- the **general** domain (clauses such as `the big dog watches the red house near the river`) is the
  pretraining text and the parallel data for alignment, which therefore is *not* task data, as in the paper.
  Half of its clauses (`WorldConfig.everyday_share`) tell of everyday things in the commands' words
  (`the boy ordered the burger on friday`), as real general text shares its vocabulary with assistant commands.

Meanings are rendered into `n_languages` languages. The pivot `en` is English (real English words, so outputs
are readable); the others (`xa`, `xb`, ...) have random syllable lexicons, plural and past suffixes, their
own word order (SVO / SOV / VSO), adjective and adposition order, articles, a script (Latin, Cyrillic, Greek,
Hangul or Devanagari) and a resource weight that sets their share of the corpus. Named entities (persons,
cities, songs, artists, restaurants) are shared verbatim by Latin-script languages and transliterated into
the other scripts, so slot values in those languages can only be produced by copying from the utterance.

`build_world(config, out_dir)` writes everything in the formats `midalign.data.readers` and
`midalign.evaluation` read, and returns the paths.

The parts: `words` (the concepts, slot values and command templates), `scripts` (spelling a romanised word in
each script), `languages` (typology, lexicon and morphology of each language), `meanings` (the `World` that
samples meanings and renders them); this module builds the files from them.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from midalign.errors import ConfigError
from midalign.evaluation.slots import NONE_OUTPUT
from midalign.files import write_json_atomic, write_jsonl_atomic, write_text_atomic
from midalign.synthetic.languages import CLOSE_CHANGES, LANGUAGE_TABLE, PIVOT, SOUND_CHANGES, VOWEL_SHIFTS
from midalign.synthetic.meanings import Clause, Command, Utterance, World
from midalign.synthetic.scripts import SCRIPTS, Phonology, transliterate
from midalign.synthetic.words import (
    CONCEPTS,
    ENTITY_SLOTS,
    EVERYDAY_OBJECTS,
    FOODS,
    INTENTS,
    SLOT_TYPES,
)

# The world's parts, importable from here as before the split.
__all__ = [
    "CONCEPTS",
    "COPY_MARKER",
    "EVERYDAY_OBJECTS",
    "FOODS",
    "INTENTS",
    "LANGUAGE_TABLE",
    "PIVOT",
    "QUOTE_MARKER",
    "SCRIPTS",
    "SEPARATOR",
    "SLOT_TYPES",
    "WORLD_VERSION",
    "Clause",
    "Command",
    "Phonology",
    "Utterance",
    "World",
    "WorldConfig",
    "WorldPaths",
    "build_world",
    "corpus_lines",
    "transliterate",
]

# The generator's version, recorded in world.json: a world written by another version is rebuilt, not reused, even
# when its config is the same (version 2: language families, translated documents; 3: structured records).
WORLD_VERSION = 3
SEPARATOR = " ->"  # ends every task prompt; copy-pressure lines in the corpus use it too (see `_copy_line`)
COPY_MARKER = "repeat:"  # copy-pressure lines: `text -> repeat: text` repeats the whole text
QUOTE_MARKER = "quote:"  # `text -> quote: span; quote: span` quotes spans of it, as slot values are


@dataclass(frozen=True)
class WorldConfig:
    """What `build_world` generates. `WorldConfig.preset("ci" | "default")` gives the two tested sizes.

    Attributes:
        seed: fixes the languages, the entities and every sample.
        n_languages: languages taken from `LANGUAGE_TABLE` (English first; 6-10 make sense, 2 is allowed for tests).
        supervised: languages with a task train split (the others get dev/test only and are zero-shot).
        corpus_lines: pretraining lines over all languages, shared by resource level.
        copy_share, switch_share, voice_share, parallel_share, record_share: fractions of each language's corpus
            lines that are copy-pressure lines, code-switched clauses, unannotated commands, parallel lines and
            structured records (the rest are monolingual clauses; English has no code-switched or parallel lines).
        switch_prob: probability that a content word of a code-switched clause is written in English.
        everyday_share: fraction of general-domain clauses (corpus, alignment pairs, multi-way set) that are everyday
            clauses in the commands' vocabulary (`EVERYDAY_OBJECTS`); 0 gives the first world's disjoint domains.
        close_changes: how many of `SOUND_CHANGES` and of `VOWEL_SHIFTS` make a close relative's cognates: more
            of them, fewer subwords shared with English.
        n_train: task training commands (rendered in every supervised language).
        n_dev, n_test: task dev / test commands, rendered in every language (parallel, as MASSIVE's splits).
        n_parallel: alignment pairs per non-pivot language (general domain, X -> English).
        n_multiway: held-out multi-way sentences (never in the corpus or the pairs) for retrieval evaluation.
    """

    seed: int = 0
    n_languages: int = 8
    supervised: tuple[str, ...] = (PIVOT,)
    corpus_lines: int = 60_000
    copy_share: float = 0.5
    switch_share: float = 0.1
    switch_prob: float = 0.4
    everyday_share: float = 0.5
    voice_share: float = 0.1
    parallel_share: float = 0.2
    record_share: float = 0.05
    close_changes: tuple[int, int] = CLOSE_CHANGES
    n_train: int = 2000
    n_dev: int = 100
    n_test: int = 200
    n_parallel: int = 1000
    n_multiway: int = 200

    def __post_init__(self):
        codes = [spec.code for spec in LANGUAGE_TABLE[: self.n_languages]]
        unknown = [code for code in self.supervised if code not in codes]
        if unknown or not self.supervised:
            raise ConfigError(f"supervised languages {list(self.supervised)} must be a non-empty subset of {codes}")
        shares = self.copy_share + self.switch_share + self.voice_share + self.parallel_share + self.record_share
        if not 0 <= shares <= 1:
            raise ConfigError(f"corpus shares must sum to at most 1, got {shares}")
        limits = (len(SOUND_CHANGES), len(VOWEL_SHIFTS))
        changes = tuple(self.close_changes) if isinstance(self.close_changes, list | tuple) else ()
        if len(changes) != 2 or not all(
            type(n) is int and 0 <= n <= top for n, top in zip(changes, limits, strict=True)
        ):
            raise ConfigError(
                f"close_changes must be two whole numbers within 0..{limits[0]} and 0..{limits[1]}, "
                f"got {self.close_changes}"
            )
        object.__setattr__(self, "close_changes", changes)  # a list from JSON or YAML compares equal to the tuple

    @classmethod
    def preset(cls, name: Literal["ci", "default", "bench"], **overrides) -> WorldConfig:
        """The `ci` (tiny, seconds) or `default` (the demo) configuration, with field overrides."""
        sizes = {
            "ci": dict(corpus_lines=6000, n_train=300, n_dev=30, n_test=50, n_parallel=100, n_multiway=50),
            # The demo's world: 1,200 training commands (225 task updates at demo.yaml's settings) take 40% off its
            # fine-tuning time, and English slot F1 stayed within a point (docs/demo.md, "Time").
            "default": dict(n_train=1200),
            # The transfer benchmark's world: more than three times the text, 2,000 training commands, and twice the
            # translated documents (in place of copy-pressure lines): with them the untied bench base peaked at
            # 1.41-1.70 times its embeddings over five bases (three at 1.5 or more), against 1.41-1.46
            # (docs/synthetic-world.md).
            "bench": dict(corpus_lines=200_000, parallel_share=0.4, copy_share=0.3),
        }
        if name not in sizes:
            raise ConfigError(f"unknown world preset {name!r}; choose one of {sorted(sizes)}")
        return cls(**{**sizes[name], **overrides})


@dataclass(frozen=True)
class WorldPaths:
    """The files `build_world` wrote.

    Attributes:
        root: the output folder.
        info: `world.json`: the config, languages, intents, slot types, lexicons and counts.
        corpus: pretraining text, one document per line (packed as `BOS line EOS` by `pretrain`).
        task_train: prompt/completion JSONL of the supervised languages (fields also `lang`, `utt`, `id`).
        task_dev, task_test: the same for every language.
        massive: folder of MASSIVE-style `<lang>.jsonl` (`locale`, `utt`, `annot_utt`, `intent`, `partition`).
        parallel: alignment pairs, JSONL `{src, tgt, src_lang, tgt_lang}`, X -> English.
        multiway: FLORES-style folder, `<lang>.txt` with aligned lines (held out).
    """

    root: Path
    info: Path
    corpus: Path
    task_train: Path
    task_dev: Path
    task_test: Path
    massive: Path
    parallel: Path
    multiway: Path

    @classmethod
    def in_dir(cls, root: str | Path) -> WorldPaths:
        """The paths of a world written (or to be written) under `root`."""
        root = Path(root)
        return cls(
            root=root,
            info=root / "world.json",
            corpus=root / "corpus.txt",
            task_train=root / "task" / "train.jsonl",
            task_dev=root / "task" / "dev.jsonl",
            task_test=root / "task" / "test.jsonl",
            massive=root / "massive",
            parallel=root / "parallel" / "train.jsonl",
            multiway=root / "multiway",
        )


def _copy_line(world: World, lang: str, rng: random.Random, held_out: set[Clause]) -> str:
    """A copy-pressure line in `lang`: the task's shape without its labels, `text -> repeat: <the text again>`.

    The first trial's model never learned to copy, so zero-shot slot values in other scripts came out translated
    or invented. Three kinds, all in every language and script:
    - a list of names in any script, repeated in full: mostly names never seen before, so only copying helps;
    - a clause or command repeated in full;
    - one or two spans of a clause or command after `quote:`, as slot values are spans of the utterance (a marker
      of their own keeps `repeat:` unambiguous).
    """
    kind = rng.random()
    if kind < 0.6:
        # Lists are not tied to `lang`: their script is drawn uniformly, so that rarely seen scripts get as much
        # copy practice as Latin (with lists in each language's own script, copying stayed Latin-only).
        script = rng.choice(SCRIPTS)
        names = []
        for _ in range(rng.randint(2, 4)):
            roman = rng.choice(world.entities[rng.choice(ENTITY_SLOTS)]) if rng.random() < 0.1 else None
            names.append(transliterate(roman or Phonology().word(rng, rng.randint(2, 3)), script))
        listed = ", ".join(names)
        return f"{listed}{SEPARATOR} {COPY_MARKER} {listed}"
    if rng.random() < 0.3:
        text = world.render_command(world.sample_command(rng), lang).text
    else:
        text = world.render_clause(_sample_new_clause(world, rng, held_out), lang)
    if kind < 0.8:
        return f"{text}{SEPARATOR} {COPY_MARKER} {text}"
    words = text.split()
    length = rng.randint(1, min(3, len(words)))
    start = rng.randrange(len(words) - length + 1)
    spans = [" ".join(words[start : start + length])]
    if rng.random() < 0.3:  # a second span, as a second slot would be
        spans.append(rng.choice(words))
    return f"{text}{SEPARATOR} " + "; ".join(f"{QUOTE_MARKER} {span}" for span in spans)


def corpus_lines(world: World, config: WorldConfig, held_out: set[Clause], rng: random.Random) -> list[str]:
    """The pretraining corpus, shuffled: per language, a resource-weighted number of lines of each kind.

    Args:
        world: the world.
        config: sizes and shares.
        held_out: clauses that must not appear (the multi-way evaluation set).
        rng: the corpus's random stream.
    """
    total = sum(lang.spec.resource for lang in world.languages.values())
    lines = []
    for code, language in world.languages.items():
        kinds = {"copy": config.copy_share, "voice": config.voice_share, "record": config.record_share}
        if code != PIVOT:
            kinds |= {"switch": config.switch_share, "parallel": config.parallel_share}
        kinds["clause"] = 1 - sum(kinds.values())
        for _ in range(round(config.corpus_lines * language.spec.resource / total)):
            kind = rng.choices(list(kinds), weights=list(kinds.values()))[0]
            if kind == "voice":
                lines.append(world.render_command(world.sample_command(rng), code).text)
                continue
            if kind == "copy":
                lines.append(_copy_line(world, code, rng, held_out))
                continue
            if kind == "record":
                lines.append(_record_line(world, code, rng, held_out))
                continue
            clause = _sample_new_clause(world, rng, held_out)
            if kind == "switch":
                lines.append(world.render_clause(clause, code, switch=lambda: rng.random() < config.switch_prob))
            elif kind == "parallel":
                lines.append(_translated_document(world, code, clause, rng, held_out))
            else:
                lines.append(world.render_clause(clause, code))
    rng.shuffle(lines)
    return lines


def _record_line(world: World, lang: str, rng: random.Random, held_out: set[Clause]) -> str:
    """A structured record, as web text has in logs, tables and JSON: English snake_case keys, values in `lang`.

    Two shapes: `head_key | key: value; key: value` (or `head_key | None`) and a JSON object. Without them the
    second world's corpus never held `|`, `_`, `{`, `"` or a capital letter, their tied embeddings stayed at
    their random start, and every fine-tuned model wrote a rare token in their place (slot F1 0 in every
    language, English included). The keys are English words, not the task's intents and slot types; the values are
    spans of a clause in `lang` or names, copied as a slot value is.
    """
    english = world.render_clause(_sample_new_clause(world, rng, held_out), PIVOT).split()
    text = world.render_clause(_sample_new_clause(world, rng, held_out), lang).split()

    def key() -> str:
        start = rng.randrange(len(english))
        return "_".join(english[start : start + rng.randint(1, 2)])

    def value() -> str:
        if rng.random() < 0.3:
            return world.languages[lang].spell(rng.choice(world.entities[rng.choice(ENTITY_SLOTS)]))
        start = rng.randrange(len(text))
        return " ".join(text[start : start + rng.randint(1, 3)])

    fields = {key(): value() for _ in range(rng.choice((0, 1, 2, 2, 3)))}
    if rng.random() < 0.3:
        return json.dumps(fields, ensure_ascii=False)
    body = "; ".join(f"{k}: {v}" for k, v in fields.items()) or NONE_OUTPUT
    return f"{key()} | {body}"


def _translated_document(world: World, code: str, clause: Clause, rng: random.Random, held_out: set[Clause]) -> str:
    """A translated document: one to three sentences and their translation, `text -> <language>: translation`, from
    `code` into English or back.

    It shares the frame of the copy-pressure lines (`text -> repeat: text`), so the heads that learned to copy can
    learn to translate: with `X | English` documents instead, the base model never learned to translate (its
    continuations after `|` ignored the source, chrF++ 17-22 for every language, close relatives included).
    """
    clauses = [clause, *(_sample_new_clause(world, rng, held_out) for _ in range(rng.randint(0, 2)))]
    source, target = (code, PIVOT) if rng.random() < 0.5 else (PIVOT, code)
    texts = {lang: " . ".join(world.render_clause(c, lang) for c in clauses) for lang in (source, target)}
    return f"{texts[source]}{SEPARATOR} {target}: {texts[target]}"


def _sample_new_clause(world: World, rng: random.Random, held_out: set[Clause]) -> Clause:
    for _ in range(1000):  # the clause space is ~10^6, so a rejection is rare; bounded all the same
        clause = world.sample_clause(rng)
        if clause not in held_out:
            return clause
    raise RuntimeError("could not sample a clause outside the held-out set")


def _task_rows(utterances: list[Utterance], split: str) -> tuple[list[dict], list[dict]]:
    task, massive = [], []
    for i, utt in enumerate(utterances):
        uid = f"{split}-{utt.lang}-{i}"
        prompt = utt.text + SEPARATOR
        task.append({"id": uid, "lang": utt.lang, "utt": utt.text, "prompt": prompt, "completion": utt.completion})
        massive.append(
            {
                "id": uid,
                "locale": utt.lang,
                "partition": split,
                "scenario": utt.intent.split("_")[0],
                "intent": utt.intent,
                "utt": utt.text,
                "annot_utt": utt.annotated,
            }
        )
    return task, massive


def build_world(config: WorldConfig, out_dir: str | Path) -> WorldPaths:
    """Generate the world and write every file (atomically) into `out_dir`.

    Each part draws from its own random stream (`"{seed}:{part}"`), so changing one size leaves the other parts
    unchanged. The same config always writes byte-identical files.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    world = World(config.n_languages, config.seed, config.everyday_share, config.close_changes)

    def stream(part: str) -> random.Random:
        return random.Random(f"{config.seed}:{part}")

    multiway_rng = stream("multiway")
    multiway: list[Clause] = []
    while len(multiway) < config.n_multiway:
        clause = world.sample_clause(multiway_rng)
        if clause not in multiway:
            multiway.append(clause)
    held_out = set(multiway)

    splits: dict[str, list[Command]] = {}
    for split, n in (("train", config.n_train), ("dev", config.n_dev), ("test", config.n_test)):
        rng = stream(split)
        splits[split] = [world.sample_command(rng) for _ in range(n)]
    utterances = {
        split: [
            world.render_command(cmd, code)
            for code in (config.supervised if split == "train" else world.languages)
            for cmd in commands
        ]
        for split, commands in splits.items()
    }

    parallel_rng = stream("parallel")
    pairs = []
    for code in world.languages:
        if code == PIVOT:
            continue
        for _ in range(config.n_parallel):
            clause = _sample_new_clause(world, parallel_rng, held_out)
            pairs.append(
                {
                    "src": world.render_clause(clause, code),
                    "tgt": world.render_clause(clause, PIVOT),
                    "src_lang": code,
                    "tgt_lang": PIVOT,
                }
            )

    paths = WorldPaths.in_dir(out)
    lines = corpus_lines(world, config, held_out, stream("corpus"))
    write_text_atomic(paths.corpus, "".join(line + "\n" for line in lines))
    massive: dict[str, list[dict]] = {code: [] for code in world.languages}
    for split, path in (("train", paths.task_train), ("dev", paths.task_dev), ("test", paths.task_test)):
        task, rows = _task_rows(utterances[split], split)
        write_jsonl_atomic(path, task)
        for row in rows:
            massive[row["locale"]].append(row)
    for code, rows in massive.items():
        write_jsonl_atomic(paths.massive / f"{code}.jsonl", rows)
    write_jsonl_atomic(paths.parallel, pairs)
    for code in world.languages:
        write_text_atomic(
            paths.multiway / f"{code}.txt", "".join(world.render_clause(c, code) + "\n" for c in multiway)
        )
    write_json_atomic(
        paths.info,
        {
            "version": WORLD_VERSION,
            "config": dataclasses.asdict(config),
            "pivot": PIVOT,
            "separator": SEPARATOR,
            "languages": [dataclasses.asdict(lang.spec) for lang in world.languages.values()],
            "intents": list(INTENTS),
            "slot_types": list(SLOT_TYPES),
            "counts": {
                "corpus_lines": len(lines),
                **{f"task_{split}": len(utts) for split, utts in utterances.items()},
                "parallel_pairs": len(pairs),
                "multiway_sentences": len(multiway),
            },
            "lexicons": {code: {c: lang.word(c) for c in CONCEPTS} for code, lang in world.languages.items()},
        },
    )
    return paths
