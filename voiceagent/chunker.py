"""Incremental sentence/clause chunker between the LLM's token stream and text-to-speech.

Why: speech synthesis needs whole phrases to sound natural, but the agent's first audio must not
wait for the whole reply. ``SentenceChunker`` turns streamed LLM text into speakable chunks as
soon as each one is certain: sentences, plus one early clause cut in the first chunk of a reply
to shorten the time to first audio.

Rules. Every cut falls on whitespace and chunks are whitespace-collapsed, so
``" ".join(chunks)`` is the input with its whitespace runs collapsed: nothing lost or reordered.

* A newline always ends a chunk (one list item per chunk).
* A run of ``.`` ``?`` ``!`` ``…`` plus any closing quotes/brackets (``"hi."``, ``aside.)``)
  ends a sentence when whitespace follows and the next character is not lowercase, a digit or
  more such punctuation: "3.5", "example.com", "10 a.m. today", 'asked "why?" and left',
  "Fig. 3", ". . ." do not split. So an abbreviation that ends a sentence splits before a
  capital ("... pears, etc. Then ...", "at 10 a.m. Bring ..."); the price is that "the U.S.
  Army" splits too.
* After a single ``.``, never split after a title or Latin abbreviation (``Dr.`` ``Mr.``
  ``St.`` ``vs.`` ``e.g.`` ...), an initial ("J. K. Rowling", but not "I."), or a number that
  opens the chunk (the list marker of "1. Buy milk").
* After an ellipsis the pronoun I does not start a sentence ("Well... I think so." is one
  chunk; "Wait... What?" splits).
* The first chunk of a reply may also end at a clause boundary (``,`` ``;`` ``:`` followed by
  whitespace, or a dash between spaces) once it holds ``first_clause_chars`` characters.
* A chunk that would be longer than ``max_chars`` is cut at the last whitespace within the
  limit; a single word longer than that stays whole.

A boundary is decided only once the text that settles it has arrived (after "." that is the next
non-space character), and earlier candidates are settled before later ones, so the chunks are
the same however the text is split into pieces.
"""

from __future__ import annotations

import re

_CANDIDATE = re.compile(
    r"""
      (?P<newline>\n)
    | (?P<stop>[.?!…]+)["'”’»)\]}*]*   # terminal punctuation, then closing quotes/brackets
    | [,;:] | (?<=\s)[-–—]+            # clause boundaries (a dash needs a space before it)
    """,
    re.VERBOSE,
)
_SPACE = re.compile(r"\s")
_NONSPACE = re.compile(r"\S")
_OPENERS = "\"'“‘([{*"
_NEVER_ENDS_SENTENCE = frozenset(
    "mr mrs ms mx dr prof rev hon gen col capt lt sgt sen gov st mt vs cf e.g i.e".split()
)


class SentenceChunker:
    """Cuts streamed LLM text into chunks for TTS; one instance per reply (never shared: two
    replies in one buffer would mix their words)."""

    def __init__(self, *, first_clause_chars: int = 24, max_chars: int = 240) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be at least 1, got {max_chars}")
        self._first_clause_chars = first_clause_chars
        self._max_chars = max_chars
        self._buf = ""  # text not yet emitted; never starts with whitespace
        self._first = True  # the next chunk is the first of the reply

    def push(self, text: str) -> list[str]:
        """Add streamed LLM text (any piece size: one char, a token, many sentences); return
        the chunks that are now complete."""
        self._buf = (self._buf + text).lstrip()
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of reply: return whatever is left (possibly an empty list), and reset for the
        next reply."""
        chunks = self._drain(final=True)
        if rest := " ".join(self._buf.split()):
            chunks.append(rest)
        self._buf, self._first = "", True
        return chunks

    def _drain(self, final: bool) -> list[str]:
        chunks: list[str] = []
        while (cut := self._next_cut(final)) is not None:
            chunks.append(" ".join(self._buf[:cut].split()))
            self._buf = self._buf[cut:].lstrip()
            self._first = False
        return chunks

    def _next_cut(self, final: bool) -> int | None:
        """Where the next chunk ends in the buffer, or None while that is not yet settled."""
        buf, limit = self._buf, self._max_chars
        for m in _CANDIDATE.finditer(buf):
            if m.end() > limit:
                break
            if m["newline"]:
                return m.start()
            verdict = self._ends_sentence(m, final) if m["stop"] else self._ends_clause(m, final)
            if verdict is None:
                return None
            if verdict:
                return m.end()
        if len(buf) <= limit:
            return None
        last_space = next((i for i in range(limit, 0, -1) if buf[i].isspace()), None)
        if last_space is not None:
            return last_space
        after_word = _SPACE.search(buf, limit)
        return after_word.start() if after_word else None

    def _ends_sentence(self, m: re.Match[str], final: bool) -> bool | None:
        """Whether terminal punctuation ``m`` ends a sentence; None while the text can't tell."""
        buf, end = self._buf, m.end()
        nonspace = _NONSPACE.search(buf, end)
        after = nonspace.start() if nonspace else len(buf)  # where the next word starts
        if after == end < len(buf):  # glued to what follows: "3.5", "example.com", "?a=1"
            return False
        if "\n" in buf[end:after]:
            return True
        if after == len(buf):
            return False if final else None
        stop, nxt = m["stop"], buf[after]
        if stop == ".":
            word_start = m.start()
            while word_start > 0 and not buf[word_start - 1].isspace():
                word_start -= 1
            word = buf[word_start : m.start()]
            bare = word.lstrip(_OPENERS)
            if bare.lower() in _NEVER_ENDS_SENTENCE:
                return False
            if len(bare) == 1 and bare.isalpha() and bare != "I":  # an initial: "J. K. Rowling"
                return False
            if word.isdigit() and word_start == 0:  # list marker: "1. Buy milk"
                return False
        if nxt.islower() or nxt.isdigit() or nxt in ".?!…":  # ". . ." stays together
            return False
        if nxt == "I" and stop != "." and set(stop) <= {".", "…"}:  # "Well... I think so."
            if after + 1 == len(buf):
                return False if final else None
            return buf[after + 1].isalpha()  # "It", "In" start a sentence; "I", "I'm" do not
        return True

    def _ends_clause(self, m: re.Match[str], final: bool) -> bool | None:
        """Whether clause punctuation ``m`` ends the first chunk; None while the text can't tell."""
        if not self._first:
            return False
        if m.end() == len(self._buf):  # a dash run may grow, whitespace may follow
            return False if final else None
        if len(" ".join(self._buf[: m.end()].split())) < self._first_clause_chars:
            return False
        return self._buf[m.end()].isspace()
