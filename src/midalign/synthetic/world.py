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
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from midalign.errors import ConfigError
from midalign.evaluation.slots import format_slots
from midalign.io import write_json_atomic, write_jsonl_atomic, write_text_atomic

PIVOT = "en"
SEPARATOR = " ->"  # ends every task prompt; copy-pressure lines in the corpus use it too (see `_copy_line`)
COPY_MARKER = "repeat:"  # copy-pressure lines: `text -> repeat: text` repeats the whole text
QUOTE_MARKER = "quote:"  # `text -> quote: span; quote: span` quotes spans of it, as slot values are

# --- the meaning layer ----------------------------------------------------------------------------------------
# Concepts are named by their English word ("_" stands for a space in multi-word English phrases).

NOUNS = (
    "dog", "cat", "bird", "horse", "farmer", "teacher", "student", "baker", "doctor", "girl", "boy", "sailor",
    "painter", "house", "book", "apple", "boat", "letter", "tree", "stone", "cup", "door", "window", "basket",
    "bread", "flower", "chair", "box", "rope", "coin", "lamp", "hat", "cake", "wagon", "bell", "drum", "map",
    "key", "shoe", "coat", "bottle", "candle", "plate", "ring", "ball", "kite", "blanket", "fox", "goat", "owl",
)  # fmt: skip
VERBS = (
    "watch", "like", "visit", "paint", "clean", "follow", "open", "carry", "want", "help", "push", "pull",
    "wash", "cook", "kick", "lift", "touch", "need", "fix", "count", "guard", "love", "hate", "borrow", "fill",
    "greet", "climb", "enjoy", "fetch", "hide",
)  # fmt: skip
ADJECTIVES = (
    "big", "small", "red", "blue", "green", "old", "young", "happy", "tall", "quiet", "heavy", "bright", "dark",
    "warm", "cold", "clever", "lazy", "brave", "round", "soft", "strong", "tiny", "yellow", "white", "black", "sad",
)  # fmt: skip
PLACES = (
    "garden", "river", "market", "forest", "school", "village", "bridge", "harbor", "hill", "castle", "field",
    "lake", "farm", "tower", "valley",
)  # fmt: skip
RELATIONS = ("in", "near", "behind", "under")
HUMANS = ("farmer", "teacher", "student", "baker", "doctor", "girl", "boy", "sailor", "painter")

