"""Sounds and scripts: how a romanised word is spelt in Latin, Cyrillic, Greek, Hangul or Devanagari."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

# Non-English words are strings of syllables consonant + vowel (+ "n"), written in Latin ("romanised") and then
# transliterated syllable by syllable, so every script can spell every word and every name.

CONSONANTS = "ptkbdgmnslrvzh"
VOWELS = "aeiou"
_SYLLABLE = re.compile(f"([{CONSONANTS}])([{VOWELS}])(n(?![{VOWELS}]))?")
Script = Literal["latin", "cyrillic", "greek", "hangul", "devanagari"]
SCRIPTS: tuple[Script, ...] = ("latin", "cyrillic", "greek", "hangul", "devanagari")
# Letter by letter; the letters after the syllables' ones spell cognates of English words (`languages.cognate`).
_LETTERS = {
    "cyrillic": dict(zip(CONSONANTS + VOWELS + "cfjqwxy", "пткбдгмнслрвзхаеиоуцфйкввы", strict=True)),
    # Final-sigma is not used: a syllable word ends in a vowel or "n".
    "greek": dict(zip(CONSONANTS + VOWELS + "cfjqwxy", "πτκβδγμνσλρφζχαειουκφικβξυ", strict=True)),
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
