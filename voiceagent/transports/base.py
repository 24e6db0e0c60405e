"""Base nodes for transports: an audio source and a paced audio sink with a playout clock."""

from __future__ import annotations

import asyncio

import numpy as np

from ..audio import PIPELINE_RATE, StreamResampler
from ..events import AgentTextEvent
from ..frames import (
    AgentAudioFrame,
    AudioFrame,
    DataFrame,
    EndFrame,
    InterruptionFrame,
    PlayoutPauseFrame,
    ReplyEnd,
    ReplyTruncatedFrame,
    SystemFrame,
)
from ..graph import Node
from ..pacer import Pacer
from ..playout import PlayoutBuffer
from ..runtime import SessionRuntime

FRAME_SECONDS = 0.02
#: Drift past which a live input's media time is re-anchored to the clock (lost packets, a
#: pause in delivery).
RESYNC_SECONDS = 0.2


class AudioSourceNode(Node):
    """A source whose :meth:`produce` task emits 16 kHz audio frames, then ends the graph."""

    def __init__(self, runtime: SessionRuntime, name: str = "input") -> None:
        super().__init__(name)
        self.runtime = runtime
        self.t = 0.0  # media time of the next frame
        self._bad_samples = 0

    async def produce(self) -> None:
        raise NotImplementedError

    async def play(self, samples: np.ndarray) -> None:
        """Send a recording as a microphone would: 20 ms frames, each when it is complete
        on the session clock, continuing the timeline at ``self.t``."""
        step = round(PIPELINE_RATE * FRAME_SECONDS)
        for start in range(0, len(samples), step):
            piece = samples[start:start + step]
            if len(piece) < step:
                piece = np.pad(piece, (0, step - len(piece)))
            await self.runtime.clock.sleep_until(self.t + FRAME_SECONDS)
            await self.emit_audio(piece, self.t)
            self.t += FRAME_SECONDS

    async def play_silence_until(self, done, max_seconds: float, hold: float = 0.0) -> bool:
        """An open, quiet microphone until ``done()`` has held for ``hold`` seconds (True)
        or ``max_seconds`` passed (False)."""
        silence = np.zeros(round(PIPELINE_RATE * FRAME_SECONDS), np.float32)
        deadline, since = self.t + max_seconds, None
        while self.t < deadline:
            await self.play(silence)
            if done():
                since = self.t if since is None else since
                if self.t - since >= hold:
                    return True
            else:
                since = None
        return False

    def agent_done(self) -> bool:
        return self.runtime.idle and self.runtime.agent_state == "listening"

    async def emit_audio(self, samples: np.ndarray, ts: float) -> None:
        """Send 16 kHz mono float32 on; NaN/inf samples become silence, reported once."""
        bad = ~np.isfinite(samples)
        if bad.any():
            samples = np.where(bad, 0.0, samples).astype(np.float32)
            if not self._bad_samples:
                await self.report_error(f"input audio has NaN or infinite samples at {ts:.2f} s;"
                                        " they are replaced with silence")
            self._bad_samples += int(bad.sum())
        await self.emit(AudioFrame(ts=ts, samples=samples, sample_rate=PIPELINE_RATE))

    async def on_start(self) -> None:
        self.spawn(self._produce_then_end(), "produce")

    async def _produce_then_end(self) -> None:
        try:
            await self.produce()
        except Exception as exc:
            await self.report_error(exc, fatal=True)
        await self.inbox.put(EndFrame(ts=self.runtime.clock.now()))


class LiveAudioInput(AudioSourceNode):
    """A live feed (a browser's track, a phone call): audio arrives in pieces at the sender's
    rate and is converted once to 16 kHz mono, then sent on in 20 ms frames stamped on the
    session clock. The input, and with it the session, ends when :meth:`receive` returns None.

    While ``muted`` the audio is replaced by silence, so time keeps flowing (the endpointer
    still closes a turn the user was in).
    """

    def __init__(self, runtime: SessionRuntime, name: str = "input") -> None:
        super().__init__(runtime, name)
        self.muted = False
        self.end_reason = ""  # why :meth:`receive` ended the input, for the session's end
        self._step = round(PIPELINE_RATE * FRAME_SECONDS)

    async def receive(self) -> tuple[np.ndarray, int] | None:
        """The next piece of mono float32 audio and its sample rate; None at the end."""
        raise NotImplementedError

    async def produce(self) -> None:
        clock = self.runtime.clock
        resampler: StreamResampler | None = None
        pending = np.zeros(0, np.float32)
        t: float | None = None
        while (piece := await self.receive()) is not None:
            samples, rate = piece
            if resampler is None or resampler.src_rate != rate:
                resampler = StreamResampler(rate, PIPELINE_RATE)
            pending = np.concatenate([pending, resampler(samples)])
            while len(pending) >= self._step:
                frame, pending = pending[:self._step], pending[self._step:]
                now = clock.now()
                if t is None or abs(now - FRAME_SECONDS - t) > RESYNC_SECONDS:
                    t = max(0.0, now - FRAME_SECONDS)  # a frame is stamped with its start
                if self.muted:
                    frame = np.zeros_like(frame)
                await self.emit_audio(frame, t)
                t += FRAME_SECONDS