# Slot values that are ordinary words (translated in each language, as in MASSIVE).
GENRES = ("jazz", "rock", "pop", "blues", "classical", "folk", "metal", "reggae", "techno", "country")
FOODS = ("pizza", "sushi", "soup", "noodles", "burger", "salad", "curry", "tacos", "dumplings", "pancakes")
ROOMS = ("kitchen", "bedroom", "bathroom", "garage", "office", "living_room", "hallway", "basement")
EVENTS = (
    "meeting", "party", "dentist_appointment", "lunch", "concert", "wedding", "yoga_class", "interview",
    "birthday_dinner",
)  # fmt: skip
DATES = ("today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
HOURS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
MINUTES = ("fifteen", "thirty", "forty_five")
DAY_HALVES = ("am", "pm")
# `WorldConfig.clock_digits` (off by default): clock times written with digits shared by every language (`7:15 pm`),
# as MASSIVE's utterances mostly write them, with only the day half a word of each language. It was tried because
# mean-pooled alignment blurred the spelt-out hour words (`seven pm` -> `ten pm`) in the supervised language; with
# digits, English slot F1 fell to about 70 for the task-only baseline too, which then wrote wrong hours and days
# instead of copying them (docs/demo.md, "What was tried", row 13).
CLOCK = {**{hour: str(i) for i, hour in enumerate(HOURS, 1)}, "fifteen": "15", "thirty": "30", "forty_five": "45"}
WORD_SLOTS = {"genre": GENRES, "food": FOODS, "room": ROOMS, "event": EVENTS, "date": DATES}
ENTITY_SLOTS = ("city", "person", "song", "artist", "restaurant")
# Everyday clauses (`WorldConfig.everyday_share`): general-domain sentences about people doing everyday things, which
# use the words the voice-assistant commands use (verbs, objects, rooms, cities, persons, times, dates) in the
# general grammar: `the baker ordered soup in the kitchen at nine am`. In real languages the general text that
# parallel data and pretraining corpora are made of shares its everyday vocabulary with assistant commands; without
# these clauses the two domains of this world had disjoint vocabularies, and nothing linked a command word in one
# language to its English translation. Each verb takes one of its typical objects.
EVERYDAY_OBJECTS: dict[str, tuple[str, ...]] = {
    "play": (*GENRES, "music", "song"),
    "order": FOODS,
    "buy": ("ticket", *FOODS),
    "send": ("email", "letter"),
    "set": ("alarm",),
    "tell": ("joke", "weather"),
    "say": ("something", "joke"),
    "add": EVENTS,
    "remind": HUMANS,
    "wake": HUMANS,
    "turn_off": ("lights", "lamp"),
}
ENTITY_COUNTS = {"city": 40, "person": 60, "song": 40, "artist": 40, "restaurant": 30}
SLOT_TYPES = ("time", "date", "city", "person", "song", "artist", "genre", "food", "restaurant", "room", "event")

# Each intent has command templates: (verb, arguments). An argument is "[?][adposition]:unit unit ...": a leading
# "?" makes it optional, the adposition goes before or after the phrase by language, and a unit is a concept
# or a `{slot}`. Commands are imperatives, so there is no subject: SVO and VSO put the verb first, SOV last.
INTENTS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "alarm_set": (("wake", (":me", "at:{time}", "?:{date}")), ("set", (":alarm", "for:{time}", "?on:{date}"))),
    "weather_query": (("tell", (":me", ":weather", "in:{city}", "?:{date}")),),
    "play_music": (
        ("play", (":song {song}", "?by:{artist}")), ("play", (":{genre} music",)), ("play", (":music", "by:{artist}"))
    ),
    "calendar_set": (
        ("remind", (":me", "about:{event}", "?with:{person}", "?on:{date}", "?at:{time}")),
        ("add", (":{event}", "on:{date}", "?at:{time}")),
    ),
    "takeaway_order": (("order", (":{food}", "?from:{restaurant}")),),
    "iot_hue_lightoff": (("turn_off", (":lights", "in:{room}")),),
    "transport_ticket": (("buy", (":ticket", "to:{city}", "?for:{date}", "?at:{time}")),),
    "email_sendemail": (("send", (":email", "to:{person}", "?about:{event}")),),
    "general_joke": (("tell", (":me", ":joke")), ("say", (":something", ":funny"))),
}  # fmt: skip


def _template_words() -> tuple[str, ...]:
    words = []
    for templates in INTENTS.values():
        for verb, args in templates:
            words.append(verb)
            for arg in args:
                adposition, _, units = arg.lstrip("?").partition(":")
                words += [adposition] if adposition else []
                words += [u for u in units.split() if not u.startswith("{")]
    return tuple(words)


# Every concept once, in a fixed order (lexicons are drawn in this order, so it fixes every language's words).
CONCEPTS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (*NOUNS, *VERBS, *ADJECTIVES, *PLACES, *RELATIONS, "please", *_template_words(), *GENRES, *FOODS, *ROOMS,
         *EVENTS, *DATES, *HOURS, *MINUTES, *DAY_HALVES)
    )
)  # fmt: skip

# --- sounds and scripts --------------------------------------------------------------------------------------
# Non-English words are strings of syllables consonant + vowel (+ "n"), written in Latin ("romanised") and then
# transliterated syllable by syllable, so every script can spell every word and every name.

CONSONANTS = "ptkbdgmnslrvzh"
VOWELS = "aeiou"
_SYLLABLE = re.compile(f"([{CONSONANTS}])([{VOWELS}])(n(?![{VOWELS}]))?")
Script = Literal["latin", "cyrillic", "greek", "hangul", "devanagari"]
SCRIPTS: tuple[Script, ...] = ("latin", "cyrillic", "greek", "hangul", "devanagari")
_LETTERS = {
    "cyrillic": dict(zip(CONSONANTS + VOWELS, "пткбдгмнслрвзхаеиоу", strict=True)),
    # Final-sigma never arises: a word ends in a vowel or "n".
    "greek": dict(zip(CONSONANTS + VOWELS, "πτκβδγμνσλρφζχαειου", strict=True)),
}
_DEVANAGARI_CONSONANTS = dict(
    zip(CONSONANTS, ("प", "त", "क", "ब", "द", "ग", "म", "न", "स", "ल", "र", "व", "ज़", "ह"), strict=True)
)
_DEVANAGARI_VOWEL_SIGNS = {"a": "", "e": "\u0947", "i": "\u093f", "o": "\u094b", "u": "\u0941"}
# Hangul jamo indices (initial, medial); l/r and b/v share a letter, as in real Korean transliteration.
_HANGUL_INITIALS = dict(zip(CONSONANTS, (17, 16, 15, 7, 3, 0, 6, 2, 9, 5, 5, 7, 12, 18), strict=True))
_HANGUL_MEDIALS = {"a": 0, "e": 5, "i": 20, "o": 8, "u": 13}
_HANGUL_FINAL_N = 4


