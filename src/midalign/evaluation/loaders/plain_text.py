"""Translation examples from plain text, one sentence per line (WMT, FLORES-101/200)."""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from midalign.data.readers import iter_lines
from midalign.errors import ConfigError, DataError
from midalign.evaluation.languages import language_name
from midalign.files import check_name


def translation_system_prompt(src_lang: str, tgt_lang: str) -> str:
    """The system prompt for one direction, as in the paper's scripts: "Translate ... from X to Y."."""
    return f"Translate the following sentences from {language_name(src_lang)} to {language_name(tgt_lang)}."


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """`["de-en", "deu_Latn-eng_Latn"]` -> `[("de", "en"), ("deu_Latn", "eng_Latn")]`.

    Raises:
        ConfigError: a pair is not exactly `SRC-TGT` (codes themselves cannot contain `-`), or is given twice (its
            examples would be loaded twice, and predictions aligned by position would shift onto the wrong ones).
    """
    parsed = []
    for pair in pairs:
        if list(pairs).count(pair) > 1:
            raise ConfigError(f"language pair {pair!r} is given twice; give each pair once")
        parts = pair.split("-")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"language pair {pair!r} must be SRC-TGT, e.g. de-en or deu_Latn-eng_Latn")
        parsed.append((check_name(parts[0], "language code"), check_name(parts[1], "language code")))
    return parsed


def load_parallel_text(
    source_path: str | os.PathLike, reference_path: str | os.PathLike, *, src_lang: str, tgt_lang: str
) -> list[dict[str, Any]]:
    """Translation examples from two aligned plain-text files, one sentence per line (WMT/FLORES style).

    `lang` is the direction `src-tgt`; the system prompt is `translation_system_prompt`.

    Raises:
        DataError: missing files, different line counts, empty lines, invalid UTF-8, unknown languages.
    """
    system_prompt = translation_system_prompt(src_lang, tgt_lang)
    sources = [text for _, text in iter_lines(source_path)]
    references = [text for _, text in iter_lines(reference_path)]
    if len(sources) != len(references):
        raise DataError(
            f"{len(references)} reference lines but the source {source_path} has {len(sources)}",
            path=str(reference_path),
            line=min(len(sources), len(references)) + 1,
        )
    examples = []
    for number, (source, reference) in enumerate(zip(sources, references, strict=True), start=1):
        for text, file in ((source, source_path), (reference, reference_path)):
            if not text.strip():
                raise DataError("empty line", path=str(file), line=number)
        examples.append(
            {
                "id": f"{src_lang}-{tgt_lang}:{number}",
                "lang": f"{src_lang}-{tgt_lang}",
                "src_lang": src_lang,
                "tgt_lang": tgt_lang,
                "source": source,
                "prompt": source,
                "system_prompt": system_prompt,
                "gold": reference,
            }
        )
    if not examples:
        raise DataError("no sentences", path=str(source_path))
    return examples


def load_text_pairs(pattern: str, pairs: Sequence[str]) -> list[dict[str, Any]]:
    """Translation examples for several directions from files named by a pattern.

    Args:
        pattern: a path with `{lang}` (the file's language) and optionally `{src}` / `{tgt}`, e.g.
            `wmt23/{src}{tgt}/test.{src}-{tgt}.{lang}`: the source file is the pattern with
            `lang=src`, the reference with `lang=tgt`.
        pairs: directions such as `de-en`.

    Raises:
        ConfigError: the pattern lacks `{lang}` or has other placeholders; a malformed pair.
        DataError: as `load_parallel_text`.
    """
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(pattern) if name]
    except ValueError as e:  # an unmatched brace
        raise ConfigError(f"pattern {pattern!r}: {e}") from None
    if any(name not in ("lang", "src", "tgt") or spec or conversion for name, spec, conversion in fields):
        raise ConfigError(f"pattern {pattern!r} may only use {{lang}}, {{src}} and {{tgt}}")
    if "lang" not in {name for name, _, _ in fields}:
        raise ConfigError(f"pattern {pattern!r} must contain {{lang}}")
    examples = []
    for src, tgt in parse_pairs(pairs):
        source_path = pattern.format(lang=src, src=src, tgt=tgt)
        reference_path = pattern.format(lang=tgt, src=src, tgt=tgt)
        examples += load_parallel_text(source_path, reference_path, src_lang=src, tgt_lang=tgt)
    return examples


def load_flores(root: str | os.PathLike, pairs: Sequence[str], *, split: str = "devtest") -> list[dict[str, Any]]:
    """Translation examples from a FLORES-101/200 folder: `<root>/<split>/<code>.<split>`.

    Args:
        root: the unpacked dataset folder (holding `dev/` and `devtest/`).
        pairs: directions in the folder's codes, e.g. `deu_Latn-eng_Latn`.
        split: `dev` or `devtest`.
    """
    return load_text_pairs(str(Path(root) / split / f"{{lang}}.{split}"), pairs)
