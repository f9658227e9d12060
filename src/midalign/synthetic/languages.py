"""The languages of the world: typology (`LANGUAGE_TABLE`), and each language's lexicon, morphology and script."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from midalign.synthetic.scripts import CONSONANTS, VOWELS, Phonology, Script, transliterate
from midalign.synthetic.words import CONCEPTS, RELATIONS

PIVOT = "en"


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
