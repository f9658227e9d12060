"""Slot-filling scorer: parsing, MASSIVE annotations, span / type F1, exact match, intents."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from seqeval.metrics import f1_score

from midalign.errors import DataError
from midalign.evaluation.slots import (
    SlotFrame,
    format_slots,
    parse_annot_utt,
    parse_slot_output,
    place_slots,
    score_slots,
    split_units,
)

UTT = "wake me up at nine am on friday"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time: nine am; date: friday", SlotFrame(None, (("time", "nine am"), ("date", "friday")))),
        ("None", SlotFrame(None, ())),
        ("  none \n", SlotFrame(None, ())),
        ("", SlotFrame(None, ())),
        ("   time :  nine   am ;  date:friday ; ", SlotFrame(None, (("time", "nine am"), ("date", "friday")))),
        ("alarm_set | time: nine am", SlotFrame("alarm_set", (("time", "nine am"),))),
        ("alarm_set | None", SlotFrame("alarm_set", ())),
        ("time: 9:30", SlotFrame(None, (("time", "9:30"),))),
        ("time: 9|10", SlotFrame(None, (("time", "9|10"),))),
        ("time: nine am\ndate: friday", SlotFrame(None, (("time", "nine am"),))),
        ("play music; time: nine", SlotFrame(None, (("time", "nine"),), ("play music",))),
        ("time: ; : friday", SlotFrame(None, (), ("time:", ": friday"))),
        ("时间: 早上九点", SlotFrame(None, (("时间", "早上九点"),))),
        ("闹钟 ｜ 时间：早上九点；日期：星期五", SlotFrame("闹钟", (("时间", "早上九点"), ("日期", "星期五")))),
    ],
)
def test_parse_slot_output(text, expected):
    assert parse_slot_output(text) == expected


def test_format_slots_round_trips_and_refuses_what_the_format_cannot_hold():
    slots = [("time", "nine am"), ("date", "friday")]
    assert format_slots(slots) == "time: nine am; date: friday"
    assert format_slots([]) == "None"
    assert format_slots([], intent="play_music") == "play_music | None"
    text = format_slots(slots, intent="alarm_set")
    assert parse_slot_output(text) == SlotFrame("alarm_set", tuple(slots))
    for bad_slots, intent in (
        ([("time", "a; b")], None),
        ([("ti:me", "a")], None),
        ([("t", " ")], None),
        ([("t", "a")], "x|y"),
    ):
        with pytest.raises(DataError):
            format_slots(bad_slots, intent=intent)


def test_parse_annot_utt():
    assert parse_annot_utt("wake me up at [time : nine am] on [date : friday]") == (
        UTT,
        [("time", "nine am"), ("date", "friday")],
    )
    assert parse_annot_utt("[date : 星期五] [time : 早上九点]叫醒我") == (
        "星期五 早上九点叫醒我",
        [("date", "星期五"), ("time", "早上九点")],
    )
    assert parse_annot_utt("at [time : 9:30]") == ("at 9:30", [("time", "9:30")])
    assert parse_annot_utt("play some music") == ("play some music", [])
    for bad in ("wake me [time : nine am", "wake me [time  nine am]", "at [time : ]", "x ] y"):
        with pytest.raises(DataError):
            parse_annot_utt(bad)


def test_split_units_words_and_characters():
    assert split_units("Wake  ME up", char_split=False) == ["wake", "me", "up"]
    # ASCII runs stay whole in character-split text (MASSIVE keeps code-switched words together);
    # NFKC turns full-width letters into ASCII first.
    assert split_units("用iPhone 打电话", char_split=True) == ["用", "iphone", "打", "电", "话"]
    assert split_units("用ｉＰｈｏｎｅ", char_split=True) == ["用", "iphone"]


def test_place_slots_fills_free_occurrences_and_reports_the_rest():
    units = split_units("nine or nine", char_split=False)
    tags, unplaced, _ = place_slots(units, [("time", "nine"), ("time", "nine"), ("time", "nine")], char_split=False)
    assert tags == ["B-time", "O", "B-time"]
    assert unplaced == [("time", "nine")]
    # Two overlapping values: one is placed, the same one whichever order they were written in.
    for slots in ([("time", "Nine or"), ("date", "or nine")], [("date", "or nine"), ("time", "Nine or")]):
        tags, unplaced, _ = place_slots(units, slots, char_split=False)
        assert tags == ["O", "B-date", "I-date"]
        assert unplaced == [("time", "Nine or")]


def test_place_slots_places_as_many_values_as_fit():
    # First-free placement in written order would put `a b` on units 0-1 and leave `b c` nowhere.
    units = split_units("a b c a b", char_split=False)
    tags, unplaced, _ = place_slots(units, [("x", "a b"), ("y", "b c")], char_split=False)
    assert unplaced == []
    assert tags == ["O", "B-y", "I-y", "B-x", "I-x"]


def scores(predictions, golds, utterances=None, lang="en", **kwargs):
    utterances = utterances if utterances is not None else [UTT] * len(predictions)
    return score_slots(predictions, golds, utterances, lang=lang, **kwargs)


def test_perfect_and_all_none():
    s = scores(["time: nine am; date: friday"], ["time: nine am; date: friday"])
    assert (s["slot_f1"], s["slot_type_f1"], s["exact_match"]) == (100.0, 100.0, 100.0)
    s = scores(["None", ""], ["None", "None"])  # nothing to find, nothing claimed: perfect, not undefined
    assert (s["slot_precision"], s["slot_recall"], s["slot_f1"], s["exact_match"]) == (100.0, 100.0, 100.0, 100.0)
    assert "intent_acc" not in s


def test_empty_output_misses_everything_and_spurious_slots_score_zero():
    s = scores([""], ["time: nine am"])
    assert (s["slot_precision"], s["slot_recall"], s["slot_f1"], s["exact_match"]) == (0.0, 0.0, 0.0, 0.0)
    s = scores(["time: nine am"], ["None"])
    assert (s["slot_precision"], s["slot_recall"], s["slot_f1"]) == (0.0, 0.0, 0.0)


def test_hallucinated_value_is_a_false_positive_not_dropped():
    s = scores(["time: nine am; date: monday"], ["time: nine am"])
    assert (s["slot_tp"], s["slot_pred"], s["slot_gold"], s["slot_unplaced_pred"]) == (1, 2, 1, 1)
    assert s["slot_precision"] == 50.0 and s["slot_recall"] == 100.0
    assert s["slot_f1"] == pytest.approx(200 / 3)
    assert s["exact_match"] == 0.0


def test_duplicated_slot_counts_once_as_hit_and_once_as_false_positive():
    s = scores(["time: nine am; time: nine am"], ["time: nine am"])
    assert (s["slot_tp"], s["slot_pred"], s["slot_unplaced_pred"]) == (1, 2, 1)
    assert s["slot_precision"] == 50.0
    assert (s["slot_type_precision"], s["slot_type_recall"]) == (50.0, 100.0)
    assert s["exact_match"] == 0.0


def test_type_f1_credits_the_right_type_with_a_wrong_value():
    s = scores(["time: nine; date: nine am"], ["time: nine am; date: friday"])
    assert s["slot_f1"] == 0.0
    assert s["slot_type_f1"] == 100.0


def test_case_whitespace_and_full_width_do_not_matter():
    s = scores(
        ["TIME:  Nine   AM ; date: ＦＲＩＤＡＹ"], ["time: nine am; date: friday"], ["Wake me up at nine  am on Friday"]
    )
    assert (s["slot_f1"], s["exact_match"]) == (100.0, 100.0)


def test_malformed_fragment_is_a_false_positive():
    s = scores(["time: nine am; I think friday"], ["time: nine am"])
    assert (s["slot_pred"], s["malformed"], s["slot_precision"]) == (2, 1, 50.0)
    assert s["slot_type_precision"] == 50.0
    assert s["exact_match"] == 0.0


def test_gold_value_missing_from_the_utterance_is_a_false_negative():
    s = scores(["time: nine am"], ["time: nine am; date: tomorrow"])
    assert (s["slot_gold"], s["slot_unplaced_gold"], s["slot_recall"]) == (2, 1, 50.0)


@pytest.mark.parametrize(
    ("annot_utt", "tagged_word"),
    [
        ("what is [date : today]'s weather", "today's"),
        ("wake me up on [date : friday].", "friday."),
        ("emmène-moi à l'[place_name : hôtel de ville]", "l'hôtel"),
        ("rappelle-moi [date : demain]-matin", "demain-matin"),
        ("ich will eine [food : pizza]bestellung", "pizzabestellung"),
        ("mach das [device : küchen]licht an", "küchenlicht"),
    ],
)
def test_an_annotation_inside_a_word_tags_the_word_as_massive_does(annot_utt, tagged_word):
    # MASSIVE's own conversion (alexa/massive, create_hf_dataset.py) labels every whitespace token the brackets
    # touch; a gold value that ends inside a word used to be unplaced, so a perfect prediction scored 0.
    utterance, gold_slots = parse_annot_utt(annot_utt)
    gold = format_slots(gold_slots)
    units = split_units(utterance, char_split=False)
    tags, unplaced, _ = place_slots(units, gold_slots, char_split=False, annotated=True)
    assert unplaced == [] and tags[units.index(tagged_word)].startswith("B-")
    s = scores([gold], [gold], [utterance])
    assert (s["slot_f1"], s["slot_unplaced_gold"], s["slot_unplaced_pred"]) == (100.0, 0, 0)
    # The whole word, as a tagger would mark it, is the same span.
    whole = format_slots([(gold_slots[0][0], " ".join(utterance.split()[units.index(tagged_word) :][:1]))])
    if len(gold_slots[0][1].split()) == 1:
        assert scores([whole], [gold], [utterance])["slot_f1"] == 100.0


def test_a_part_of_a_word_is_not_a_value():
    utterance = "what is today's weather"
    for part in ("day", "s", "today'"):  # not the word's main part, or not joined to the rest by punctuation
        s = scores([f"date: {part}"], ["date: today"], [utterance])
        assert (s["slot_tp"], s["slot_unplaced_pred"]) == (0, 1), part
    # A gold found only inside a word (an annotation that cuts it at a letter) takes that word, but only in a
    # second pass: it never takes a word from a value the rules place, and a prediction of the part is not it.
    units = split_units("pizzabestellung und pizza", char_split=False)
    tags, unplaced, _ = place_slots(units, [("food", "pizza"), ("x", "pizza")], char_split=False, annotated=True)
    assert (tags, unplaced) == (["B-x", "O", "B-food"], [])
    tags, unplaced, _ = place_slots(units[:1], [("food", "pizza")], char_split=False)
    assert (tags, unplaced) == (["O"], [("food", "pizza")])  # a prediction: only whole words and the rules
    s = scores(["food: bestellung"], ["food: pizza"], ["eine pizzabestellung"])
    assert (s["slot_tp"], s["slot_unplaced_pred"], s["slot_unplaced_gold"]) == (0, 1, 0)
    # A whole-word occurrence is preferred to one inside a word, for golds and predictions alike.
    tags, _, _ = place_slots(
        split_units("today's plan for today", char_split=False), [("date", "today")], char_split=False
    )
    assert tags == ["O", "O", "O", "B-date"]


_WORDS = ["alarm", "kitchen", "friday", "music", "tomorrow", "lights", "london", "seven", "coffee", "jazz"]


# What a word can carry outside the brackets: clitics joined by punctuation, and (German compounds) letters.
_AFFIXES = [("", ""), ("", "'s"), ("", "."), ("l'", ""), ("d'", ""), ("", ","), ("", "zeit"), ("ur", "")]


@settings(max_examples=150, deadline=None)
@given(
    st.permutations(_WORDS),
    st.lists(st.sampled_from(_AFFIXES), min_size=10, max_size=10),
    st.lists(st.tuples(st.integers(0, 9), st.integers(1, 3)), max_size=3),
)
def test_gold_tags_equal_massive_token_labels(words, affixes, picks):
    """Brackets around the word parts of an utterance whose words carry clitics or compound parts: the gold's
    tags must be the labels MASSIVE gives each whitespace token (every token the brackets touch)."""
    pres = [pre for pre, _ in affixes]
    posts = [post for _, post in affixes]
    full = [pre + word + post for pre, word, post in zip(pres, words, posts, strict=False)]
    spans, taken = [], set()
    for start, n in sorted(picks):
        cells = set(range(start, min(start + n, len(full))))
        if not cells & taken:
            taken |= cells
            spans.append((start, max(cells)))
    tokens, labels, k = [], [], 0
    for a, b in spans:
        tokens += full[k:a]
        labels += ["O"] * (a - k)
        text = " ".join(full[a : b + 1])
        value = text[len(pres[a]) : len(text) - len(posts[b])]  # the brackets hold the words, not their clitics
        tokens.append(f"{pres[a]}[t : {value}]{posts[b]}")
        labels += ["B-t"] + ["I-t"] * (b - a)
        k = b + 1
    tokens += full[k:]
    labels += ["O"] * (len(full) - k)
    utterance, gold_slots = parse_annot_utt(" ".join(tokens))
    units = split_units(utterance, char_split=False)
    tags, unplaced, _ = place_slots(units, gold_slots, char_split=False, annotated=True)
    assert unplaced == []
    assert tags == labels
    gold = format_slots(gold_slots)
    assert scores([gold], [gold], [utterance])["slot_f1"] == 100.0


@pytest.mark.parametrize(
    ("utterance", "lang", "long", "short"),
    [
        ("set an alarm for five thirty and another for five", "en", "five thirty", "five"),
        ("九点半和九点叫醒我", "zh-CN", "九点半", "九点"),
        ("九時半と九時に起こして", "ja-JP", "九時半", "九時"),
    ],
)
def test_a_value_inside_another_scores_the_same_in_any_order(utterance, lang, long, short):
    gold_orders = [f"time: {long}; time: {short}", f"time: {short}; time: {long}"]
    for gold in gold_orders:
        for prediction in gold_orders:
            s = scores([prediction], [gold], [utterance], lang=lang)
            assert (s["slot_f1"], s["exact_match"], s["slot_unplaced_gold"]) == (100.0, 100.0, 0)
        for alone in (short, long):  # one of two gold values, the right one: P 100, R 50
            s = scores([f"time: {alone}"], [gold], [utterance], lang=lang)
            assert (s["slot_tp"], s["slot_precision"], s["slot_recall"]) == (1, 100.0, 50.0)
            assert s["slot_f1"] == pytest.approx(200 / 3)


def test_characters_for_chinese_and_japanese_words_elsewhere():
    utt = ["星期五早上九点叫醒我"]
    s = scores(["date: 星期五; time: 早上 九点"], ["date: 星期五; time: 早上九点"], utt, lang="zh-CN")
    assert s["slot_f1"] == 100.0
    s = scores(["time: 九点叫醒"], ["time: 早上九点"], utt, lang="zh-CN")
    assert (s["slot_f1"], s["slot_unplaced_pred"]) == (0.0, 0)  # placed, but on the wrong span
    s = scores(["time: 早上九点"], ["time: 早上九点"], ["明日の早上九点に"], lang="ja-JP")
    assert s["slot_f1"] == 100.0
    # As a space-separated language the whole utterance is one word, so no value can be placed.
    s = scores(["time: 早上九点"], ["None"], utt, lang="en")
    assert s["slot_unplaced_pred"] == 1


def test_char_langs_option_adds_languages_split_into_characters():
    # Split on spaces, the utterance is one word: the gold takes it whole (as MASSIVE tags a word its brackets
    # touch), so a second value finds no place; split into characters both do.
    utt, gold = ["ปลุกฉันพรุ่งนี้ตอนเก้าโมง"], ["date: พรุ่งนี้; time: เก้าโมง"]
    s = scores(gold, gold, utt, lang="th-TH")
    assert (s["slot_unplaced_gold"], s["slot_unplaced_pred"]) == (1, 1)
    assert scores(gold, gold, utt, lang="th-TH", char_langs={"th"})["slot_f1"] == 100.0


def test_intent_accuracy_when_golds_carry_intents():
    golds = ["alarm_set | time: nine am", "play_music | None", "alarm_set | None"]
    s = scores(["Alarm_Set | time: nine am", "time: nine am", "alarm_query | None"], golds)
    assert s["intent_acc"] == pytest.approx(100 / 3)  # missing intent and wrong intent both count as wrong
    assert s["exact_match"] == pytest.approx(200 / 3)  # exact match is about slots only
    assert "intent_acc" not in scores(["alarm_set | None"], ["None"])


def test_bad_inputs_raise_data_errors():
    with pytest.raises(DataError, match="differ in count"):
        score_slots(["None"], ["None", "None"], [UTT], lang="en")
    with pytest.raises(DataError, match="gold #1 has malformed"):
        scores(["None", "None"], ["None", "time nine am"])
    with pytest.raises(DataError, match="gold #1 has no intent"):
        scores(["None", "None"], ["alarm_set | None", "None"])


def _spans(draw, n_words):
    cuts = sorted(draw(st.sets(st.integers(0, n_words), max_size=6)))
    spans = [(a, b) for a, b in itertools.pairwise(cuts) if draw(st.booleans())]
    return [(draw(st.sampled_from(["time", "date", "place name"])), a, b) for a, b in spans]


@st.composite
def slot_cases(draw):
    words = draw(st.lists(st.sampled_from(["a", "b", "c", "nine", "am"]), min_size=1, max_size=8))
    gold = _spans(draw, len(words))
    pred = _spans(draw, len(words))
    return words, gold, pred


@settings(max_examples=150, deadline=None)
@given(st.lists(slot_cases(), min_size=1, max_size=4))
def test_equals_seqeval_micro_f1_when_every_value_is_placed(cases):
    utterances, golds, preds, gold_tags, pred_tags = [], [], [], [], []
    for words, gold, pred in cases:
        gold_slots = [(t, " ".join(words[a:b])) for t, a, b in gold]
        pred_slots = [(t, " ".join(words[a:b])) for t, a, b in pred]
        units = split_units(" ".join(words), char_split=False)
        g_tags, g_unplaced, g_spans = place_slots(units, gold_slots, char_split=False)
        p_tags, p_unplaced, _ = place_slots(units, pred_slots, char_split=False, gold_spans=g_spans)
        assume(not g_unplaced and not p_unplaced)
        utterances.append(" ".join(words))
        golds.append(format_slots(gold_slots))
        preds.append(format_slots(pred_slots))
        gold_tags.append(g_tags)
        pred_tags.append(p_tags)
    assume(any(t != "O" for tags in gold_tags + pred_tags for t in tags))  # seqeval is undefined without entities
    ours = score_slots(preds, golds, utterances, lang="en")["slot_f1"]
    assert ours == pytest.approx(100 * f1_score(gold_tags, pred_tags))


def _occurrences(units, value):
    n = len(value)
    return [i for i in range(len(units) - n + 1) if units[i : i + n] == value]


def _brute_force_tp(units, gold, pred):
    """Most true positives over every placement of the predicted values (a value may also stay unplaced),
    against the gold placed the same exhaustive way (as many gold values as fit): the best a tagger that
    wrote these values could have been credited with."""

    def assignments(slots):
        options = [[None, *_occurrences(units, v.split())] for _, v in slots]
        for starts in itertools.product(*options):
            placed = [(t, s, s + len(v.split())) for (t, v), s in zip(slots, starts, strict=True) if s is not None]
            cells = [c for _, a, b in placed for c in range(a, b)]
            if len(cells) == len(set(cells)):  # no two values share a unit
                yield set(placed)

    gold_max = max(len(a) for a in assignments(gold))
    gold_placements = [a for a in assignments(gold) if len(a) == gold_max]
    # Ties between maximal gold placements are resolved by the scorer's canonical rule; the brute force
    # accepts any of them, so both bounds are checked.
    best = [max(len(g & p) for p in assignments(pred)) for g in gold_placements]
    return min(best), max(best), gold_max


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "five", "thirty"]), min_size=1, max_size=7),
    st.lists(st.tuples(st.sampled_from(["t", "d"]), st.integers(0, 6), st.integers(1, 3)), max_size=3),
    st.lists(st.tuples(st.sampled_from(["t", "d"]), st.integers(0, 6), st.integers(1, 3)), max_size=3),
    st.randoms(use_true_random=False),
)
def test_span_scores_are_order_free_and_as_good_as_the_best_placement(words, gold_spans, pred_spans, rng):
    def slots(spans):
        return [(t, " ".join(words[a : a + n])) for t, a, n in spans if a + n <= len(words)]

    gold, pred = slots(gold_spans), slots(pred_spans)
    utterance = " ".join(words)
    s = scores([format_slots(pred)], [format_slots(gold)], [utterance])
    for _ in range(3):  # any order of either list gives the same counts
        shuffled_gold, shuffled_pred = rng.sample(gold, len(gold)), rng.sample(pred, len(pred))
        t = scores([format_slots(shuffled_pred)], [format_slots(shuffled_gold)], [utterance])
        assert (t["slot_tp"], t["slot_pred"], t["slot_gold"]) == (s["slot_tp"], s["slot_pred"], s["slot_gold"])
    low, high, gold_placed = _brute_force_tp(words, gold, pred)
    assert low <= s["slot_tp"] <= high
    assert s["slot_gold"] - s["slot_unplaced_gold"] == gold_placed
