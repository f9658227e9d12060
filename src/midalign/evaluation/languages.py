"""Language codes: the base language of a tag, English names for prompts, MASSIVE's locales.

Tags come in three spellings in the evaluation data: ISO 639-1 (`de`), MASSIVE locales (`de-DE`)
and FLORES-200 codes (`deu_Latn`). Scorers only need the base language (to pick a BLEU tokenizer
or to split an utterance into characters), and prompts need an English name.
"""

from __future__ import annotations

from midalign.errors import DataError

# iso639-1, FLORES-200 / ISO 639-3 codes (the first is FLORES'), English name.
_LANGUAGES = """
af afr Afrikaans|am amh Amharic|ar arb,ara Arabic|az azj,aze Azerbaijani|be bel Belarusian|bg bul Bulgarian
bn ben Bengali|ca cat Catalan|cs ces Czech|cy cym Welsh|da dan Danish|de deu German|el ell Greek
en eng English|es spa Spanish|et est Estonian|eu eus Basque|fa pes,fas Persian|fi fin Finnish|fr fra French
ga gle Irish|gl glg Galician|gu guj Gujarati|ha hau Hausa|he heb Hebrew|hi hin Hindi|hr hrv Croatian
hu hun Hungarian|hy hye Armenian|id ind Indonesian|is isl Icelandic|it ita Italian|ja jpn Japanese
jv jav Javanese|ka kat Georgian|kk kaz Kazakh|km khm Khmer|kn kan Kannada|ko kor Korean|ky kir Kyrgyz
lo lao Lao|lt lit Lithuanian|lv lvs,lav Latvian|mk mkd Macedonian|ml mal Malayalam|mn khk,mon Mongolian
mr mar Marathi|ms zsm,msa Malay|mt mlt Maltese|my mya Burmese|nb nob Norwegian|ne npi,nep Nepali
nl nld Dutch|pa pan Punjabi|pl pol Polish|ps pbt,pus Pashto|pt por Portuguese|ro ron Romanian
ru rus Russian|sk slk Slovak|sl slv Slovenian|so som Somali|sq als,sqi Albanian|sr srp Serbian
sv swe Swedish|sw swh,swa Swahili|ta tam Tamil|te tel Telugu|th tha Thai|tl tgl Tagalog|tr tur Turkish
uk ukr Ukrainian|ur urd Urdu|uz uzn,uzb Uzbek|vi vie Vietnamese|yo yor Yoruba|zh zho,cmn Chinese|zu zul Zulu
"""

LANGUAGE_NAMES: dict[str, str] = {}
_ISO3_TO_ISO1: dict[str, str] = {}
for _entry in _LANGUAGES.replace("\n", "|").split("|"):
    if _entry.strip():
        _iso1, _iso3s, _name = _entry.split(maxsplit=2)
        LANGUAGE_NAMES[_iso1] = _name
        _ISO3_TO_ISO1.update(dict.fromkeys(_iso3s.split(","), _iso1))

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
    """The lower-case base language of a tag: `de-DE` -> `de`, `zho_Hans` -> `zh`, `xx` -> `xx`.

    Unknown codes are returned lower-cased as they are; `language_name` is where unknown codes fail.
    """
    head = tag.replace("_", "-").split("-")[0].lower()
    return _ISO3_TO_ISO1.get(head, head)


def language_name(tag: str) -> str:
    """English name of a language tag, for prompts such as "Translate from German to English".

    Raises:
        DataError: the base language is not in the table (the message lists the known codes).
    """
    base = base_language(tag)
    if base not in LANGUAGE_NAMES:
        raise DataError(f"unknown language {tag!r}; known base languages: {', '.join(sorted(LANGUAGE_NAMES))}")
    return LANGUAGE_NAMES[base]
