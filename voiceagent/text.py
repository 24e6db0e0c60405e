"""Words of a transcript as the runtime compares them: normalised, and aligned by edit distance.

A recogniser that writes "1 2 3", "Ask what you can do." or "flour-fattened" for "one two
three", "ask what you can do" or "flour fattened" said the same words, so both sides are
normalised the same way before words are compared: the endpointer's backchannel list, the
Whisper plugin's alignment of a transcript with the prefix it already holds, and the word
error rate of ``voiceagent_eval.wer``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
             "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}

_APOSTROPHES = re.compile("[\u2018\u2019\u02bc`\u00b4]")
_DIGIT_GROUPS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # "1,000" -> "1000"
_NUMBER = re.compile(r"^(\d+)(st|nd|rd|th)?$")
_SEPARATORS = re.compile(r"[^\w']+|_")  # everything but letters, digits and apostrophes


def _cardinal(n: int) -> list[str]:
    """0..999 in words: 123 -> one hundred twenty three."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    return [_ONES[n // 100], "hundred"] + (_cardinal(n % 100) if n % 100 else [])


def _ordinal(word: str) -> str:
    if word in _ORDINALS:
        return _ORDINALS[word]
    return word[:-1] + "ieth" if word.endswith("y") else word + "th"


def _number_words(token: str) -> list[str]:
    """Small numbers written with digits ("3", "21st") as words; anything else unchanged."""
    match = _NUMBER.match(token)
    if match is None or len(match.group(1)) > 3:
        return [token]
    words = _cardinal(int(match.group(1)))
    if match.group(2):
        words[-1] = _ordinal(words[-1])
    return words


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation. Hyphenated words split; contractions and
    possessives ("what's", "neighbor's") stay one token; quotes around words go; numbers up to
    999 written with digits become words."""
    text = _DIGIT_GROUPS.sub("", _APOSTROPHES.sub("'", text.lower()))
    words: list[str] = []
    for token in _SEPARATORS.split(text):
        token = token.strip("'")
        if token:
            words.extend(_number_words(token))
    return words


def edit_distances(reference: Sequence[str], hypothesis: Sequence[str]) -> list[int]:
    """Word edit distance between ``reference`` and every prefix ``hypothesis[:k]``,
    k = 0..len(hypothesis). The last entry is the distance to the whole hypothesis; the others
    say where in a hypothesis a known reference prefix ends."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        row = [i] + [0] * len(hypothesis)
        for k, hyp_word in enumerate(hypothesis, 1):
            row[k] = min(previous[k] + 1, row[k - 1] + 1,
                         previous[k - 1] + (ref_word != hyp_word))
        previous = row
    return previous


def word_keys(words: Sequence[str]) -> list[str]:
    """Each word as normalised text ("country." and "country," are the same key)."""
    return [" ".join(normalize(w)) for w in words]


def prefix_end(prefix: Sequence[str], words: Sequence[str]) -> int:
    """Where in ``words`` the words of ``prefix`` end, compared as normalised text: a word a
    recogniser now hears differently still lines up (an earlier transcript of the same
    speech, within a longer later one)."""
    if not prefix:
        return 0
    row = edit_distances(word_keys(prefix), word_keys(words))
    return min(range(len(row)), key=lambda k: (row[k], abs(k - len(prefix))))