def transliterate(roman: str, script: Script) -> str:
    """Spell a romanised word (or space-separated words) in `script`.

    Example:
        >>> transliterate("kanto mi", "hangul")
        '칸토 미'
    """
    if script == "latin":
        return roman
    if script in _LETTERS:
        return "".join(_LETTERS[script].get(ch, ch) for ch in roman)
    return " ".join(_transliterate_word(word, script) for word in roman.split(" "))


def _transliterate_word(word: str, script: Script) -> str:
    syllables = _SYLLABLE.findall(word)
    if "".join("".join(s) for s in syllables) != word:
        raise ValueError(f"{word!r} is not a sequence of consonant-vowel(-n) syllables")
    out = []
    for onset, vowel, coda in syllables:
        if script == "hangul":
            code = (_HANGUL_INITIALS[onset] * 21 + _HANGUL_MEDIALS[vowel]) * 28 + (_HANGUL_FINAL_N if coda else 0)
            out.append(chr(0xAC00 + code))
        else:  # devanagari: consonant letter with its vowel sign; the anusvara stands for a final n
            out.append(_DEVANAGARI_CONSONANTS[onset] + _DEVANAGARI_VOWEL_SIGNS[vowel] + ("\u0902" if coda else ""))
    return "".join(out)


@dataclass(frozen=True)
class Phonology:
    """The sounds a language's words are made of."""

    consonants: str = CONSONANTS
    vowels: str = VOWELS
    coda_prob: float = 0.2

    def word(self, rng: random.Random, syllables: int) -> str:
        """A romanised word of `syllables` syllables, drawn from `rng`."""
        return "".join(
            rng.choice(self.consonants) + rng.choice(self.vowels) + ("n" if rng.random() < self.coda_prob else "")
            for _ in range(syllables)
        )


# --- languages -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LanguageSpec:
    """The typology of one language: how meanings are ordered and written, and how much text it has."""

    code: str
    script: Script
    word_order: Literal["SVO", "SOV", "VSO"]
    adjective_first: bool  # "big dog" rather than "dog big"
    prepositions: bool  # "in garden" rather than "garden in"
    article: Literal["before", "after", "none"]  # a definite article word before or after its noun phrase
    resource: float  # relative share of the pretraining corpus


# Languages are taken from the top of this table; resource levels fall from high to low down the table, and
# the orders, scripts and articles are mixed so that several non-Latin languages differ from English in order.
LANGUAGE_TABLE: tuple[LanguageSpec, ...] = (
    LanguageSpec("en", "latin", "SVO", True, True, "before", 3.0),
    LanguageSpec("xa", "latin", "SVO", False, True, "before", 2.0),
    LanguageSpec("xb", "cyrillic", "SVO", True, True, "none", 1.6),
    LanguageSpec("xc", "greek", "VSO", False, True, "before", 1.3),
    LanguageSpec("xd", "hangul", "SOV", True, False, "none", 1.0),
    LanguageSpec("xe", "devanagari", "SOV", True, False, "after", 0.8),
    LanguageSpec("xf", "latin", "SOV", True, False, "none", 0.5),
    LanguageSpec("xg", "cyrillic", "VSO", False, True, "after", 0.3),
    LanguageSpec("xh", "greek", "SVO", False, False, "none", 0.25),
    LanguageSpec("xi", "hangul", "SOV", False, False, "after", 0.2),
)


def _english_suffix(word: str, es: str, ies: str, default: str) -> str:
    # The regular English rules for plural / third person ("es", "ies", "s") and past tense ("ed", "ied", "d").
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + es
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + ies
    if word.endswith("e") and default == "ed":
        return word + "d"
    return word + default


