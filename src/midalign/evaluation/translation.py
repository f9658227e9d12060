"""Machine translation: sacreBLEU BLEU and chrF++ with the target language's tokenizer; optional COMET."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sacrebleu.metrics import BLEU, CHRF

from midalign.errors import ConfigError, DataError
from midalign.evaluation.languages import base_language, script

# The paper's COMET model, pinned so that scores stay comparable across runs.
COMET_MODEL = "Unbabel/wmt22-comet-da"

# Scripts written without spaces between words (Thai, Lao, Khmer, Burmese, Tibetan): 13a would score whole
# sentences as single words.
_CHAR_BLEU_SCRIPTS = frozenset({"Thai", "Laoo", "Khmr", "Mymr", "Tibt"})
_HAN = frozenset({"Hans", "Hant", "Hani"})


@functools.cache
def bleu_tokenizer(lang: str) -> tuple[str, str | None]:
    """The sacreBLEU tokenizer for a target language, and a note when it is a fallback.

    Chosen by the tag's script (`midalign.evaluation.languages.script`): Chinese characters (zh, yue, ...) ->
    `zh`; Japanese -> `ja-mecab` and Korean -> `ko-mecab` when their extras are installed, otherwise `char` with a
    note; Thai, Lao, Khmer, Burmese and Tibetan -> `char`; everything else -> `13a` (sacreBLEU's default).

    Example:
        >>> bleu_tokenizer("de")
        ('13a', None)
    """
    base, writing = base_language(lang), script(lang)
    if writing in _HAN:
        return "zh", None
    if base in ("ja", "ko"):
        name = f"{base}-mecab"
        try:
            BLEU(tokenize=name)  # instantiating the tokenizer is what loads MeCab
        except (ImportError, RuntimeError):
            note = f"{name} is not installed (pip install 'sacrebleu[{base}]'), BLEU falls back to 'char'"
            return "char", note
        return name, None
    if writing in _CHAR_BLEU_SCRIPTS:
        return "char", f"{lang} is written without spaces between words ({writing}), BLEU uses 'char'"
    return "13a", None


def score_translation(
    hypotheses: Sequence[str],
    references: Sequence[str],
    *,
    tgt_lang: str,
    sources: Sequence[str] | None = None,
    comet: bool = False,
) -> dict[str, float | int | str]:
    """Corpus BLEU and chrF++ (chrF with word bigrams, `word_order=2`) of one translation direction.

    Hypotheses are stripped of surrounding whitespace; nothing else is cut.

    Args:
        hypotheses: system outputs.
        references: one reference per hypothesis.
        tgt_lang: target language tag; it picks the BLEU tokenizer (see `bleu_tokenizer`).
        sources: source sentences, needed only for COMET.
        comet: also score with COMET (`COMET_MODEL`; needs `pip install 'midalign[comet]'`).

    Returns:
        `n`, `bleu`, `chrf` (0-100), `bleu_signature`, `chrf_signature`, `note` when the BLEU
        tokenizer is a fallback, and `comet` (x100) when asked.

    Raises:
        DataError: counts differ, or COMET is asked for without sources.
        ConfigError: COMET is asked for but not installed.
    """
    if len(hypotheses) != len(references):
        raise DataError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    hyps = [h.strip() for h in hypotheses]
    tokenize, note = bleu_tokenizer(tgt_lang)
    bleu, chrf = BLEU(tokenize=tokenize), CHRF(word_order=2)
    scores: dict[str, float | int | str] = {
        "n": len(hyps),
        "bleu": bleu.corpus_score(hyps, [list(references)]).score,
        "chrf": chrf.corpus_score(hyps, [list(references)]).score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }
    if note:
        scores["note"] = note
    if comet:
        if sources is None or len(sources) != len(hyps):
            raise DataError("COMET needs one source sentence per hypothesis")
        scores["comet"] = score_comet(sources, hyps, references)
    return scores


@functools.cache
def _comet_model():
    try:
        from comet import download_model, load_from_checkpoint
    except ImportError as e:
        raise ConfigError("COMET is an optional extra: pip install 'midalign[comet]'") from e
    return load_from_checkpoint(download_model(COMET_MODEL))


def score_comet(
    sources: Sequence[str], hypotheses: Sequence[str], references: Sequence[str], *, batch_size: int = 16
) -> float:
    """System-level COMET (`COMET_MODEL`) x100; the model is loaded once per process.

    Raises:
        DataError: the three sequences differ in length.
        ConfigError: the `unbabel-comet` package is not installed.
    """
    import torch

    if not len(sources) == len(hypotheses) == len(references):
        raise DataError(f"{len(sources)} sources, {len(hypotheses)} hypotheses and {len(references)} references")
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(sources, hypotheses, references, strict=True)]
    gpus = 1 if torch.cuda.is_available() else 0
    output = _comet_model().predict(data, batch_size=batch_size, gpus=gpus, progress_bar=False)
    return 100 * float(output.system_score)
