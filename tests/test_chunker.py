"""SentenceChunker: boundary rules, first-clause cut, max_chars, flush/reset, and that the chunks
neither lose text nor depend on how the stream is split into pieces."""

from __future__ import annotations

import random

import pytest

from voiceagent.chunker import SentenceChunker

NO_CLAUSE = 10_000  # a first_clause_chars that disables the first-clause cut


def run(pieces: list[str], **kwargs: int) -> list[str]:
    chunker = SentenceChunker(**kwargs)
    chunks = [chunk for piece in pieces for chunk in chunker.push(piece)]
    return chunks + chunker.flush()


def random_split(text: str, rng: random.Random) -> list[str]:
    if len(text) < 2:
        return [text]
    cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(0, 12))))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]


def splittings(text: str, seed: int = 0) -> list[list[str]]:
    """The text whole, one character at a time, and a few random splits."""
    rng = random.Random(seed)
    return [[text], list(text), *(random_split(text, rng) for _ in range(3))]


SENTENCE_CASES = [
    # abbreviations
    pytest.param(
        "Dr. Smith will see you now. Mr. Jones and Mrs. Jones met Ms. Lee at St. Mary's. Wait.",
        ["Dr. Smith will see you now.", "Mr. Jones and Mrs. Jones met Ms. Lee at St. Mary's.",
         "Wait."],
        id="titles",
    ),
    pytest.param(
        "It is Real Madrid vs. Barcelona tonight. Watch it.",
        ["It is Real Madrid vs. Barcelona tonight.", "Watch it."],
        id="vs",
    ),
    pytest.param(
        "Bring pens, paper, etc. and a snack. Thanks.",
        ["Bring pens, paper, etc. and a snack.", "Thanks."],
        id="etc mid-sentence",
    ),
    pytest.param(
        "I bought apples, pears, etc. Then I went home.",
        ["I bought apples, pears, etc.", "Then I went home."],
        id="etc ends sentence",
    ),
    pytest.param(
        "Try a scripting language, e.g. Python. Or a typed one, i.e. Rust and friends. Done.",
        ["Try a scripting language, e.g. Python.", "Or a typed one, i.e. Rust and friends.",
         "Done."],
        id="e.g. and i.e.",
    ),
    pytest.param(
        "We open at 9 a.m. and close at 5 p.m. every day. Come early.",
        ["We open at 9 a.m. and close at 5 p.m. every day.", "Come early."],
        id="a.m. p.m. before lowercase",
    ),
    pytest.param(
        "The meeting is at 10 a.m. Bring coffee.",
        ["The meeting is at 10 a.m.", "Bring coffee."],
        id="a.m. ends sentence",
    ),
    pytest.param(
        "She moved to the U.S. last year. It was big.",
        ["She moved to the U.S. last year.", "It was big."],
        id="U.S.",
    ),
    pytest.param(
        "J. K. Rowling wrote it. So did I. Then we left.",
        ["J. K. Rowling wrote it.", "So did I.", "Then we left."],
        id="initials",
    ),
    # decimals and times
    pytest.param(
        "Pi is about 3.14 and tea is $4.99 today. The train leaves at 10:30 sharp. Get v2.0 now.",
        ["Pi is about 3.14 and tea is $4.99 today.", "The train leaves at 10:30 sharp.",
         "Get v2.0 now."],
        id="decimals and times",
    ),
    # ellipses
    pytest.param("Well... I think so. Yes.", ["Well... I think so.", "Yes."], id="ellipsis, I"),
    pytest.param("Well... I'm not sure.", ["Well... I'm not sure."], id="ellipsis, I'm"),
    pytest.param(
        "Well... maybe later. Sure.", ["Well... maybe later.", "Sure."], id="ellipsis, lowercase"
    ),
    pytest.param("Wait... What? No!", ["Wait...", "What?", "No!"], id="ellipsis, capital"),
    pytest.param("Hmm... It works. Ok", ["Hmm...", "It works.", "Ok"], id="ellipsis, It"),
    pytest.param("Hold on . . . Okay.", ["Hold on . . .", "Okay."], id="spaced ellipsis"),
    pytest.param(
        "Hmm… It works… and then… nothing.",
        ["Hmm…", "It works… and then… nothing."],
        id="unicode ellipsis",
    ),
    # lists
    pytest.param(
        "Steps:\n1. Buy milk\n2. Call mom\n3) Pay rent\n- Rest\n* Sleep\n",
        ["Steps:", "1. Buy milk", "2. Call mom", "3) Pay rent", "- Rest", "* Sleep"],
        id="numbered and bulleted list",
    ),
    pytest.param(
        "Here is the plan.\n\n1. Buy milk. Get the good one.\n2. Call mom",
        ["Here is the plan.", "1. Buy milk.", "Get the good one.", "2. Call mom"],
        id="list items with sentences",
    ),
    # URLs and emails
    pytest.param(
        "See example.com/path?a=1 for details. Or www.python.org. Mail john.doe@mail.example.com.",
        ["See example.com/path?a=1 for details.", "Or www.python.org.",
         "Mail john.doe@mail.example.com."],
        id="urls and emails",
    ),
    # closing quotes and brackets
    pytest.param('He said "hi." Then left.', ['He said "hi."', "Then left."], id="closing quote"),
    pytest.param(
        "(This is an aside.) Back to work.",
        ["(This is an aside.)", "Back to work."],
        id="closing bracket",
    ),
    pytest.param(
        "She asked “why?” and left. ‘Fine.’ He nodded.",
        ["She asked “why?” and left.", "‘Fine.’", "He nodded."],
        id="curly quotes",
    ),
    # ? and !
    pytest.param(
        "Really?! Yes! Are you sure? I am.",
        ["Really?!", "Yes!", "Are you sure?", "I am."],
        id="question and exclamation",
    ),
    # whitespace
    pytest.param(
        "  Hello   there.   How are\tyou?  ", ["Hello there.", "How are you?"], id="whitespace"
    ),
    pytest.param("", [], id="empty"),
    pytest.param("  \n\n \t ", [], id="only whitespace"),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCE_CASES)