class Language:
    """One language of the world: lexicon, morphology and script (English for the pivot).

    The lexicon is drawn from a generator seeded once per language (seeding per draw repeats the same syllables).
    """

    def __init__(self, spec: LanguageSpec, seed: int):
        self.spec = spec
        self.code = spec.code
        self.lexicon: dict[str, str] = {}  # concept -> romanised word; empty for English
        self.plural_suffix = self.past_suffix = self.article_word = ""
        if spec.code == PIVOT:
            return
        rng = random.Random(f"{seed}:language:{spec.code}")
        phonology = Phonology(
            consonants="".join(sorted(rng.sample(CONSONANTS, 10), key=CONSONANTS.index)),
            vowels="".join(sorted(rng.sample(VOWELS, rng.choice((4, 5))), key=VOWELS.index)),
            coda_prob=rng.uniform(0.0, 0.3),
        )
        taken: set[str] = set()
        for concept in (*CONCEPTS, "<plural>", "<past>", "<article>"):
            # A grammatical affix or a function word is one syllable; content words are one to three.
            short = concept.startswith("<") or concept in RELATIONS
            for _ in range(1000):
                word = phonology.word(rng, 1 if short else rng.choices((1, 2, 3), weights=(2, 5, 3))[0])
                if word not in taken:
                    break
            else:  # bounded on purpose: an exhausted sound inventory must fail loudly, not loop
                raise RuntimeError(f"language {spec.code}: no unused word left for {concept!r}")
            taken.add(word)
            self.lexicon[concept] = word
        self.plural_suffix = self.lexicon.pop("<plural>")
        self.past_suffix = self.lexicon.pop("<past>")
        self.article_word = self.lexicon.pop("<article>")

    def spell(self, roman: str) -> str:
        """Write romanised text in this language's script."""
        return transliterate(roman, self.spec.script)

    def word(self, concept: str) -> str:
        """The uninflected word (or English phrase) for `concept`."""
        if self.code == PIVOT:
            return concept.replace("_", " ")
        return self.spell(self.lexicon[concept])

    def noun(self, concept: str, plural: bool) -> str:
        """A noun in the singular or plural."""
        if self.code == PIVOT:
            return (_english_suffix(concept, "es", "ies", "s") if plural else concept).replace("_", " ")
        return self.spell(self.lexicon[concept] + (self.plural_suffix if plural else ""))

    def verb(self, concept: str, past: bool, plural_subject: bool) -> str:
        """A finite verb; only English agrees with its subject (present tense, third person)."""
        if self.code == PIVOT:
            head, _, rest = concept.partition("_")  # a phrasal verb inflects its first word: "turns off"
            if past:
                head = _english_suffix(head, "ed", "ied", "ed")
            elif not plural_subject:
                head = _english_suffix(head, "es", "ies", "s")
            return f"{head} {rest.replace('_', ' ')}" if rest else head
        return self.spell(self.lexicon[concept] + (self.past_suffix if past else ""))

    def article(self) -> str | None:
        """The definite article, or None when the language has none."""
        if self.spec.article == "none":
            return None
        return "the" if self.code == PIVOT else self.spell(self.article_word)


# --- meanings ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NounPhrase:
    noun: str
    adjective: str | None
    plural: bool


@dataclass(frozen=True)
class Clause:
    """A general-domain meaning: subject verb object, optionally at a place (`relation` + place noun), a time and a
    date. A noun (or place) `@kind:index` is a named entity."""

    subject: NounPhrase
    verb: str
    past: bool
    object: NounPhrase
    place: tuple[str, str] | None
    time: tuple[str, ...] | None = None  # everyday clauses: `at nine thirty am`
    date: str | None = None  # everyday clauses: `on friday`


# A command argument: (adposition or "", units); a unit is a concept or a slot (type, value atoms). A value atom
# is a concept or an entity reference "@kind:index".
Unit = str | tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class Command:
    """A voice-assistant meaning: an intent, an imperative verb and its arguments with slot values."""

    intent: str
    verb: str
    please: bool
    args: tuple[tuple[str, tuple[Unit, ...]], ...]


@dataclass(frozen=True)
class Utterance:
    """A command rendered in one language, with its gold slots (values are verbatim substrings of `text`)."""

    lang: str
    intent: str
    text: str
    annotated: str  # MASSIVE's annot_utt: "wake me at [time : nine am]"
    slots: tuple[tuple[str, str], ...]  # (type, value) in the order they occur in `text`

    @property
    def completion(self) -> str:
        """The training target: ` intent | type: value; ...` or ` intent | None`."""
        return " " + format_slots(self.slots, intent=self.intent)


