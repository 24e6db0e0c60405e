"""voiceagent's text end-of-turn signal as a LiveKit turn detector.

LiveKit asks a turn detector, once the user pauses, how likely the transcript so far is a
finished turn, and waits ``min_delay`` after the speech when it is at least
``unlikely_threshold``, ``max_delay`` otherwise. This answers with voiceagent's completeness
scorer (by default the local llama.cpp model's probability that the words end a sentence),
so no LiveKit turn-detector model (licensed for LiveKit Agents only) is ever loaded.

The hybrid endpointer's other inputs do not fit this interface, which sees only the
conversation: Smart Turn's audio score, and Whisper's own end-of-sentence probability
(docs/livekit.md).
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import llm

from voiceagent import registry


class TurnDetector:
    """``scorer``: a voiceagent completeness scorer by registry name (or an object);
    ``threshold``: its score from which a turn counts as finished."""

    def __init__(self, *, scorer: Any = "llamacpp", threshold: float = 0.5,
                 languages: tuple[str, ...] = ("en",), **options: Any) -> None:
        self._scorer = registry.resolve("completeness", scorer, **options)
        self._threshold = threshold
        self._languages = languages
        self._name = scorer if isinstance(scorer, str) else type(scorer).__name__

    @property
    def model(self) -> str:
        return f"{self._name}-completeness"

    @property
    def provider(self) -> str:
        return "voiceagent"

    async def unlikely_threshold(self, language: str | None) -> float | None:
        return self._threshold

    async def supports_language(self, language: str | None) -> bool:
        return language is None or str(language).split("-")[0].lower() in self._languages

    async def predict_end_of_turn(self, chat_ctx: llm.ChatContext, *,
                                  timeout: float | None = None) -> float:
        said = [m.text_content or "" for m in chat_ctx.messages() if m.role == "user"]
        if not said or not said[-1].strip():
            return 1.0  # nothing to wait for
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(self._scorer.probability, said[-1])
