"""English vocabulary and sentence templates for the synthetic corpus.

Every slot vocabulary is later split into train and held-out entries (see ``sentences.py``);
templates receive one entry per slot plus a random generator for numbers and dates.
"""

from __future__ import annotations

import random

from num2words import num2words


def words(n: int) -> str:
    """23 -> 'twenty three' (no hyphens, so references tokenise the same way everywhere)."""
    return num2words(n, lang="en").replace("-", " ").replace(",", "")


def ordinal(n: int) -> str:
    return num2words(n, lang="en", to="ordinal").replace("-", " ")


WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]

VOCAB: dict[str, list[dict]] = {
    "name": [{"w": w} for w in (
        "Oliver Emma James Sophia Liam Olivia Noah Ava Lucas Mia Henry Grace Jack Chloe Samuel "
        "Lily Daniel Zoe Thomas Ella George Ruby Arthur Alice Oscar Clara Leo Hannah Isaac Nora "
        "Felix Julia Victor Helen Peter Laura Martin Sarah Edward Rachel").split()],
    "city": [{"w": w} for w in (
        "Paris London Berlin Madrid Boston Denver Chicago Dallas Seattle Toronto Dublin Vienna "
        "Prague Lisbon Oslo Helsinki Warsaw Athens Cairo Tokyo Sydney Melbourne Houston Phoenix "
        "Atlanta Detroit Portland Miami Glasgow Bristol Leeds Cardiff").split()],
    "obj": [{"w": w} for w in (
        "lamp chair table kettle umbrella bicycle laptop camera guitar violin mirror blanket "
        "pillow sweater jacket backpack teapot carpet sofa painting vase bucket ladder hammer "
        "wardrobe toaster radio helmet notebook basket clock candle").split()],
    "verb": [{"base": b, "past": p} for b, p in (
        ("buy", "bought"), ("find", "found"), ("sell", "sold"), ("repair", "repaired"),
        ("order", "ordered"), ("lose", "lost"), ("paint", "painted"), ("clean", "cleaned"),
        ("borrow", "borrowed"), ("hide", "hid"), ("choose", "chose"), ("wrap", "wrapped"),
        ("break", "broke"), ("forget", "forgot"), ("deliver", "delivered"), ("carry", "carried"))],
    "go": [{"base": b, "past": p} for b, p in (
        ("go", "went"), ("drive", "drove"), ("fly", "flew"), ("travel", "travelled"),
        ("walk", "walked"), ("cycle", "cycled"), ("move", "moved"), ("hurry", "hurried"),
        ("sail", "sailed"), ("return", "returned"), ("run", "ran"), ("commute", "commuted"))],
    "room": [{"w": w} for w in (
        "kitchen office garage bedroom basement hallway library workshop attic classroom "
        "storeroom garden").split()],
    "place": [{"sg": s, "pl": p} for s, p in (
        ("museum", "museums"), ("theatre", "theatres"), ("school", "schools"),
        ("hospital", "hospitals"), ("park", "parks"), ("bridge", "bridges"),
        ("stadium", "stadiums"), ("hotel", "hotels"), ("pharmacy", "pharmacies"),
        ("station", "stations"), ("market", "markets"), ("fountain", "fountains"),
        ("church", "churches"), ("square", "squares"), ("factory", "factories"),
        ("bakery", "bakeries"))],
}


def _date(r: random.Random) -> str:
    return f"the {ordinal(r.randint(1, 28))} of {r.choice(MONTHS)}"


def _time(r: random.Random) -> str:
    minute = r.choice(["o'clock", "fifteen", "thirty", "forty five", "ten", "twenty"])
    return f"{words(r.randint(1, 12))} {minute}"


def _places(n: int, place: dict) -> str:
    return f"is {words(n)} {place['sg']}" if n == 1 else f"are {words(n)} {place['pl']}"


