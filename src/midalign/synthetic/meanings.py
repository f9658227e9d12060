"""Meanings and the `World` that samples them and renders them in each language.

A general-domain `Clause` (pretraining text, parallel data) or a voice-assistant `Command` (the task) is drawn
once and written in every language, so renderings in different languages are translations of each other.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from midalign.errors import ConfigError
from midalign.evaluation.slots import format_slots
from midalign.synthetic.languages import LANGUAGE_TABLE, PIVOT, Language
from midalign.synthetic.scripts import Phonology
from midalign.synthetic.words import (
    ADJECTIVES,
    DATES,
    DAY_HALVES,
    ENTITY_COUNTS,
    ENTITY_SLOTS,
    EVERYDAY_OBJECTS,
    HOURS,
    HUMANS,
    INTENTS,
    MINUTES,
    NOUNS,
    PLACES,
    RELATIONS,
    ROOMS,
    VERBS,
    WORD_SLOTS,
)


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

    def __init__(
        self,
        n_languages: int = 8,
        seed: int = 0,
        everyday_share: float = 0.0,
        close_changes: tuple[int, int] | None = None,
    ):
        if not 2 <= n_languages <= len(LANGUAGE_TABLE):
            raise ConfigError(f"n_languages must be within 2..{len(LANGUAGE_TABLE)}, got {n_languages}")
        self.seed = seed
        self.everyday_share = everyday_share
        self.languages = {spec.code: Language(spec, seed, close_changes) for spec in LANGUAGE_TABLE[:n_languages]}
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
                phrase = [lex().word(atom) for atom in atoms]  # a time is spelt out: `nine thirty am`
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
        words = [self.entity(a, lang) if a.startswith("@") else self.languages[lang].word(a) for a in atoms]
        return " ".join(words), slot