class World:
    """The languages, the named entities and the samplers and renderers of meanings.

    Args:
        n_languages: how many languages of `LANGUAGE_TABLE` to use (English first).
        seed: fixes every lexicon and entity.
    """

    def __init__(self, n_languages: int = 8, seed: int = 0, everyday_share: float = 0.0, clock_digits: bool = False):
        if not 2 <= n_languages <= len(LANGUAGE_TABLE):
            raise ConfigError(f"n_languages must be within 2..{len(LANGUAGE_TABLE)}, got {n_languages}")
        self.seed = seed
        self.everyday_share = everyday_share
        self.clock_digits = clock_digits
        self.languages = {spec.code: Language(spec, seed) for spec in LANGUAGE_TABLE[:n_languages]}
        self.pivot = self.languages[PIVOT]
        rng = random.Random(f"{seed}:entities")
        names = Phonology(coda_prob=0.25)
        taken: set[str] = set()

        def name(words: int) -> str:
            for _ in range(1000):
                text = " ".join(names.word(rng, rng.choice((2, 2, 3))) for _ in range(words))
                if text not in taken:
                    taken.add(text)
                    return text
            raise RuntimeError("no unused entity name left")

        word_counts = {"city": (1,), "person": (2,), "song": (1, 2, 3), "artist": (1, 2), "restaurant": (1, 2)}
        self.entities: dict[str, list[str]] = {
            kind: [name(rng.choice(word_counts[kind])) for _ in range(ENTITY_COUNTS[kind])] for kind in ENTITY_SLOTS
        }  # romanised; written in each language's script by `Language.spell`
        # Selectional preferences: what each concept tends to occur with, the same in every language. Without them
        # every noun was interchangeable with every other, so nothing in the text could tell which words translate
        # which (word translation by embedding similarity was at chance).
        rng = random.Random(f"{seed}:meanings")
        self.adjectives = {noun: rng.sample(ADJECTIVES, 3) for noun in NOUNS}
        self.verbs = {noun: rng.sample(VERBS, 3) for noun in NOUNS}
        self.objects = {verb: rng.sample(NOUNS, 4) for verb in VERBS}
        self.places = {noun: rng.sample(PLACES, 2) for noun in NOUNS}

    # sampling ----------------------------------------------------------------------------------------------

    def sample_clause(self, rng: random.Random) -> Clause:
        """A random general-domain meaning; each concept mostly (p 0.8) one its neighbour prefers.

        With probability `everyday_share`, an everyday clause (`EVERYDAY_OBJECTS`) instead.
        """
        if self.everyday_share and rng.random() < self.everyday_share:  # no draw at 0: older worlds stay the same
            return self._sample_everyday(rng)

        def pick(preferred: list[str], everything: tuple[str, ...]) -> str:
            return rng.choice(preferred) if rng.random() < 0.8 else rng.choice(everything)

        def noun_phrase(noun: str) -> NounPhrase:
            adjective = pick(self.adjectives[noun], ADJECTIVES) if rng.random() < 0.5 else None
            return NounPhrase(noun, adjective, rng.random() < 0.3)

        subject = rng.choice(NOUNS)
        verb = pick(self.verbs[subject], VERBS)
        obj = pick(self.objects[verb], NOUNS)
        place = (rng.choice(RELATIONS), pick(self.places[obj], PLACES)) if rng.random() < 0.5 else None
        return Clause(noun_phrase(subject), verb, rng.random() < 0.5, noun_phrase(obj), place)

    def _sample_everyday(self, rng: random.Random) -> Clause:
        """Someone (a person's name or a noun phrase) does an everyday thing, maybe somewhere, at a time, on a day."""

        def person() -> NounPhrase:
            if rng.random() < 0.4:
                return NounPhrase(f"@person:{rng.randrange(ENTITY_COUNTS['person'])}", None, False)
            noun = rng.choice(HUMANS)
            adjective = rng.choice(self.adjectives[noun]) if rng.random() < 0.3 else None
            return NounPhrase(noun, adjective, rng.random() < 0.3)

        verb = rng.choice(list(EVERYDAY_OBJECTS))
        thing = rng.choice(EVERYDAY_OBJECTS[verb])
        obj = person() if thing in HUMANS else NounPhrase(thing, None, False)
        place = None
        if rng.random() < 0.4:
            where = rng.choice(ROOMS) if rng.random() < 0.5 else f"@city:{rng.randrange(ENTITY_COUNTS['city'])}"
            place = (rng.choice(RELATIONS), where)
        time = None
        if rng.random() < 0.35:
            time = self._sample_unit("{time}", rng)[1]
        date = rng.choice(DATES) if rng.random() < 0.35 else None
        return Clause(person(), verb, rng.random() < 0.5, obj, place, time, date)

    def sample_command(self, rng: random.Random) -> Command:
        """A random voice-assistant meaning: uniform intent and template, optional arguments kept with p 0.6."""
        intent = rng.choice(list(INTENTS))
        verb, specs = rng.choice(INTENTS[intent])
        args = []
        for spec in specs:
            if spec.startswith("?") and rng.random() >= 0.6:
                continue
            adposition, _, units = spec.lstrip("?").partition(":")
            args.append((adposition, tuple(self._sample_unit(u, rng) for u in units.split())))
        return Command(intent, verb, rng.random() < 0.2, tuple(args))

    def _sample_unit(self, unit: str, rng: random.Random) -> Unit:
        if not unit.startswith("{"):
            return unit
        slot = unit.strip("{}")
        if slot == "time":
            minute = (rng.choice(MINUTES),) if rng.random() < 0.3 else ()
            return slot, (rng.choice(HOURS), *minute, rng.choice(DAY_HALVES))
        if slot in WORD_SLOTS:
            return slot, (rng.choice(WORD_SLOTS[slot]),)
        return slot, (f"@{slot}:{rng.randrange(ENTITY_COUNTS[slot])}",)

    # rendering ---------------------------------------------------------------------------------------------

    def clock(self, atoms: tuple[str, ...], word: Callable[[str], str]) -> list[str]:
        """The words of a time `(hour, [minute], day half)`: `7:15` and the day half's word with `clock_digits`."""
        if not self.clock_digits:
            return [word(atom) for atom in atoms]
        *numbers, half = atoms
        return [":".join(CLOCK[n] for n in numbers), word(half)]

    def entity(self, reference: str, lang: str) -> str:
        """Write an entity reference `@kind:index` in `lang`'s script."""
        kind, _, index = reference[1:].partition(":")
        return self.languages[lang].spell(self.entities[kind][int(index)])

    def render_clause(self, clause: Clause, lang: str, switch: Callable[[], bool] | None = None) -> str:
        """Write a general-domain meaning in `lang`.

        Args:
            clause: the meaning.
            lang: a language code.
            switch: code-switching: called once per content word; True writes that word in English (inflected the
                English way) inside `lang`'s grammar.
        """
        language = self.languages[lang]

        def lex() -> Language:
            return self.pivot if switch is not None and switch() else language

        def noun_phrase(phrase: NounPhrase) -> list[str]:
            if phrase.noun.startswith("@"):  # a name: no article, no adjective
                return [self.entity(phrase.noun, lang)]
            words = [lex().noun(phrase.noun, phrase.plural)]
            if phrase.adjective:
                adjective = lex().word(phrase.adjective)
                words = [adjective, *words] if language.spec.adjective_first else [*words, adjective]
            article = language.article()
            if article:
                words = [article, *words] if language.spec.article == "before" else [*words, article]
            return words

        subject = noun_phrase(clause.subject)
        verb = [lex().verb(clause.verb, clause.past, clause.subject.plural)]
        obj = noun_phrase(clause.object)
        place: list[str] = []
        if clause.place:
            relation, noun = clause.place
            place = noun_phrase(NounPhrase(noun, None, False))
            adposition = language.word(relation)
            place = [adposition, *place] if language.spec.prepositions else [*place, adposition]
        for adposition, atoms in (("at", clause.time), ("on", (clause.date,) if clause.date else None)):
            if atoms:  # time and date adjuncts follow the place
                phrase = (
                    self.clock(atoms, lambda atom: lex().word(atom)) if adposition == "at" else [lex().word(atoms[0])]
                )
                head = language.word(adposition)
                place += [head, *phrase] if language.spec.prepositions else [*phrase, head]
        order = {
            "SVO": (subject, verb, obj, place),
            "SOV": (subject, obj, place, verb),
            "VSO": (verb, subject, obj, place),
        }
        parts = order[language.spec.word_order]
        return " ".join(word for part in parts for word in part)

    def render_command(self, command: Command, lang: str) -> Utterance:
        """Write a voice-assistant meaning in `lang`, with its slots and MASSIVE annotation."""
        language = self.languages[lang]
        phrases: list[list[tuple[str, str | None]]] = []  # each phrase: (text, slot type or None) pieces
        for adposition, units in command.args:
            pieces = [self._render_unit(unit, lang) for unit in units]
            if adposition:
                head = (language.word(adposition), None)
                pieces = [head, *pieces] if language.spec.prepositions else [*pieces, head]
            phrases.append(pieces)
        verb = [(language.word(command.verb), None)]
        phrases = [*phrases, verb] if language.spec.word_order == "SOV" else [verb, *phrases]
        if command.please:
            phrases.insert(0, [(language.word("please"), None)])
        pieces = [piece for phrase in phrases for piece in phrase]
        return Utterance(
            lang=lang,
            intent=command.intent,
            text=" ".join(text for text, _ in pieces),
            annotated=" ".join(f"[{slot} : {text}]" if slot else text for text, slot in pieces),
            slots=tuple((slot, text) for text, slot in pieces if slot),
        )

    def _render_unit(self, unit: Unit, lang: str) -> tuple[str, str | None]:
        if isinstance(unit, str):
            return self.languages[lang].word(unit), None
        slot, atoms = unit
        if slot == "time":
            return " ".join(self.clock(atoms, self.languages[lang].word)), slot
        words = [self.entity(a, lang) if a.startswith("@") else self.languages[lang].word(a) for a in atoms]
        return " ".join(words), slot


