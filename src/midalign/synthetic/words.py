"""The meaning layer's word tables: concepts (named by their English word), slot values and command templates.

Every language of the world renders these concepts; `CONCEPTS` fixes the order in which lexicons are drawn.
"""

from __future__ import annotations

# Concepts are named by their English word ("_" stands for a space in multi-word English phrases).

NOUNS = (
    "dog", "cat", "bird", "horse", "farmer", "teacher", "student", "baker", "doctor", "girl", "boy", "sailor",
    "painter", "house", "book", "apple", "boat", "letter", "tree", "stone", "cup", "door", "window", "basket",
    "bread", "flower", "chair", "box", "rope", "coin", "lamp", "hat", "cake", "wagon", "bell", "drum", "map",
    "key", "shoe", "coat", "bottle", "candle", "plate", "ring", "ball", "kite", "blanket", "fox", "goat", "owl",
)  # fmt: skip
VERBS = (
    "watch", "like", "visit", "paint", "clean", "follow", "open", "carry", "want", "help", "push", "pull",
    "wash", "cook", "kick", "lift", "touch", "need", "fix", "count", "guard", "love", "hate", "borrow", "fill",
    "greet", "climb", "enjoy", "fetch", "hide",
)  # fmt: skip
ADJECTIVES = (
    "big", "small", "red", "blue", "green", "old", "young", "happy", "tall", "quiet", "heavy", "bright", "dark",
    "warm", "cold", "clever", "lazy", "brave", "round", "soft", "strong", "tiny", "yellow", "white", "black", "sad",
)  # fmt: skip
PLACES = (
    "garden", "river", "market", "forest", "school", "village", "bridge", "harbor", "hill", "castle", "field",
    "lake", "farm", "tower", "valley",
)  # fmt: skip
RELATIONS = ("in", "near", "behind", "under")
HUMANS = ("farmer", "teacher", "student", "baker", "doctor", "girl", "boy", "sailor", "painter")

# Slot values that are ordinary words (translated in each language, as in MASSIVE).
GENRES = ("jazz", "rock", "pop", "blues", "classical", "folk", "metal", "reggae", "techno", "country")
FOODS = ("pizza", "sushi", "soup", "noodles", "burger", "salad", "curry", "tacos", "dumplings", "pancakes")
ROOMS = ("kitchen", "bedroom", "bathroom", "garage", "office", "living_room", "hallway", "basement")
EVENTS = (
    "meeting", "party", "dentist_appointment", "lunch", "concert", "wedding", "yoga_class", "interview",
    "birthday_dinner",
)  # fmt: skip
DATES = ("today", "tomorrow", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
HOURS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
MINUTES = ("fifteen", "thirty", "forty_five")
DAY_HALVES = ("am", "pm")
WORD_SLOTS = {"genre": GENRES, "food": FOODS, "room": ROOMS, "event": EVENTS, "date": DATES}
ENTITY_SLOTS = ("city", "person", "song", "artist", "restaurant")
# Everyday clauses (`WorldConfig.everyday_share`): general-domain sentences about people doing everyday things, which
# use the words the voice-assistant commands use (verbs, objects, rooms, cities, persons, times, dates) in the
# general grammar: `the baker ordered soup in the kitchen at nine am`. In real languages the general text that
# parallel data and pretraining corpora are made of shares its everyday vocabulary with assistant commands; without
# these clauses the two domains of this world had disjoint vocabularies, and nothing linked a command word in one
# language to its English translation. Each verb takes one of its typical objects.
EVERYDAY_OBJECTS: dict[str, tuple[str, ...]] = {
    "play": (*GENRES, "music", "song"),
    "order": FOODS,
    "buy": ("ticket", *FOODS),
    "send": ("email", "letter"),
    "set": ("alarm",),
    "tell": ("joke", "weather"),
    "say": ("something", "joke"),
    "add": EVENTS,
    "remind": HUMANS,
    "wake": HUMANS,
    "turn_off": ("lights", "lamp"),
}
ENTITY_COUNTS = {"city": 40, "person": 60, "song": 40, "artist": 40, "restaurant": 30}
SLOT_TYPES = ("time", "date", "city", "person", "song", "artist", "genre", "food", "restaurant", "room", "event")

# Each intent has command templates: (verb, arguments). An argument is "[?][adposition]:unit unit ...": a leading
# "?" makes it optional, the adposition goes before or after the phrase by language, and a unit is a concept
# or a `{slot}`. Commands are imperatives, so there is no subject: SVO and VSO put the verb first, SOV last.
INTENTS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "alarm_set": (("wake", (":me", "at:{time}", "?:{date}")), ("set", (":alarm", "for:{time}", "?on:{date}"))),
    "weather_query": (("tell", (":me", ":weather", "in:{city}", "?:{date}")),),
    "play_music": (
        ("play", (":song {song}", "?by:{artist}")), ("play", (":{genre} music",)), ("play", (":music", "by:{artist}"))
    ),
    "calendar_set": (
        ("remind", (":me", "about:{event}", "?with:{person}", "?on:{date}", "?at:{time}")),
        ("add", (":{event}", "on:{date}", "?at:{time}")),
    ),
    "takeaway_order": (("order", (":{food}", "?from:{restaurant}")),),
    "iot_hue_lightoff": (("turn_off", (":lights", "in:{room}")),),
    "transport_ticket": (("buy", (":ticket", "to:{city}", "?for:{date}", "?at:{time}")),),
    "email_sendemail": (("send", (":email", "to:{person}", "?about:{event}")),),
    "general_joke": (("tell", (":me", ":joke")), ("say", (":something", ":funny"))),
}  # fmt: skip


def _template_words() -> tuple[str, ...]:
    words = []
    for templates in INTENTS.values():
        for verb, args in templates:
            words.append(verb)
            for arg in args:
                adposition, _, units = arg.lstrip("?").partition(":")
                words += [adposition] if adposition else []
                words += [u for u in units.split() if not u.startswith("{")]
    return tuple(words)


# Every concept once, in a fixed order (lexicons are drawn in this order, so it fixes every language's words).
CONCEPTS: tuple[str, ...] = tuple(
    dict.fromkeys(
        (*NOUNS, *VERBS, *ADJECTIVES, *PLACES, *RELATIONS, "please", *_template_words(), *GENRES, *FOODS, *ROOMS,
         *EVENTS, *DATES, *HOURS, *MINUTES, *DAY_HALVES)
    )
)  # fmt: skip