def test_sentence_boundaries(text: str, expected: list[str]) -> None:
    for pieces in splittings(text):
        assert run(pieces, first_clause_chars=NO_CLAUSE) == expected, pieces


CLAUSE_CASES = [
    pytest.param(
        "Well, I think that's a great question, and here's why. First, we look, then we act.",
        ["Well, I think that's a great question,", "and here's why.",
         "First, we look, then we act."],
        id="comma",
    ),
    pytest.param(
        "Yes, it is, of course it is, really.",
        ["Yes, it is, of course it is,", "really."],
        id="not before first_clause_chars",
    ),
    pytest.param(
        "The answer is simple enough; we go now.",
        ["The answer is simple enough;", "we go now."],
        id="semicolon",
    ),
    pytest.param(
        "Here is what you need to know: it works.",
        ["Here is what you need to know:", "it works."],
        id="colon",
    ),
    pytest.param(
        "The weather today is lovely - sunny and warm.",
        ["The weather today is lovely -", "sunny and warm."],
        id="hyphen",
    ),
    pytest.param(
        "The weather today is lovely — sunny and warm.",
        ["The weather today is lovely —", "sunny and warm."],
        id="em dash",
    ),
    pytest.param(
        "At exactly 10:30 we had 1,000,000 visitors: great.",
        ["At exactly 10:30 we had 1,000,000 visitors:", "great."],
        id="no clause inside numbers",
    ),
    pytest.param(
        "A well-known fact—sadly—is ignored.",
        ["A well-known fact—sadly—is ignored."],
        id="no cut at glued dashes",
    ),
    pytest.param(
        "Hi. This second sentence is long, and has a comma.",
        ["Hi.", "This second sentence is long, and has a comma."],
        id="first chunk only",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CLAUSE_CASES)
def test_first_clause(text: str, expected: list[str]) -> None:
    for pieces in splittings(text):
        assert run(pieces) == expected, pieces


def test_first_clause_chars_setting() -> None:
    text = ["Well, I think so, yes."]
    assert run(text, first_clause_chars=5) == ["Well,", "I think so, yes."]
    assert run(text, first_clause_chars=0) == ["Well,", "I think so, yes."]
    assert run(text, first_clause_chars=NO_CLAUSE) == ["Well, I think so, yes."]


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [
        pytest.param(
            "one two three four five six seven eight nine ten",
            20,
            ["one two three four", "five six seven eight", "nine ten"],
            id="words",
        ),
        pytest.param(
            "Short. One two three four five six. Done.",
            20,
            ["Short.", "One two three four", "five six.", "Done."],
            id="sentences",
        ),
        pytest.param("a " + "x" * 30 + " b", 10, ["a", "x" * 30, "b"], id="longer word whole"),
        pytest.param("exactly ten", 11, ["exactly ten"], id="at the limit"),
    ],
)
def test_max_chars(text: str, max_chars: int, expected: list[str]) -> None:
    for pieces in splittings(text):
        assert run(pieces, max_chars=max_chars, first_clause_chars=NO_CLAUSE) == expected, pieces


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SentenceChunker(max_chars=0)