# --- the files -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldConfig:
    """What `build_world` generates. `WorldConfig.preset("ci" | "default")` gives the two tested sizes.

    Attributes:
        seed: fixes the languages, the entities and every sample.
        n_languages: languages taken from `LANGUAGE_TABLE` (English first; 6-10 make sense, 2 is allowed for tests).
        supervised: languages with a task train split (the others get dev/test only and are zero-shot).
        corpus_lines: pretraining lines over all languages, shared by resource level.
        copy_share, switch_share, voice_share, parallel_share: fractions of each language's corpus lines that are
            copy-pressure lines, code-switched clauses, unannotated commands and parallel lines (the rest are
            monolingual clauses; English has no code-switched or parallel lines).
        switch_prob: probability that a content word of a code-switched clause is written in English.
        everyday_share: fraction of general-domain clauses (corpus, alignment pairs, multi-way set) that are everyday
            clauses in the commands' vocabulary (`EVERYDAY_OBJECTS`); 0 gives the first world's disjoint domains.
        clock_digits: clock times written with digits in every language (`7:15 pm`, only the day half translated)
            instead of each language's number words (the default; see `CLOCK`).
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
    switch_share: float = 0.25
    switch_prob: float = 0.4
    everyday_share: float = 0.5
    clock_digits: bool = False
    voice_share: float = 0.1
    parallel_share: float = 0.03
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
        shares = self.copy_share + self.switch_share + self.voice_share + self.parallel_share
        if not 0 <= shares <= 1:
            raise ConfigError(f"corpus shares must sum to at most 1, got {shares}")

    @classmethod
    def preset(cls, name: Literal["ci", "default"], **overrides) -> WorldConfig:
        """The `ci` (tiny, seconds) or `default` (the demo) configuration, with field overrides."""
        sizes = {
            "ci": dict(corpus_lines=6000, n_train=300, n_dev=30, n_test=50, n_parallel=100, n_multiway=50),
            "default": {},
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
        kinds = {"copy": config.copy_share, "voice": config.voice_share}
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
            clause = _sample_new_clause(world, rng, held_out)
            if kind == "switch":
                lines.append(world.render_clause(clause, code, switch=lambda: rng.random() < config.switch_prob))
            elif kind == "parallel":
                pair = [world.render_clause(clause, code), world.render_clause(clause, PIVOT)]
                rng.shuffle(pair)  # both directions
                lines.append(" | ".join(pair))
            else:
                lines.append(world.render_clause(clause, code))
    rng.shuffle(lines)
    return lines


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
    world = World(config.n_languages, config.seed, config.everyday_share, config.clock_digits)

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
