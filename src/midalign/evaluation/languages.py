"""Language codes: the base language and script of a tag, English names for prompts, MASSIVE's locales.

Tags come in three spellings in the evaluation data: ISO 639-1 (`de`), MASSIVE locales (`de-DE`)
and FLORES-200 codes (`deu_Latn`, `quy_Latn`, `yue_Hant`). They are read with `langcodes` (its CLDR and
IANA data), so every FLORES-200 code has a name, a base language and a script without a table of ours:
individual languages fold into their macrolanguage where CLDR does (`arb` -> `ar`, `cmn` -> `zh`, `pes` -> `fa`),
and a tag without a script gets its language's likely script (`ja` -> `Jpan`).
"""

from __future__ import annotations

import functools

import langcodes

from midalign.errors import DataError


@functools.cache
def _standard(tag: str) -> langcodes.Language | None:
    """The standardised tag (`zho_Hans` -> `zh-Hans`), or None for what is not a language tag."""
    try:
        return langcodes.Language.get(langcodes.standardize_tag(tag.replace("_", "-"), macro=True))
    except (langcodes.tag_parser.LanguageTagError, ValueError):
        return None


MASSIVE_LOCALES: tuple[str, ...] = (
    "af-ZA", "am-ET", "ar-SA", "az-AZ", "bn-BD", "cy-GB", "da-DK", "de-DE", "el-GR", "en-US", "es-ES",
    "fa-IR", "fi-FI", "fr-FR", "he-IL", "hi-IN", "hu-HU", "hy-AM", "id-ID", "is-IS", "it-IT", "ja-JP",
    "jv-ID", "ka-GE", "km-KH", "kn-IN", "ko-KR", "lv-LV", "ml-IN", "mn-MN", "ms-MY", "my-MM", "nb-NO",
    "nl-NL", "pl-PL", "pt-PT", "ro-RO", "ru-RU", "sl-SL", "sq-AL", "sv-SE", "sw-KE", "ta-IN", "te-IN",
    "th-TH", "tl-PH", "tr-TR", "ur-PK", "vi-VN", "zh-CN", "zh-TW",
)  # fmt: skip

# MASSIVE's official evaluation splits exactly these into characters (its `char_split_locales`).
CHAR_SPLIT_LANGS: frozenset[str] = frozenset({"ja", "zh"})


def base_language(tag: str) -> str:
    """The lower-case base language of a tag: `de-DE` -> `de`, `zho_Hans` -> `zh`, `arb_Arab` -> `ar`, `xx` -> `xx`.

    Unknown codes are returned lower-cased as they are; `language_name` is where unknown codes fail.
    """
    language = _standard(tag)
    if language is None or language.language is None:
        return tag.replace("_", "-").split("-")[0].lower()
    return language.language


def script(tag: str) -> str | None:
    """The ISO 15924 script of a tag, its own or its language's likely one: `yue_Hant` -> `Hant`, `ja` -> `Jpan`.

    None for a code `langcodes` does not know (the synthetic world's `xa`, ...).
    """
    language = _standard(tag)
    if language is None or not language.is_valid():
        return None
    return language.maximize().script


def language_name(tag: str) -> str:
    """English name of a language tag, for prompts such as "Translate from German to English".

    The name of the base language (`arb_Arab` -> "Arabic", `quy_Latn` -> "Ayacucho Quechua").

    Raises:
        DataError: `langcodes` does not know the language (an invented or misspelt code).
    """
    language = _standard(tag)
    if language is None or language.language is None or not language.is_valid():
        raise DataError(f"unknown language {tag!r}: not an ISO 639 / BCP 47 / FLORES-200 code that langcodes knows")
    name = langcodes.Language.get(language.language).language_name("en")
    if name.startswith("Unknown language"):
        raise DataError(f"unknown language {tag!r}: langcodes has no English name for it")
    return name