class AudioSinkNode(Node):
    """Plays agent audio at ``rate``: converts it once, queues it in a playout buffer and
    hands out fixed frames at the pace they are heard. Knows what was heard when a reply is
    interrupted, and reports first audio out for the metrics.

    Push sinks (a file, a sound card) set ``paced=True`` and implement :meth:`write`; pull
    sinks (a WebRTC track) call :meth:`next_frame` themselves.
    """

    paced = False

    def __init__(self, rate: int, runtime: SessionRuntime, name: str = "output") -> None:
        super().__init__(name)
        self.rate = rate
        self.runtime = runtime
        self.buffer = PlayoutBuffer(rate)
        self.frame_samples = round(rate * FRAME_SECONDS)
        self._resampler: StreamResampler | None = None

    async def write(self, samples: np.ndarray, ts: float) -> None:
        raise NotImplementedError

    async def on_start(self) -> None:
        if self.paced:
            self.spawn(self._pace(), "playout")

    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, AgentAudioFrame):
            if frame.turn_id not in self.runtime.active_replies:
                return  # a reply that was interrupted while this was in flight
            if self._resampler is None or self._resampler.src_rate != frame.sample_rate:
                self._resampler = StreamResampler(frame.sample_rate, self.rate)
            samples = self._resampler(frame.samples, last=frame.chunk_end)
            if frame.chunk_end:
                self._resampler = None
            self.buffer.add_audio(samples, frame.turn_id, frame.text, frame.chunk_end)
        elif isinstance(frame, ReplyEnd):
            self.buffer.add_end(frame.turn_id)

    async def next_frame(self, ts: float) -> np.ndarray:
        """The frame heard at ``ts``; playout bookkeeping happens here."""
        samples, events = self.buffer.read(self.frame_samples)
        rt = self.runtime
        for event in events:
            if event.kind == "started":
                rt.metrics.mark(event.turn_id, "first_audio_out", ts)
                rt.set_agent_state("speaking", ts)
            elif event.turn_id in rt.active_replies:
                rt.active_replies.discard(event.turn_id)
                rt.protected_replies.discard(event.turn_id)
                rt.metrics.finish(event.turn_id)
                if not rt.active_replies:
                    rt.set_agent_state("listening", ts)
        return samples

    async def _pace(self) -> None:
        pacer = Pacer(self.runtime.clock, FRAME_SECONDS, RESYNC_SECONDS)
        while True:
            t = await pacer.tick()
            await self.write(await self.next_frame(t), t)

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, PlayoutPauseFrame):
            self.buffer.paused = frame.paused
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt(frame)

    async def _interrupt(self, frame: InterruptionFrame) -> None:
        rt = self.runtime
        self.buffer.paused = False
        affected = {t for t in rt.active_replies if frame.affects(t)}
        for turn in sorted(affected):
            heard = self.buffer.heard_text(turn)
            await self.broadcast(ReplyTruncatedFrame(ts=frame.ts, turn_id=turn, heard_text=heard))
            rt.events.emit(AgentTextEvent(ts=frame.ts, text=heard, final=True, turn_id=turn,
                                          interrupted=True))
            rt.metrics.finish(turn)
        self.buffer.drop(affected)
        self._resampler = None
        rt.active_replies.difference_update(affected)
        rt.protected_replies.difference_update(affected)
        if not rt.active_replies:
            rt.set_agent_state("listening", frame.ts)

    async def on_end(self) -> None:
        """Let queued speech finish playing before the session ends."""
        if self.paced:
            while self.buffer.queued_samples and self.runtime.active_replies:
                await asyncio.sleep(FRAME_SECONDS)
