"""The languages of the world: typology (`LANGUAGE_TABLE`), and each language's lexicon, morphology and script."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from midalign.synthetic.scripts import CONSONANTS, VOWELS, Phonology, Script, transliterate
from midalign.synthetic.words import CONCEPTS, RELATIONS

PIVOT = "en"
# A close relative's cognates: how many of `SOUND_CHANGES` and of `VOWEL_SHIFTS` (`WorldConfig.close_changes`).
CLOSE_CHANGES = (4, 3)


Family = Literal["pivot", "close", "middle", "distant"]


@dataclass(frozen=True)
class LanguageSpec:
    """The typology of one language: how meanings are ordered and written, and how much text it has.

    `family` says how far the language is from English, `resource` how much text it has: the two are independent
    axes of `LANGUAGE_TABLE`, so that their effects can be read apart.
    """

    code: str
    family: Family
    script: Script
    word_order: Literal["SVO", "SOV", "VSO"]
    adjective_first: bool  # "big dog" rather than "dog big"
    prepositions: bool  # "in garden" rather than "garden in"
    article: Literal["before", "after", "none"]  # a definite article word before or after its noun phrase
    resource: float  # relative share of the pretraining corpus

    @property
    def cognates(self) -> float:
        """The share of concepts whose word descends from the English word (by `SOUND_CHANGES`)."""
        return {"pivot": 1.0, "close": 1.0, "middle": 0.5, "distant": 0.0}[self.family]

    @property
    def sound_changes(self) -> tuple[int, int]:
        """How many of `SOUND_CHANGES` and of `VOWEL_SHIFTS` turn an English word into its cognate."""
        return {"pivot": (0, 0), "close": CLOSE_CHANGES, "middle": (7, 3), "distant": (0, 0)}[self.family]


# English first. Each family has a well- and a poorly-resourced member, so that distance and resource level can be
# read apart; families are interleaved so that any prefix of the table (`n_languages`) mixes them.
# - close relatives (like Dutch or Frisian to English): Latin script, English order, every word a cognate made
#   by a few regular sound changes, so most subwords are shared;
# - middle-distance (like Romance or Slavic languages): Latin script, half the words cognates made by more
#   changes, the rest their own, other morphology and other adjective, article or verb order;
# - distant (like Korean, Hindi, Greek): own script, own lexicon, other order.
LANGUAGE_TABLE: tuple[LanguageSpec, ...] = (
    LanguageSpec("en", "pivot", "latin", "SVO", True, True, "before", 3.0),
    LanguageSpec("xa", "close", "latin", "SVO", True, True, "before", 1.5),
    LanguageSpec("xb", "middle", "latin", "SVO", False, True, "after", 1.5),
    LanguageSpec("xc", "distant", "hangul", "SOV", True, False, "none", 1.5),
    LanguageSpec("xd", "close", "latin", "SVO", True, True, "none", 0.4),
    LanguageSpec("xe", "middle", "latin", "SOV", True, False, "none", 0.4),
    LanguageSpec("xf", "distant", "devanagari", "SOV", False, False, "after", 0.4),
    LanguageSpec("xg", "distant", "greek", "VSO", False, True, "before", 0.8),
    LanguageSpec("xh", "close", "latin", "SVO", True, True, "before", 0.8),
    LanguageSpec("xi", "middle", "cyrillic", "VSO", False, True, "none", 0.8),
)

# Regular sound changes, as between related languages (English "ship", Dutch "schip"; "think", "denken"). A
# language applies a seeded subset of them, always in this order (digraphs before their letters), to each English
# word, then a seeded subset of `VOWEL_SHIFTS`: four and three for a close relative, seven and three for a
# middle-distance language. The consonant changes alone left 64-89% of a close relative's words spelt as in
# English; the vowel shifts, which touch most words, bring that to about a third.
SOUND_CHANGES: tuple[tuple[str, str], ...] = (
    (r"th", "d"),
    (r"sh", "sch"),
    (r"ch", "k"),
    (r"ck", "k"),
    (r"ph", "f"),
    (r"qu", "kw"),
    (r"c(?=[eiy])", "s"),
    (r"c", "k"),
    (r"w", "v"),
    (r"ee", "ie"),
    (r"oo", "u"),
    (r"ou", "au"),
    (r"ea", "e"),
    (r"y$", "ie"),
    (r"x", "ks"),
    (r"^s(?=[ptk])", "sch"),
    (r"d$", "t"),
    (r"g$", "ch"),
    (r"o(?=[^aeiou]$)", "u"),
    (r"i(?=[^aeiou]e?$)", "ei"),
    (r"a(?=[^aeiou]$)", "aa"),
    (r"^t", "z"),
    (r"e$", "a"),
    (r"([^aeiouy])$", r"\1e"),
)
# A single vowel (no vowel next to it) shifts; the results hold two vowels, so no shift feeds another.
VOWEL_SHIFTS: tuple[tuple[str, str], ...] = (
    (r"(?<![aeiouy])a(?![aeiouy])", "ae"),
    (r"(?<![aeiouy])e(?![aeiouy])", "ie"),
    (r"(?<![aeiouy])i(?![aeiouy])", "y"),
    (r"(?<![aeiouy])o(?![aeiouy])", "oa"),
    (r"(?<![aeiouy])u(?![aeiouy])", "oe"),
)
# Inflections of the cognate languages: Latin-script suffixes, as in Germanic and Romance languages.
_PLURALS = ("en", "er", "es", "a", "i")
_PASTS = ("de", "te", "et", "ta", "iv")


def cognate(english: str, changes: tuple[tuple[str, str], ...]) -> str:
    """The word that descends from `english` (a concept, "_" between words) by `changes`, applied word by word.

    Example:
        >>> cognate("teacher", ((r"ch", "k"), (r"^t", "z")))
        'zeaker'
    """
    words = []
    for word in english.split("_"):
        for pattern, replacement in changes:
            word = re.sub(pattern, replacement, word)
        words.append(word)
    return " ".join(words)


def _english_suffix(word: str, es: str, ies: str, default: str) -> str:
    # The regular English rules for plural / third person ("es", "ies", "s") and past tense ("ed", "ied", "d").
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + es
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + ies
    if word.endswith("e") and default == "ed":
        return word + "d"
    return word + default


def _unused(word: str, taken: set[str]) -> str:
    # Two English words can change into the same cognate ("sea", "see"); a final vowel keeps them apart.
    for ending in ("", "e", "a", "o", "i", "u", "en", "er"):
        if word + ending not in taken:
            return word + ending
    raise RuntimeError(f"no unused form of the cognate {word!r}")


def _inflect(word: str, suffix: str, *, last: bool) -> str:
    # A multi-word phrase takes the suffix on its head: the last word of a noun, the first of a verb ("turn off").
    words = word.split(" ")
    index = -1 if last else 0
    words[index] += suffix
    return " ".join(words)


class Language:
    """One language of the world: lexicon, morphology and script (English for the pivot).

    The lexicon is drawn from a generator seeded once per language (seeding per draw repeats the same syllables).
    """

    def __init__(self, spec: LanguageSpec, seed: int, close_changes: tuple[int, int] | None = None):
        # `close_changes` replaces a close relative's (consonant changes, vowel shifts) of `spec.sound_changes`.
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
        consonants, vowels = close_changes if close_changes and spec.family == "close" else spec.sound_changes
        changes = tuple(
            pool[i]
            for pool, k in ((SOUND_CHANGES, consonants), (VOWEL_SHIFTS, vowels))
            for i in sorted(rng.sample(range(len(pool)), k))
        )
        taken: set[str] = set()
        for concept in CONCEPTS:
            if spec.cognates and rng.random() < spec.cognates:
                word = _unused(cognate(concept, changes), taken)
            else:
                # A function word is one syllable; content words are one to three.
                word = self._own_word(phonology, rng, taken, 1 if concept in RELATIONS else None)
            taken.add(word)
            self.lexicon[concept] = word
        if spec.cognates:  # Latin-script suffixes and (close relatives) the cognate of "the"
            self.plural_suffix, self.past_suffix = rng.choice(_PLURALS), rng.choice(_PASTS)
            article = cognate("the", changes) if spec.family == "close" else phonology.word(rng, 1)
            self.article_word = _unused(article, taken)
        else:
            self.plural_suffix, self.past_suffix, self.article_word = (
                self._own_word(phonology, rng, taken, 1) for _ in range(3)
            )

    def _own_word(self, phonology: Phonology, rng: random.Random, taken: set[str], syllables: int | None) -> str:
        for _ in range(1000):
            word = phonology.word(rng, syllables or rng.choices((1, 2, 3), weights=(2, 5, 3))[0])
            if word not in taken:
                taken.add(word)
                return word
        # bounded on purpose: an exhausted sound inventory must fail loudly, not loop
        raise RuntimeError(f"language {self.code}: no unused word left")

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
        return self.spell(_inflect(self.lexicon[concept], self.plural_suffix if plural else "", last=True))

    def verb(self, concept: str, past: bool, plural_subject: bool) -> str:
        """A finite verb; only English agrees with its subject (present tense, third person)."""
        if self.code == PIVOT:
            head, _, rest = concept.partition("_")  # a phrasal verb inflects its first word: "turns off"
            if past:
                head = _english_suffix(head, "ed", "ied", "ed")
            elif not plural_subject:
                head = _english_suffix(head, "es", "ies", "s")
            return f"{head} {rest.replace('_', ' ')}" if rest else head
        return self.spell(_inflect(self.lexicon[concept], self.past_suffix if past else "", last=False))

    def article(self) -> str | None:
        """The definite article, or None when the language has none."""
        if self.spec.article == "none":
            return None
        return "the" if self.code == PIVOT else self.spell(self.article_word)
