"""Backend protocols: the small surfaces the core talks to.

A backend object is loaded once per process and shared by sessions; per-session state lives
in the stream objects it hands out (``VAD.stream()``, ``STT.stream()``). Heavy model calls must
not block the event loop: implementations run them in a thread.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from .frames import WordTiming


@runtime_checkable
class VADStream(Protocol):
    def probability(self, window: np.ndarray) -> float:
        """Speech probability of one window of ``VAD.window_samples`` 16 kHz samples."""
        ...

    def reset(self) -> None: ...


@runtime_checkable
class VAD(Protocol):
    sample_rate: int
    window_samples: int

    def stream(self) -> VADStream: ...


@runtime_checkable
class TurnDetector(Protocol):
    """An audio end-of-turn model: hears the end of the user's speech."""

    def probability(self, audio: np.ndarray) -> float:
        """P(turn complete) for 16 kHz mono audio ending now. Blocking: run in a thread."""
        ...


@runtime_checkable
class CompletenessScorer(Protocol):
    """A text model of whether a transcript is a finished thought."""

    def probability(self, text: str) -> float:
        """Completeness in [0, 1]. Blocking: run in a thread."""
        ...


@dataclass
class Transcript:
    text: str
    #: the prefix that later decodes of this turn will not change
    stable: str = ""
    #: how likely the speaker finished a sentence where the audio stops, by the recogniser's
    #: own model (None: it cannot tell); the hybrid endpointer prefers it to a text model
    end_probability: float | None = None
    #: how sure the recogniser is of the words: the geometric mean of their tokens'
    #: probabilities (None: it cannot tell)
    confidence: float | None = None


@runtime_checkable
class STTStream(Protocol):
    """One user's speech, turn by turn."""

    async def push(self, samples: np.ndarray) -> Transcript | None:
        """Add 16 kHz mono float32 speech; may return a new partial transcript."""
        ...

    async def pause(self) -> Transcript | None:
        """The user paused: decode what was pushed now, so a ``finish()`` right after is fast."""
        ...

    async def finish(self) -> Transcript:
        """The final transcript of the audio pushed since the last finish; then reset."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class STT(Protocol):
    sample_rate: int

    def stream(self) -> STTStream: ...


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


@dataclass
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    def to_openai(self) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            msg["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            msg["name"] = self.name
        return msg


@dataclass
class LLMDelta:
    """One streamed piece of a reply: text, or a complete tool call."""

    text: str = ""
    tool_call: ToolCall | None = None


@runtime_checkable
class LLM(Protocol):
    def chat(self, messages: Sequence[ChatMessage],
             tools: Sequence[dict[str, Any]] = ()) -> AsyncIterator[LLMDelta]:
        """Stream a reply. ``tools`` are OpenAI-style function specs. Closing the iterator
        early (``aclose``) must stop generation. An agent with a ``tool_choice`` also passes
        ``tool_choice=`` (a tool's name, ``"auto"``, ``"none"`` or ``"required"``): a backend
        that cannot force tools may leave that keyword out, and such agents cannot use it."""
        ...


@dataclass
class TimedSpeech:
    """Synthesised audio with the timings of its words (seconds from the start of
    ``samples``), from a TTS that knows them: what a cut-off listener heard is then exact."""

    samples: np.ndarray
    words: tuple[WordTiming, ...]


@runtime_checkable
class TTS(Protocol):
    sample_rate: int

    def synthesize(self, text: str) -> AsyncIterator[np.ndarray | TimedSpeech]:
        """Stream mono float32 audio at ``sample_rate`` for ``text`` (with word timings
        where the TTS has them). Closing early stops. A TTS shared by sessions that can serve
        a reply's first chunk before other replies' later ones takes an optional keyword
        ``first_of_reply: bool`` (see :func:`takes_first_of_reply`); others leave it out."""
        ...


def takes_first_of_reply(tts: TTS) -> bool:
    """Whether ``tts.synthesize`` accepts the ``first_of_reply=`` hint."""
    try:
        return "first_of_reply" in inspect.signature(tts.synthesize).parameters
    except (TypeError, ValueError):  # a callable without a signature: no hint
        return False
