"""Drive a whole session from code, turn by turn, and assert on what each turn did.

::

    async with Conversation(agent) as chat:
        turn = await chat.say_text("I'd like to book a table.")
        assert turn.handoffs == ["booking"]
        turn = await chat.say_audio(load_audio("phone_number.wav"))
        assert "5" in turn.reply_text and turn.latency_ms < 2000

Text turns go to the LLM as typed turns; audio turns go through the real pipeline (VAD, STT,
endpointer) from an open microphone that is quiet between clips. Each turn ends when the
agent has answered it and nothing more is being said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from ..agent import Agent
from ..audio import PIPELINE_RATE
from ..backends import STT
from ..clock import SessionClock
from ..events import (
    AgentEnteredEvent,
    AgentSpeakingEvent,
    AgentTextEvent,
    Event,
    MetricsEvent,
    ToolCallEvent,
    TurnMetrics,
    UserTurnEvent,
)
from ..runtime import SessionRuntime
from ..session import AgentSession, resolve_backends
from ..transports.base import FRAME_SECONDS, AudioSourceNode
from ..transports.file import FileAudioOutput


class Microphone(AudioSourceNode):
    """An open microphone: the clips it is given, in order, and silence between them."""

    def __init__(self, runtime: SessionRuntime) -> None:
        super().__init__(runtime)
        self._clips: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._silence = np.zeros(round(PIPELINE_RATE * FRAME_SECONDS), np.float32)

    def speak(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono speech; it is heard after what is queued before it."""
        self._clips.put_nowait(samples)

    async def produce(self) -> None:
        while True:
            clip = self._silence if self._clips.empty() else self._clips.get_nowait()
            await self.play(clip)


@dataclass
class ToolCallRecord:
    name: str
    arguments: str
    result: str
    error: bool


@dataclass
class TurnResult:
    """What one user turn did."""

    #: the user's words as the agent took them (the final transcript of an audio turn)
    transcript: str
    #: what the agent said in answer: its replies' words (an agent's greeting on a handoff
    #: included), as generated
    reply_text: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    #: the agents that took over during the turn, in order
    handoffs: list[str] = field(default_factory=list)
    #: the agent holding the conversation when the turn ended
    agent: str = ""
    metrics: TurnMetrics | None = None
    #: end of the user's speech (or the typed text) to the first agent audio heard, ms
    latency_ms: float | None = None
    #: what the user heard during the turn (16 kHz)
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: every event of the turn
    events: list[Event] = field(default_factory=list)
    #: the turn did not finish within the time-out (no turn was detected, or no answer)
    timed_out: bool = False

    def called(self, name: str) -> list[ToolCallRecord]:
        return [c for c in self.tool_calls if c.name == name]


class Conversation:
    """A session of ``agent`` with a scripted user. ``backends`` default to the agent's
    (loaded through the registry); ``speed`` runs the session clock faster than real time
    (latencies are then in session time, so keep 1 where they are judged)."""

    def __init__(self, agent: Agent, *, backends: dict[str, object] | None = None,
                 speed: float = 1.0, turn_timeout: float = 60.0) -> None:
        self.backends = backends or resolve_backends(agent)
        self.turn_timeout = turn_timeout
        self.session = AgentSession(agent, Microphone, FileAudioOutput,
                                    clock=SessionClock(speed), backends=self.backends)
        self.events: list[Event] = []
        self.session.events.subscribe(self.events.append)

    @property
    def microphone(self) -> Microphone:
        return self.session.input  # type: ignore[return-value]

    async def __aenter__(self) -> Conversation:
        await self.session.start()
        await self.settle()  # the greeting, if any
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.stop()

    async def say_text(self, text: str) -> TurnResult:
        """A typed user turn."""
        return await self._turn(lambda: self.session.send_text(text))

    async def say_audio(self, samples: np.ndarray) -> TurnResult:
        """A spoken user turn: 16 kHz mono speech through the VAD, STT and endpointer."""

        async def speak() -> None:
            self.microphone.speak(samples)

        return await self._turn(speak)

    async def settle(self, timeout: float | None = None) -> bool:
        """Until no user turn is open and no reply is in progress; False on time-out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.turn_timeout)
        quiet = 0
        while loop.time() < deadline:
            idle = not self.session.replies.active and self.microphone.agent_done()
            quiet = quiet + 1 if idle else 0
            if quiet >= 5:
                return True
            await asyncio.sleep(0.02)
        return False

    async def _turn(self, start: Callable[[], Awaitable[None]]) -> TurnResult:
        first = len(self.events)
        output: FileAudioOutput = self.session.output  # type: ignore[assignment]
        audio_from = len(output.audio)
        started = self.session.runtime.clock.now()
        await start()
        answered = await self._answered(first)
        events = self.events[first:]
        return _result(events, started, output.audio[audio_from:], self.session.agent.name,
                       timed_out=not answered)

    async def _answered(self, first: int) -> bool:
        """Until a user turn was taken and everything said after it has played out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.turn_timeout
        while loop.time() < deadline:
            if any(isinstance(e, UserTurnEvent) for e in self.events[first:]):
                return await self.settle(deadline - loop.time())
            await asyncio.sleep(0.02)
        return False


def _result(events: list[Event], started: float, audio: np.ndarray, agent: str, *,
            timed_out: bool) -> TurnResult:
    turns = [e for e in events if isinstance(e, UserTurnEvent)]
    texts = [e.text for e in events if isinstance(e, AgentTextEvent) and e.final and e.text]
    metrics = next((e.metrics for e in events if isinstance(e, MetricsEvent)
                    and turns and e.metrics.turn_id == turns[-1].turn_id), None)
    spoke = next((e.ts for e in events if isinstance(e, AgentSpeakingEvent) and e.speaking),
                 None)
    latency: float | None
    if metrics is not None and metrics.voice_to_voice is not None:
        latency = metrics.voice_to_voice * 1000
    else:  # a typed turn: from the text to the first audio heard
        sent = turns[-1].ts if turns else started
        latency = None if spoke is None else (spoke - sent) * 1000
    return TurnResult(
        transcript=" ".join(e.text for e in turns),
        reply_text=" ".join(texts),
        tool_calls=[ToolCallRecord(e.name, e.arguments, e.result, e.error)
                    for e in events if isinstance(e, ToolCallEvent)],
        handoffs=[e.agent for e in events if isinstance(e, AgentEnteredEvent)],
        agent=agent, metrics=metrics,
        latency_ms=None if latency is None else round(latency, 1),
        audio=audio, events=list(events), timed_out=timed_out)


async def transcribe(stt: STT, samples: np.ndarray) -> str:
    """What ``stt`` hears in 16 kHz ``samples`` (the agent's audio, to judge what was said
    rather than what was meant to be said)."""
    stream = stt.stream()
    try:
        await stream.push(samples)
        return (await stream.finish()).text.strip()
    finally:
        await stream.aclose()
