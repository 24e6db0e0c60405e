"""What users say to a voice agent, generated from templates and word lists (seeded).

The end-of-turn model must learn the shapes where a pause does not mean "done": a list in
progress, a phone number read in groups, a trailing "and...", a restart after "um". So every
utterance says whether it is ``complete`` as written; the incomplete ones end where a real
speaker would pause and go on. Backchannels ("mm-hmm", "yeah") are a separate small set for
the barge-in tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

DIGITS = "zero one two three four five six seven eight nine".split()
FIRST = ("John Mary Ahmed Priya Carlos Mei Olivia Liam Fatima Noah Emma Lucas Sofia Ethan "
         "Aisha Daniel Grace Kenji Maria David Sarah Omar Chloe Ivan Nina Peter Rosa Tom Julia "
         "Sam").split()
LAST = ("Smith Garcia Patel Nguyen Johnson Brown Kim Martinez Lee Wilson Anderson Taylor Thomas "
        "Moore Jackson White Harris Clark Lewis Walker Young King Wright Lopez Hill Green").split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = ("January February March April May June July August September October November "
          "December").split()
ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
            "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
            "twentieth").split() + ["twenty first", "twenty second", "twenty third",
                                    "twenty fifth", "twenty eighth", "thirtieth"]
COUNTS = "one two three four five six seven eight ten twelve".split()
HOURS = "one two three four five six seven eight nine ten eleven twelve".split()
MINUTES = ["", "", " fifteen", " thirty", " forty five", " o'clock", " twenty", " ten"]
GROCERIES = ["eggs", "milk", "bread", "butter", "apples", "bananas", "rice", "coffee", "tea",
             "cheese", "chicken", "onions", "tomatoes", "pasta", "yogurt", "cereal", "carrots",
             "potatoes", "lettuce", "orange juice", "peanut butter", "dish soap",
             "paper towels"]
PLACES = ["pharmacy", "bank", "post office", "library", "dentist", "gym", "restaurant", "hotel",
          "airport", "station", "museum", "bakery", "hospital", "clinic", "supermarket", "cinema"]
DEVICES = ["lights", "heating", "air conditioning", "TV", "radio", "fan", "oven", "alarm",
           "music", "kitchen lights", "porch light"]
TASKS = ["call my mother", "take the medicine", "pick up the kids", "pay the rent",
         "buy a birthday card", "water the plants", "send the report", "book a doctor's visit",
         "check the mail", "renew my passport", "feed the cat", "charge my phone"]
WHENS = ["tomorrow morning", "tonight", "in an hour", "at noon", "next week", "on Friday",
         "after lunch", "in twenty minutes", "this evening", "before I leave"]
CITIES = ["Boston", "Chicago", "Denver", "Seattle", "London", "Paris", "Toronto", "Dallas",
          "Miami", "Berlin", "Madrid", "Atlanta", "Phoenix", "Dublin", "Sydney", "Tokyo"]
MUSIC = ["some jazz", "the news", "something relaxing", "my workout playlist", "the Beatles",
         "classical music", "the radio", "some country music", "rock", "a podcast"]
ITEMS = ["the blue jacket", "a large pizza", "two tickets", "the monthly plan", "a room",
         "this phone", "the shipping", "a haircut", "the repair", "a taxi to the airport"]
PROBLEMS = ["my internet is down", "my card was declined", "the package never arrived",
            "I was charged twice", "I can't log in", "the app keeps crashing",
            "my order is wrong", "the heater stopped working", "I lost my keys",
            "the printer won't print"]
FILLERS = ["um", "uh", "er", "you know", "like", "so", "well", "hmm"]
TRAILERS = ["and", "but", "so", "because", "or", "and then", "and um", "but uh", "which"]
BACKCHANNELS = ["mm-hmm", "uh-huh", "yeah", "yes", "right", "okay", "sure", "I see", "got it",
                "mm", "yep", "oh", "ah okay", "oh really", "alright", "exactly", "true",
                "oh I see", "makes sense", "uh huh", "yeah yeah", "right right", "okay okay",
                "cool", "wow", "hmm"]


@dataclass(frozen=True)
class Utterance:
    text: str
    category: str
    complete: bool  # whether the speaker is done where the text ends


def _time(r: random.Random) -> str:
    return r.choice(HOURS) + r.choice(MINUTES) + r.choice(["", "", " in the morning", " p.m.",
                                                            " a.m.", " tonight"])


def _date(r: random.Random) -> str:
    return r.choice([f"{r.choice(MONTHS)} {r.choice(ORDINALS)}", f"the {r.choice(ORDINALS)}",
                     f"next {r.choice(DAYS)}", r.choice(DAYS),
                     f"{r.choice(DAYS)} the {r.choice(ORDINALS)}"])


def _name(r: random.Random) -> str:
    return r.choice([r.choice(FIRST), f"{r.choice(FIRST)} {r.choice(LAST)}"])


def _year(r: random.Random) -> str:
    return r.choice([f"nineteen {r.choice(['fifty', 'sixty', 'seventy', 'eighty', 'ninety'])}"
                     f" {r.choice(DIGITS[1:])}",
                     f"two thousand and {r.choice(DIGITS[1:] + ['ten', 'twelve', 'fifteen'])}"])


def _digit_groups(r: random.Random, sizes: tuple[int, ...]) -> list[str]:
    """Digits as a speaker reads them: one word each, groups separated by a pause (comma)."""
    return [" ".join(r.choice(DIGITS + ["oh"] if k else DIGITS[1:]) for k in range(n))
            for n in sizes]


def statement(r: random.Random) -> tuple[str, bool]:
    return r.choice([
        lambda: f"I'm looking for a {r.choice(PLACES)} near {r.choice(CITIES)}",
        lambda: r.choice(PROBLEMS),
        lambda: f"I'd like to change my reservation to {_date(r)}",
        lambda: f"I want to cancel {r.choice(ITEMS)}",
        lambda: f"I'm calling about {r.choice(ITEMS)}",
        lambda: f"we'll be there around {_time(r)}",
        lambda: f"I'll be flying to {r.choice(CITIES)} on {_date(r)}",
        lambda: f"I think {r.choice(PROBLEMS)}",
        lambda: f"that's for {r.choice(COUNTS)} people",
        lambda: f"I already tried restarting it {r.choice(['twice', 'three times', 'once'])}",
        lambda: f"it's been like this since {_date(r)}",
        lambda: f"I need {r.choice(ITEMS)} for {_date(r)}",
        lambda: f"my flight from {r.choice(CITIES)} was delayed",
    ])(), True


def question(r: random.Random) -> tuple[str, bool]:
    return r.choice([
        lambda: f"what time does the {r.choice(PLACES)} close?",
        lambda: f"is the {r.choice(PLACES)} open on {r.choice(DAYS)}?",
        lambda: f"how much is {r.choice(ITEMS)}?",
        lambda: f"what's the weather like in {r.choice(CITIES)} {r.choice(WHENS)}?",
        lambda: f"can you tell me how to get to the {r.choice(PLACES)}?",
        lambda: f"do you have anything available on {_date(r)}?",
        lambda: f"how long does it take to get to {r.choice(CITIES)}?",
        lambda: f"could I speak to {_name(r)}?",
        lambda: "when is my next appointment?",
        lambda: "can I pay with a credit card?",
        lambda: f"what's the earliest flight to {r.choice(CITIES)}?",
        lambda: f"did {_name(r)} call me back?",
        lambda: f"why was I charged {r.choice(COUNTS)} dollars?",
        lambda: f"is it going to rain {r.choice(WHENS)}?",
    ])(), True


def command(r: random.Random) -> tuple[str, bool]:
    return r.choice([
        lambda: f"book a table for {r.choice(COUNTS)} at {_time(r)}",
        lambda: f"set an alarm for {_time(r)}",
        lambda: f"call {_name(r)}",
        lambda: f"play {r.choice(MUSIC)}",
        lambda: f"turn {r.choice(['off', 'on', 'down', 'up'])} the {r.choice(DEVICES)}",
        lambda: f"remind me to {r.choice(TASKS)} {r.choice(WHENS)}",
        lambda: f"send a message to {_name(r)} saying I'll be late",
        lambda: f"add {r.choice(GROCERIES)} to my shopping list",
        lambda: f"cancel my {_time(r)} appointment",
        lambda: f"schedule a meeting with {_name(r)} on {_date(r)}",
        lambda: f"order {r.choice(ITEMS)} for {_date(r)}",
        lambda: f"please transfer me to {r.choice(['billing', 'support', 'sales', 'a person'])}",
        lambda: "read my messages",
    ])(), True


def answer(r: random.Random) -> tuple[str, bool]:
    return r.choice([
        lambda: r.choice(["yes", "no", "okay", "yeah", "nope", "sure", "correct", "that's right",
                          "no thanks", "yes please", "sounds good", "perfect", "not really",
                          "I don't know", "maybe later", "that's all", "thank you",
                          "no that's it", "go ahead", "yes that's correct"]),
        lambda: f"{r.choice(['yes', 'yeah', 'no', 'okay'])}, {_date(r)} works",
        lambda: f"no, {_date(r)} would be better",
        lambda: f"yeah, around {_time(r)}",
        lambda: f"{r.choice(['yes', 'no'])}, it's {_name(r)}",
        lambda: f"just {r.choice(COUNTS)}",
        lambda: f"okay, thanks {_name(r).split()[0]}",
        lambda: f"{r.choice(['yes', 'no', 'okay'])}, thank you",
    ])(), True


def digits(r: random.Random) -> tuple[str, bool]:
    """Numbers read in groups. An incomplete one stops after a group, as when the speaker
    looks at the next digits."""
    prefix, sizes = r.choice([
        ("my number is", (3, 3, 4)), ("you can reach me at", (3, 3, 4)),
        ("the code is", (3, 3)), ("my zip code is", (5,)), ("my account number is", (4, 4, 4)),
        ("the confirmation number is", (3, 3, 2)), ("it's", (3, 4)),
        ("my card ends in", (4,)), ("the order number is", (2, 4, 2)), ("my pin is", (4,)),
    ])
    groups = _digit_groups(r, sizes)
    complete = len(groups) == 1 or r.random() < 0.5
    if not complete:
        groups = groups[:r.randint(1, len(groups) - 1)]
    return f"{prefix} {', '.join(groups)}" + ("" if complete else ","), complete


def listing(r: random.Random) -> tuple[str, bool]:
    items = r.sample(GROCERIES, r.randint(2, 5))
    lead = r.choice(["I need", "can you add", "we're out of", "get me", "I'd like",
                     "the recipe needs", "don't forget"])
    if r.random() < 0.5:
        joint = ", and " if len(items) > 2 else " and "
        return f"{lead} {', '.join(items[:-1])}{joint}{items[-1]}", True
    tail = r.choice([", and", ", and um", ", uh", ",", ", and also"])
    return f"{lead} {', '.join(items)}{tail}", False


def identity(r: random.Random) -> tuple[str, bool]:
    return r.choice([
        lambda: f"my name is {_name(r)}",
        lambda: (lambda n: f"that's {n}, spelled {', '.join(n.upper())}")(r.choice(LAST)),
        lambda: f"I was born on {r.choice(MONTHS)} {r.choice(ORDINALS)}, {_year(r)}",
        lambda: f"the appointment is at {_time(r)} on {_date(r)}",
        lambda: f"I'm staying from {_date(r)} to {_date(r)}",
        lambda: f"my last name is {r.choice(LAST)}",
        lambda: f"I live on {r.choice(['Main', 'Oak', 'Maple', 'Park', 'Elm'])} Street",
    ])(), True


BASES: dict[str, Callable[[random.Random], tuple[str, bool]]] = {
    "statement": statement, "question": question, "command": command, "answer": answer,
    "digits": digits, "list": listing, "identity": identity,
}


def disfluent(r: random.Random, text: str, complete: bool) -> tuple[str, bool]:
    """Fillers, a restart, or a trailing conjunction (which leaves the turn unfinished)."""
    words = text.split()
    how = r.choice(["filler", "restart", "trail"] if len(words) > 2 else ["filler", "trail"])
    if how == "filler":
        k = r.randint(0, len(words) - 1)
        if k:
            words[k - 1] = words[k - 1].rstrip(",") + ","
        words.insert(k, f"{r.choice(FILLERS)},")
        return " ".join(words), complete
    if how == "restart":
        k = r.randint(1, min(3, len(words) - 1))
        return " ".join(words[:k]) + ", " + " ".join(words), complete
    return f"{' '.join(words).rstrip('?')}, {r.choice(TRAILERS)}...", False


def turns(seed: int, count: int) -> list[Utterance]:
    """``count`` distinct user turns, the same for the same seed."""
    r = random.Random(seed)
    out: dict[str, Utterance] = {}
    while len(out) < count:
        category = r.choice(list(BASES))
        text, complete = BASES[category](r)
        if r.random() < 0.3:
            text, complete = disfluent(r, text, complete)
            category += "+disfluent"
        text = text[0].upper() + text[1:]
        if complete and text[-1] not in "?.":
            text += "."
        out.setdefault(text, Utterance(text, category, complete))
    return list(out.values())


def backchannels() -> list[Utterance]:
    return [Utterance(b[0].upper() + b[1:] + ".", "backchannel", True) for b in BACKCHANNELS]
