"""Slot filling: parse generated slot lists, read MASSIVE annotations, score spans, types and intents.

The output format is the paper's: `type: value; type: value`, or `None` when the utterance has no
slot. midalign adds an optional intent prefix, `intent | type: value; ...` (or `intent | None`).

Span F1 follows MASSIVE's official evaluation: the predicted values are matched back onto the
utterance's units (words; characters for languages written without spaces, with runs of ASCII kept
whole as MASSIVE does for code-switched words), turned into BIO tags and read back as entities with
seqeval. Generated values can do what a tagger cannot, so these rules decide how they count:

- placement never depends on the order the slots were written in (`place_slots`): the gold values are
  placed so that as many as possible find free, non-overlapping units (longest first, then leftmost);
  a predicted value equal to a gold value of the same type takes that gold's span, so a value that
  occurs twice or inside another (`five` in `five thirty`, `九点` in `九点半`) is credited with the
  occurrence the gold means; the other predicted values are placed like the gold's. Comparison is
  case-insensitive after Unicode NFKC, and whitespace inside a value is irrelevant;
- a value also occurs inside a word when the rest of the word is joined to it by punctuation or a
  symbol and is no longer than it (`today` in `today's`, `hôtel` in `l'hôtel`, `friday` in `friday.`):
  MASSIVE's annotations can end inside a word (`[date : today]'s`), and MASSIVE's own conversion tags
  the whole word; whole-word occurrences are preferred. A gold value found nowhere else is placed inside
  the word that holds it, even joined by a letter (`[food : pizza]bestellung` tags `pizzabestellung`);
- a predicted value that cannot be placed (not in the utterance, or a duplicate whose every
  occurrence is already taken) is a false positive; a gold value that cannot be placed (possible
  only with hand-written golds) is a false negative; both are counted, not dropped;
- a fragment between `;` that is not `type: value` is a false positive (for span and type F1);
- an empty output predicts nothing, exactly like `None`; only the first line of an output is read.

Span precision = tp / (entities in the predicted tags + unplaced predicted values + malformed
fragments); recall = tp / (gold entities + unplaced gold values). Without unplaced values or
malformed fragments this is exactly seqeval's micro-F1 on the tags (a test pins that).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from seqeval.metrics.sequence_labeling import get_entities

from midalign.errors import DataError
from midalign.evaluation.languages import CHAR_SPLIT_LANGS, base_language
from midalign.evaluation.prf import prf

NONE_OUTPUT = "None"

# `[type : value]`; a type never holds ':' or brackets, a value may hold ':' (`[time : 9:30]`).
_ANNOTATION = re.compile(r"\[([^\[\]:]*):([^\[\]]*)\]")
# Models writing Chinese or Japanese often use the full-width forms of the format's separators.
_FULL_WIDTH_SEPARATORS = str.maketrans({"：": ":", "；": ";", "｜": "|"})
# In character-split languages: a run of printable ASCII is one unit, any other non-space character one.
_CHAR_UNITS = re.compile(r"[!-~]+|\S")


@dataclass(frozen=True)
class SlotFrame:
    """One parsed slot-filling output.

    Attributes:
        intent: the intent before `|`, or None when the output has no intent prefix.
        slots: `(type, value)` pairs in output order, whitespace collapsed, case kept.
        malformed: fragments between `;` that are not `type: value` (each scores as a false positive).
    """

    intent: str | None
    slots: tuple[tuple[str, str], ...]
    malformed: tuple[str, ...] = ()


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _fold(text: str) -> str:
    # NFKC maps full-width ASCII to ASCII, casefold makes "Friday" equal "friday".
    return unicodedata.normalize("NFKC", text).casefold()


def parse_slot_output(text: str) -> SlotFrame:
    """Parse `[intent | ]type: value; type: value` (or `None`) into a `SlotFrame`.

    Only the first non-empty line is read. A `|` starts an intent prefix only when no `:` comes
    before it, so a value such as `9|10` is not mistaken for an intent. The full-width separators
    `：`, `；` and `｜` (common in Chinese and Japanese output) count as `:`, `;` and `|`.

    Args:
        text: a generated output or a gold target.

    Returns:
        The parsed frame; an empty string and `None` (any case) both give no slots.

    Example:
        >>> parse_slot_output("alarm_set | time: nine am; date: friday")
        SlotFrame(intent='alarm_set', slots=(('time', 'nine am'), ('date', 'friday')), malformed=())
    """
    line = text.strip().split("\n", 1)[0].translate(_FULL_WIDTH_SEPARATORS)
    intent = None
    head, bar, rest = line.partition("|")
    if bar and ":" not in head:
        intent, line = _collapse(head) or None, rest
    body = _collapse(line)
    if body.casefold() in ("", NONE_OUTPUT.casefold()):
        return SlotFrame(intent, ())
    slots, malformed = [], []
    for part in body.split(";"):
        if not part.strip():
            continue
        slot_type, colon, value = part.partition(":")
        slot_type, value = _collapse(slot_type), _collapse(value)
        if colon and slot_type and value:
            slots.append((slot_type, value))
        else:
            malformed.append(part.strip())
    return SlotFrame(intent, tuple(slots), tuple(malformed))


def format_slots(slots: Sequence[tuple[str, str]], intent: str | None = None) -> str:
    """Write slots (and an optional intent) in the output format that `parse_slot_output` reads.

    Raises:
        DataError: a type, value or intent holds a character the format cannot carry.

    Example:
        >>> format_slots([("time", "nine am"), ("date", "friday")], intent="alarm_set")
        'alarm_set | time: nine am; date: friday'
    """
    for slot_type, value in slots:
        if re.search(r"[:;|\n]", slot_type) or re.search(r"[;\n]", value) or not (slot_type.strip() and value.strip()):
            raise DataError(f"slot ({slot_type!r}, {value!r}) cannot be written as 'type: value'")
    if intent is not None and re.search(r"[:;|\n]", intent):
        raise DataError(f"intent {intent!r} cannot hold ':', ';', '|' or a newline")
    body = "; ".join(f"{_collapse(t)}: {_collapse(v)}" for t, v in slots) or NONE_OUTPUT
    return f"{intent} | {body}" if intent else body


def parse_annot_utt(annot_utt: str) -> tuple[str, list[tuple[str, str]]]:
    """Read a MASSIVE annotated utterance into the plain utterance and its `(type, value)` slots.

    Raises:
        DataError: unbalanced brackets, or an annotation with an empty type or value.

    Example:
        >>> parse_annot_utt("wake me up at [time : nine am] on [date : friday]")
        ('wake me up at nine am on friday', [('time', 'nine am'), ('date', 'friday')])
    """
    slots = []
    for match in _ANNOTATION.finditer(annot_utt):
        slot_type, value = _collapse(match.group(1)), _collapse(match.group(2))
        if not slot_type or not value:
            raise DataError(f"empty slot type or value in annotation {match.group(0)!r}")
        slots.append((slot_type, value))
    plain = _ANNOTATION.sub(lambda m: _collapse(m.group(2)), annot_utt)
    if "[" in plain or "]" in plain:
        shown = annot_utt if len(annot_utt) <= 200 else annot_utt[:200] + "..."
        raise DataError(f"unbalanced or malformed brackets in annotated utterance {shown!r}")
    return _collapse(plain), slots


def split_units(text: str, *, char_split: bool) -> list[str]:
    """Split text into the units spans are tagged on, normalised for comparison (NFKC, casefold).

    Args:
        text: an utterance or a slot value.
        char_split: one unit per character (runs of ASCII kept whole), for languages without spaces.
    """
    text = _fold(text)
    return _CHAR_UNITS.findall(text) if char_split else text.split()


def _joins(char: str) -> bool:
    # Punctuation or a symbol: the `'` of `today's` and `l'hôtel`, the `.` of `friday.`, the `-` of `e-mail`.
    return unicodedata.category(char)[0] in "PS"


def _holds(unit: str, part: str, at: int) -> bool:
    """Whether `part` sits in `unit` at `at` as the word's main part: what is left on either side is joined to it
    by punctuation or a symbol, and is no longer than `part` (so `s` is not found in `today's`, nor `day` in it)."""
    end = at + len(part)
    if at < 0 or end > len(unit):
        return False
    left_ok = at == 0 or _joins(unit[at - 1])
    right_ok = end == len(unit) or _joins(unit[end])
    return unit[at:end] == part and left_ok and right_ok and len(unit) - len(part) <= len(part)


def _inside(span: Sequence[str], want: Sequence[str], *, anywhere: bool = False) -> bool:
    """Whether the value's units sit in `span` with its outer edges inside the span's first and last unit.

    `anywhere`: at any position of those units, joined to the rest of the word by a letter too (`pizza` in
    `pizzabestellung`); only for a gold value that occurs nowhere else (`place_slots`, `annotated`).
    """
    if list(span[1:-1]) != list(want[1:-1]):
        return False
    first, last, w_first, w_last = span[0], span[-1], want[0], want[-1]
    if anywhere:
        if len(want) == 1:
            return w_first in first
        return first.endswith(w_first) and last.startswith(w_last)
    if len(want) == 1:
        return any(_holds(first, w_first, at) for at in range(len(first) - len(w_first) + 1))
    return _holds(first, w_first, len(first) - len(w_first)) and _holds(last, w_last, 0)


def _occurrences(units: Sequence[str], want: Sequence[str], *, anywhere: bool = False) -> list[int]:
    """Start positions where the unit sequence `want` occurs in `units`: whole units first, then inside them.

    MASSIVE annotations can start or end inside a word (`[date : today]'s`, `l'[place_name : hôtel]`), and
    MASSIVE's own conversion then tags the whole word; so a value also occurs where its first unit ends a unit
    and its last starts one, joined to the rest of those words by punctuation (`_holds`).
    """
    n = len(want)
    if not n:
        return []
    spans = [(s, units[s : s + n]) for s in range(len(units) - n + 1)]
    if anywhere:
        return [s for s, span in spans if list(span) != list(want) and _inside(span, want, anywhere=True)]
    exact = [s for s, span in spans if list(span) == list(want)]
    inside = [s for s, span in spans if list(span) != list(want) and _inside(span, want)]
    return exact + inside


# Slots per utterance are few (MASSIVE: at most 8), so an exhaustive search is cheap; the budget only bounds
# adversarial inputs (many copies of one word), where the search keeps the best assignment found so far.
_SEARCH_BUDGET = 20_000


def _max_placement(
    units: Sequence[str], wants: Sequence[tuple[str, ...]], taken: Sequence[bool], *, anywhere: bool = False
) -> list[int | None]:
    """Non-overlapping starts for as many of `wants` as possible (None = not placed).

    Among the assignments that place the most values, the first in the search order wins: values in the
    given order, each at its leftmost free occurrence first (whole units before inside words). The caller sorts
    the values canonically, so the result does not depend on the order they were written in.
    """
    starts = [_occurrences(units, w, anywhere=anywhere) for w in wants]
    best: list[int | None] = [None] * len(wants)
    best_count, nodes = -1, 0
    current: list[int | None] = []
    free = [not t for t in taken]

    def search(i: int, count: int) -> None:
        nonlocal best, best_count, nodes
        nodes += 1
        if count + (len(wants) - i) <= best_count or nodes > _SEARCH_BUDGET:
            return  # cannot beat the best assignment found (or out of budget)
        if i == len(wants):
            best, best_count = list(current), count
            return
        n = len(wants[i])
        for s in starts[i]:
            if all(free[s : s + n]):
                free[s : s + n] = [False] * n
                current.append(s)
                search(i + 1, count + 1)
                current.pop()
                free[s : s + n] = [True] * n
        current.append(None)
        search(i + 1, count)
        current.pop()

    search(0, 0)
    return best


def place_slots(
    units: Sequence[str],
    slots: Sequence[tuple[str, str]],
    *,
    char_split: bool,
    gold_spans: Mapping[tuple[str, int, int], tuple[str, ...]] | None = None,
    annotated: bool = False,
) -> tuple[list[str], list[tuple[str, str]], dict[tuple[str, int, int], tuple[str, ...]]]:
    """Tag slot values onto the utterance's units; the result does not depend on the order of `slots`.

    A generated `type: value` list says what, not where. So a predicted value equal to a gold value of the same
    type (`gold_spans`, from the gold's own placement) takes that gold's span: when a value occurs twice, or
    inside another value (`five` in `five thirty`, `九点` in `九点半`), or inside a word (`today` in `today's`),
    the model is credited with the occurrence the gold means. The remaining values are placed so that as many
    as possible find free, non-overlapping units (longest values first, leftmost occurrence first among equals,
    whole units before inside words).

    Args:
        units: the utterance's units (from `split_units`).
        slots: `(type, value)` pairs, in any order.
        char_split: how values are split (must match how `units` were made).
        gold_spans: the third value this function returns for the gold; None when placing the gold itself.
        annotated: the slots are the gold, annotated on this utterance: a value that finds no place by the rules
            above is then placed inside a word wherever it occurs (`[food : pizza]bestellung` tags
            `pizzabestellung`, as MASSIVE's conversion tags every word the brackets touch). A second pass, on the
            units left free, so it never displaces a value the rules place.

    Returns:
        `(tags, unplaced, spans)`: BIO tags over `units` (types case-folded), the slots that found no free
        occurrence (in canonical order), and each placed value's `(type, start, end)` span (end inclusive, as
        `seqeval.get_entities` gives) mapped to its units.
    """
    tags = ["O"] * len(units)
    spans: dict[tuple[str, int, int], tuple[str, ...]] = {}

    def tag(label: str, start: int, want: tuple[str, ...]) -> None:
        n = len(want)
        tags[start : start + n] = [f"B-{label}"] + [f"I-{label}"] * (n - 1)
        spans[(label, start, start + n - 1)] = want

    # Canonical order: longest value first, then by type and text; never the order the model wrote them in.
    keyed = sorted(
        ((_fold(t), tuple(split_units(v, char_split=char_split)), (t, v)) for t, v in slots),
        key=lambda k: (-len(k[1]), k[0], k[1], k[2]),
    )
    golds = sorted((gold_spans or {}).items(), key=lambda item: item[0][1])
    rest = []
    for label, want, slot in keyed:
        match = next((g for (g, g_want) in golds if g[0] == label and g_want == want and tags[g[1]] == "O"), None)
        if match and want:
            tag(label, match[1], want)
        else:
            rest.append((label, want, slot))
    unplaced = rest
    for anywhere in (False, True) if annotated else (False,):
        starts = _max_placement(units, [w for _, w, _ in unplaced], [t != "O" for t in tags], anywhere=anywhere)
        left = []
        for (label, want, slot), start in zip(unplaced, starts, strict=True):
            if start is None:
                left.append((label, want, slot))
            else:
                tag(label, start, want)
        unplaced = left
    return tags, [slot for _, _, slot in unplaced], spans


def _slot_multiset(frame: SlotFrame, char_split: bool) -> Counter:
    return Counter((_fold(t), tuple(split_units(v, char_split=char_split))) for t, v in frame.slots)


def _gold_frames(golds: Sequence[str]) -> list[SlotFrame]:
    frames = [parse_slot_output(g) for g in golds]
    for i, frame in enumerate(frames):
        if frame.malformed:
            raise DataError(f"gold #{i} has malformed slot fragment(s) {list(frame.malformed)}: {golds[i]!r}")
    with_intent = [f.intent is not None for f in frames]
    if any(with_intent) and not all(with_intent):
        i = with_intent.index(False)
        raise DataError(f"gold #{i} has no intent prefix while other golds have one: {golds[i]!r}")
    return frames


def score_slots(
    predictions: Sequence[str],
    golds: Sequence[str],
    utterances: Sequence[str],
    *,
    lang: str,
    char_langs: Collection[str] = CHAR_SPLIT_LANGS,
) -> dict[str, float | int]:
    """Score slot-filling outputs of one language (see the module docstring for the exact rules).

    Args:
        predictions: generated outputs, `[intent | ]type: value; ...` or `None`.
        golds: gold targets in the same format; they must parse cleanly.
        utterances: the text the values are matched onto, one per example.
        lang: language tag; its base language decides whether units are characters.
        char_langs: base languages split into characters (MASSIVE: ja, zh).

    Returns:
        Percentages in [0, 100]: `slot_precision`, `slot_recall`, `slot_f1` (spans),
        `slot_type_precision`, `slot_type_recall`, `slot_type_f1` (multisets of types, values
        ignored), `exact_match` (the multiset of (type, value) equals the gold's; intent not
        included), `intent_acc` (only when the golds carry intents; a missing predicted intent is
        wrong); and counts: `n`, `slot_tp`, `slot_pred`, `slot_gold`, `slot_unplaced_pred`,
        `slot_unplaced_gold`, `malformed`.

    Raises:
        DataError: the three sequences differ in length, or a gold is malformed.
    """
    if not len(predictions) == len(golds) == len(utterances):
        raise DataError(
            f"{len(predictions)} predictions, {len(golds)} golds and {len(utterances)} utterances differ in count"
        )
    char_split = base_language(lang) in {base_language(c) for c in char_langs}
    gold_frames = _gold_frames(golds)
    span = Counter()
    types = Counter()
    exact = intent_hits = 0
    for prediction, gold, utterance in zip(predictions, gold_frames, utterances, strict=True):
        pred = parse_slot_output(prediction)
        units = split_units(utterance, char_split=char_split)
        gold_tags, gold_unplaced, gold_spans = place_slots(units, gold.slots, char_split=char_split, annotated=True)
        gold_entities = set(get_entities(gold_tags))
        pred_tags, pred_unplaced, _ = place_slots(units, pred.slots, char_split=char_split, gold_spans=gold_spans)
        pred_entities = set(get_entities(pred_tags))
        span["tp"] += len(gold_entities & pred_entities)
        span["pred"] += len(pred_entities) + len(pred_unplaced) + len(pred.malformed)
        span["gold"] += len(gold_entities) + len(gold_unplaced)
        span["unplaced_pred"] += len(pred_unplaced)
        span["unplaced_gold"] += len(gold_unplaced)
        span["malformed"] += len(pred.malformed)

        pred_types = Counter(_fold(t) for t, _ in pred.slots)
        gold_types = Counter(_fold(t) for t, _ in gold.slots)
        types["tp"] += sum((pred_types & gold_types).values())
        types["pred"] += pred_types.total() + len(pred.malformed)
        types["gold"] += gold_types.total()
        exact += not pred.malformed and _slot_multiset(pred, char_split) == _slot_multiset(gold, char_split)
        if gold.intent is not None:
            intent_hits += pred.intent is not None and _fold(pred.intent) == _fold(gold.intent)

    n = len(predictions)
    slot_p, slot_r, slot_f = prf(span["tp"], span["pred"], span["gold"])
    type_p, type_r, type_f = prf(types["tp"], types["pred"], types["gold"])
    scores: dict[str, float | int] = {
        "n": n,
        "slot_precision": slot_p,
        "slot_recall": slot_r,
        "slot_f1": slot_f,
        "slot_type_precision": type_p,
        "slot_type_recall": type_r,
        "slot_type_f1": type_f,
        "exact_match": 100 * exact / n if n else 0.0,
    }
    if gold_frames and gold_frames[0].intent is not None:
        scores["intent_acc"] = 100 * intent_hits / n
    scores.update(
        slot_tp=span["tp"],
        slot_pred=span["pred"],
        slot_gold=span["gold"],
        slot_unplaced_pred=span["unplaced_pred"],
        slot_unplaced_gold=span["unplaced_gold"],
        malformed=span["malformed"],
    )
    return scores