# (id, slots, render). Slots map a name in the template to a vocabulary key.
TEMPLATES = [
    ("en_buy", {"a": "name", "v": "verb", "o": "obj"},
     lambda s, r: f"{s['a']['w']} {s['v']['past']} the {s['o']['w']} on {r.choice(WEEKDAYS)}."),
    ("en_travel", {"a": "name", "g": "go", "c": "city"},
     lambda s, r: f"On {r.choice(WEEKDAYS)}, {s['a']['w']} {s['g']['past']} to {s['c']['w']}."),
    ("en_count", {"p": "place", "c": "city"},
     lambda s, r: f"There {_places(r.randint(1, 99), s['p'])} in {s['c']['w']} now."),
    ("en_call", {"a": "name", "b": "name"},
     lambda s, r: f"{s['a']['w']} called {s['b']['w']} on {_date(r)}."),
    ("en_why", {"a": "name", "g": "go", "c": "city"},
     lambda s, r: f"Why did {s['a']['w']} {s['g']['base']} to {s['c']['w']} on {r.choice(WEEKDAYS)}?"),
    ("en_train", {},
     lambda s, r: f"Train number {words(r.randint(2, 999))} leaves at {_time(r)}."),
    ("en_bring", {"a": "name", "o": "obj", "m": "room"},
     lambda s, r: f"{s['a']['w']}, please bring the {s['o']['w']} to the {s['m']['w']}."),
    ("en_price_q", {"o": "obj", "c": "city"},
     lambda s, r: f"How much does the {s['o']['w']} cost in {s['c']['w']}?"),
    ("en_weather", {"c": "city"},
     lambda s, r: f"On {_date(r)}, it was {words(r.randint(2, 39))} degrees in {s['c']['w']}."),
    ("en_if", {"a": "name", "o": "obj", "g": "go", "c": "city"},
     lambda s, r: (f"If {s['a']['w']} does not find the {s['o']['w']}, we will {s['g']['base']} "
                   f"to {s['c']['w']} on {r.choice(WEEKDAYS)}.")),
    ("en_meet", {"a": "name", "c": "city"},
     lambda s, r: f"We met {s['a']['w']} in {s['c']['w']} last {r.choice(WEEKDAYS)}."),
    ("en_said", {"a": "name", "o": "obj"},
     lambda s, r: f"{s['a']['w']} said that the {s['o']['w']} costs {words(r.randint(2, 999))} dollars."),
    ("en_did", {"a": "name", "v": "verb", "o": "obj", "m": "room"},
     lambda s, r: f"Did {s['a']['w']} {s['v']['base']} the {s['o']['w']} in the {s['m']['w']}?"),
    ("en_pair", {"a": "name", "b": "name", "g": "go", "c": "city"},
     lambda s, r: f"Yesterday {s['a']['w']} and {s['b']['w']} {s['g']['past']} to {s['c']['w']}."),
    ("en_when", {"a": "name", "g": "go", "c": "city"},
     lambda s, r: (f"When {s['a']['w']} {s['g']['past']} to {s['c']['w']}, it was already "
                   f"{words(r.randint(5, 11))} in the evening.")),
    ("en_relative", {"a": "name", "v": "verb", "o": "obj", "m": "room"},
     lambda s, r: f"The {s['o']['w']} that {s['a']['w']} {s['v']['past']} is in the {s['m']['w']}."),
]

# Instruction prompts for the text-only pool.
PROMPTS = {
    "repeat": "Repeat the sentence: {s}",
    "number": "Write the number in words: {n}",
    "where": "Answer the question. {fact} Where did {name} {go}?",
    "count": "How many words are in this sentence? {s}",
    "city": "Which city is mentioned in the sentence? {s}",
}


def where_question(s: dict) -> tuple[str, str]:
    """Verb for 'Where did <name> <verb>?' about an en_travel sentence, and the short answer."""
    return s["g"]["base"], f"To {s['c']['w']}."


def city_answer(city: dict) -> str:
    return f"{city['w']}."
