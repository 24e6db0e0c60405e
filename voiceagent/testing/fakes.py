"""Fake backends: each follows its protocol in ``backends.py`` with no model behind it.

They make a session's behaviour scriptable (what the user said, what the LLM answers, how
long the agent's speech lasts) so that tests of the session's logic run in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np

from ..backends import ChatMessage, LLMDelta, ToolCall, Transcript

RATE = 16_000


class LoudnessVAD:
    """Speech wherever a window is louder than ``threshold`` (peak): for synthetic audio,
    where a tone is speech and zeros are silence."""

    sample_rate = RATE
    window_samples = 512

    def __init__(self, threshold: float = 0.05) -> None:
        self.threshold = threshold

    def stream(self) -> LoudnessVAD:
        return self

    def probability(self, window: np.ndarray) -> float:
        return 1.0 if len(window) and float(np.abs(window).max()) > self.threshold else 0.0

    def reset(self) -> None:
        pass


class ScriptedSTT:
    """Hears each user turn as the next of ``texts`` (partials and finals alike)."""

    def __init__(self, *texts: str) -> None:
        self.texts = list(texts)

    def stream(self) -> _ScriptedStream:
        return _ScriptedStream(self.texts)


class _ScriptedStream:
    def __init__(self, texts: list[str]) -> None:
        self._texts = texts
        self._turn = 0

    def _text(self) -> str:
        return self._texts[self._turn] if self._turn < len(self._texts) else ""

    async def push(self, samples: np.ndarray) -> Transcript | None:
        return None

    async def pause(self) -> Transcript | None:
        return Transcript(self._text(), end_probability=1.0)

    async def finish(self) -> Transcript:
        text = self._text()
        self._turn += 1
        return Transcript(text, stable=text, end_probability=1.0)

    async def aclose(self) -> None:
        pass


Piece = str | ToolCall | asyncio.Event


class ScriptedLLM:
    """Answers each call with the next of ``replies``: a string, or a list of pieces where a
    piece is text to stream, a :class:`ToolCall` to make, or an :class:`asyncio.Event` to
    wait for (to hold a reply mid-sentence while a test does something). ``streamed`` is set
    after each text piece; ``calls`` keeps each request's messages, ``tools`` the names of
    the tools offered and ``tool_choices`` the choice asked for."""

    def __init__(self, *replies: str | Sequence[Piece]) -> None:
        self.replies = [[r] if isinstance(r, str) else list(r) for r in replies]
        self.calls: list[list[ChatMessage]] = []
        self.tools: list[list[str]] = []
        self.tool_choices: list[str | None] = []
        self.streamed = asyncio.Event()

    async def chat(self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] = (),
                   tool_choice: str | None = None) -> AsyncIterator[LLMDelta]:
        pieces = self.replies[len(self.calls)] if len(self.calls) < len(self.replies) else []
        self.calls.append(list(messages))
        self.tools.append([t["function"]["name"] for t in tools])
        self.tool_choices.append(tool_choice)
        for piece in pieces:
            if isinstance(piece, asyncio.Event):
                await piece.wait()
            elif isinstance(piece, ToolCall):
                yield LLMDelta(tool_call=piece)
            else:
                yield LLMDelta(text=piece)
                self.streamed.set()


class ToneTTS:
    """A quiet tone of ``seconds_per_word`` per word, in ``pieces`` pieces per chunk; keeps
    every text it was asked to say (``said``)."""

    sample_rate = RATE

    def __init__(self, seconds_per_word: float = 0.05, pieces: int = 1) -> None:
        self.seconds_per_word = seconds_per_word
        self.pieces = pieces
        self.said: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        self.said.append(text)
        n = round(len(text.split()) * self.seconds_per_word * RATE)
        audio = np.full(n, 0.1, np.float32)
        for piece in np.array_split(audio, self.pieces):
            await asyncio.sleep(0)
            yield piece