def test_emits_as_soon_as_settled() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Hi there.") == []  # could still be "Hi there.com"
    assert chunker.push(" ") == []  # could still be "Hi there. and"
    assert chunker.push("Next") == ["Hi there."]
    assert chunker.push(" one.\n") == ["Next one."]  # a newline settles at once
    assert chunker.push("1. Buy milk\n") == ["1. Buy milk"]
    assert chunker.flush() == []


def test_flush_returns_rest_and_resets() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Hello. Wor") == ["Hello."]
    assert chunker.flush() == ["Wor"]
    assert chunker.flush() == []
    # the next reply starts clean, and its first chunk may again be cut at a clause
    first = "Well, I think that's a great question,"
    assert chunker.push(first + " and") == [first]
    assert chunker.push(" more, and more, and") == []
    assert chunker.flush() == ["and more, and more, and"]
    assert chunker.push("Sure, thing") == []
    assert chunker.flush() == ["Sure, thing"]


def test_flush_settles_held_ellipsis() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Well... I") == []  # "I" or "It"?
    assert chunker.flush() == ["Well... I"]


_VOCAB = (
    "Dr. Smith said hi. Then she left ... … ? ! ?! , ; : - — 1. 2) e.g. i.e. U.S. a.m. etc. "
    "vs. www.python.org john.doe@mail.example.com example.com/path?a=1 $4.99 10:30 3.5 v2.0 "
    '" “ ” ( ) Well I It i I\'m the cat sat on mat it works. Done. OK! Why? J. K. Rowling'
).split(" ")
_SEPARATORS = [" ", " ", " ", "", "\n", "  ", "\t", " \n\n"]


def random_text(seed: int) -> str:
    rng = random.Random(seed)
    words = (rng.choice(_VOCAB) + rng.choice(_SEPARATORS) for _ in range(rng.randint(0, 60)))
    return "".join(words)


PROPERTY_TEXTS = [case.values[0] for case in SENTENCE_CASES + CLAUSE_CASES] + [
    random_text(seed) for seed in range(40)
]
CONFIGS = [
    {},
    {"first_clause_chars": 0, "max_chars": 25},
    {"first_clause_chars": 8, "max_chars": 60},
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_no_loss_and_split_invariance(config: dict[str, int]) -> None:
    for seed, text in enumerate(PROPERTY_TEXTS):
        whole = run([text], **config)
        assert " ".join(whole) == " ".join(text.split()), text
        for chunk in whole:
            assert chunk and chunk == chunk.strip() and "\n" not in chunk
            assert len(chunk) <= config.get("max_chars", 240) or " " not in chunk
        for pieces in splittings(text, seed)[1:]:
            assert run(pieces, **config) == whole, pieces


def test_reusable_across_replies() -> None:
    chunker = SentenceChunker(first_clause_chars=0, max_chars=25)
    rng = random.Random(1)
    for text in PROPERTY_TEXTS:
        pieces = random_split(text, rng)
        chunks = [chunk for piece in pieces for chunk in chunker.push(piece)]
        assert chunks + chunker.flush() == run([text], first_clause_chars=0, max_chars=25)
