"""A LiveKit ``AgentSession`` driven by a recording instead of a room: no server, no network.

:class:`RecordingInput` plays 16 kHz samples to the session as a live microphone (20 ms
frames, paced in real time, then silence); :class:`RecordingOutput` plays the agent's audio
out in real time and records it on the same timeline, so the result is what the user would
have heard, and an interruption cuts the agent's audio where a listener would hear it stop.
:func:`converse` runs one conversation and leaves no task behind. Used by
``examples/livekit/offline_session.py``, the tests and ``benchmarks/livekit_latency.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from livekit.agents import Agent, AgentSession
from livekit.agents.llm import ChatMessage
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent
from livekit.agents.voice.io import AudioInput, AudioOutput, AudioOutputCapabilities

from voiceagent.clock import SessionClock
from voiceagent.pacer import Pacer

from .frames import to_float, to_frame

RATE = 16_000
FRAME = 320  # 20 ms
MAX_LAG = 0.2  # a pacer this late (a stalled loop) re-anchors instead of bursting


class RecordingInput(AudioInput):
    """``samples`` as a microphone, then silence until closed; :meth:`say` queues more
    speech (a user talking over the agent)."""

    def __init__(self, samples: np.ndarray, clock: SessionClock) -> None:
        super().__init__(label="voiceagent.recording")
        self._samples = np.asarray(samples, dtype=np.float32)
        self._sent = 0
        self._pacer = Pacer(clock, FRAME / RATE, MAX_LAG)

    @property
    def finished(self) -> bool:
        """Whether everything queued has been heard."""
        return self._sent >= len(self._samples)

    def say(self, samples: np.ndarray) -> None:
        """Speak ``samples`` next, after what is queued (now, if all of it was heard)."""
        queued = np.pad(self._samples, (0, max(0, self._sent - len(self._samples))))
        self._samples = np.concatenate([queued, np.asarray(samples, dtype=np.float32)])

    async def __anext__(self) -> rtc.AudioFrame:
        await self._pacer.tick()
        chunk = self._samples[self._sent:self._sent + FRAME]
        self._sent += FRAME
        return to_frame(np.pad(chunk, (0, FRAME - len(chunk))), RATE)


class RecordingOutput(AudioOutput):
    """Plays the agent's audio in real time and records it where it was heard; while
    paused (LiveKit pauses on user speech before deciding it is an interruption) the
    listener hears silence and the position holds."""

    def __init__(self, clock: SessionClock) -> None:
        super().__init__(label="voiceagent.recording", sample_rate=RATE,
                         capabilities=AudioOutputCapabilities(pause=True))
        self._clock = clock
        self._queue: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()
        self._player: asyncio.Task[None] | None = None
        self._heard: list[tuple[int, np.ndarray]] = []  # (where on the timeline, samples)
        self._segment_open = False  # captured and not finished yet
        self._played = 0.0  # seconds of the open segment played
        self._playing = asyncio.Event()  # set unless paused
        self._playing.set()
        #: timeline seconds at which each segment began to be heard
        self.starts: list[float] = []

    @property
    def idle(self) -> bool:
        return not self._segment_open

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._segment_open = True
        if self._player is None:
            self._player = asyncio.create_task(self._play(), name="recording-output")
        self._queue.put_nowait(frame)

    def flush(self) -> None:
        super().flush()
        if self._segment_open:
            self._queue.put_nowait(None)  # the segment ends after what is queued

    def clear_buffer(self) -> None:
        self._playing.set()  # nothing left to hold
        while not self._queue.empty():
            self._queue.get_nowait()
        if self._segment_open:
            self._finish(interrupted=True)

    def pause(self) -> None:
        self._playing.clear()

    def resume(self) -> None:
        self._playing.set()

    def _finish(self, interrupted: bool) -> None:
        played, self._played, self._segment_open = self._played, 0.0, False
        self.on_playback_finished(playback_position=played, interrupted=interrupted)

    async def _play(self) -> None:
        pacer = Pacer(self._clock, FRAME / RATE, MAX_LAG)
        while True:
            frame = await self._queue.get()
            if frame is None:
                if self._segment_open:
                    self._finish(interrupted=False)
                continue
            if self._played == 0.0:
                self.starts.append(self._clock.now())
                self.on_playback_started(created_at=time.time())
            samples = to_float(frame)
            for i in range(0, len(samples), FRAME):
                await self._playing.wait()
                await pacer.tick()
                if not self._segment_open:  # cleared while it played
                    break
                piece = samples[i:i + FRAME]
                self._heard.append((int(self._clock.now() * RATE), piece))
                self._played += len(piece) / RATE

    def recording(self, length: int) -> np.ndarray:
        """What was heard, on the timeline, at least ``length`` samples long."""
        end = max([length] + [at + len(s) for at, s in self._heard])
        out = np.zeros(end, np.float32)
        for at, samples in self._heard:
            out[at:at + len(samples)] += samples
        return out

    async def aclose(self) -> None:
        if self._player is not None:
            self._player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._player
            self._player = None


@dataclass
class Conversation:
    """What one offline conversation produced."""

    audio: np.ndarray  # what the user heard (16 kHz, on the input's timeline)
    #: (role, text, interrupted) of each user turn and agent reply, in order
    items: list[tuple[str, str, bool]] = field(default_factory=list)
    reply_starts: list[float] = field(default_factory=list)  # seconds on the timeline
    interim: int = 0  # interim transcripts seen

    @property
    def user(self) -> list[str]:
        return [text for role, text, _ in self.items if role == "user"]

    @property
    def agent(self) -> list[tuple[str, bool]]:
        """Each reply and whether it was interrupted."""
        return [(text, cut) for role, text, cut in self.items if role == "assistant"]


async def converse(session: AgentSession, agent: Agent, samples: np.ndarray, *,
                   replies: int = 1, timeout: float = 90.0,
                   interrupt_with: np.ndarray | None = None,
                   interrupt_after: float = 0.5) -> Conversation:
    """Play ``samples`` (16 kHz mono) to ``session`` running ``agent``; return once the
    recording is over, ``replies`` agent replies have been heard out (or cut) and the
    agent is quiet, or after ``timeout`` seconds. ``interrupt_with`` is spoken
    ``interrupt_after`` seconds into the agent's first reply. The session is closed on
    return."""
    clock = SessionClock()
    source, sink = RecordingInput(samples, clock), RecordingOutput(clock)
    session.input.audio, session.output.audio = source, sink
    result = Conversation(audio=np.zeros(0, np.float32))

    def on_item(ev: ConversationItemAddedEvent) -> None:
        item = ev.item
        if isinstance(item, ChatMessage) and item.role in ("user", "assistant"):
            result.items.append((item.role, item.text_content or "", item.interrupted))

    def on_transcript(ev: UserInputTranscribedEvent) -> None:
        result.interim += not ev.is_final

    session.on("conversation_item_added", on_item)
    session.on("user_input_transcribed", on_transcript)
    try:
        await session.start(agent, record=False)
        async with asyncio.timeout(timeout):
            if interrupt_with is not None:
                while not sink.starts:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(interrupt_after)
                source.say(interrupt_with)
            while not (source.finished and len(result.agent) >= replies and sink.idle
                       and session.agent_state in ("listening", "idle")):
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    finally:
        await session.aclose()
        await sink.aclose()
        session.off("conversation_item_added", on_item)
        session.off("user_input_transcribed", on_transcript)
    result.audio = sink.recording(len(samples))
    result.reply_starts = list(sink.starts)
    return result
