"""Base nodes for transports: an audio source and a paced audio sink with a playout clock.

The sink is where a reply is heard: it announces the start and the end of each reply's
playout (with the words heard) as system frames, which every other stage reads. It also holds
the audio of a draft reply (made while the user's turn was still open) until the draft is
committed, then queues it at once; a discarded draft's audio is dropped unheard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from ..audio import PIPELINE_RATE, StreamResampler
from ..events import AgentTextEvent
from ..frames import (
    AgentAudioFrame,
    AudioFrame,
    DataFrame,
    EndFrame,
    InterruptionFrame,
    PlayoutFinishedFrame,
    PlayoutPauseFrame,
    PlayoutStartedFrame,
    ReplyEnd,
    ReplyFrame,
    ReplyStartedFrame,
    SystemFrame,
)
from ..graph import Node
from ..pacer import Pacer
from ..playout import PlayoutBuffer
from ..race import race
from ..replies import ReplyActivity
from ..runtime import SessionRuntime

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.02
#: Drift past which a live input's media time is re-anchored to the clock (lost packets, a
#: pause in delivery).
RESYNC_SECONDS = 0.2

#: Given each frame of audio a source sends on, or a sink plays, with its time on the session
#: clock (a recording listens this way).
AudioTap = Callable[[np.ndarray, float], None]


class AudioSourceNode(Node):
    """A source whose :meth:`produce` task emits 16 kHz audio frames, then ends the graph."""

    #: what carries the caller's audio (a label for metrics)
    transport = "audio"

    def __init__(self, runtime: SessionRuntime, name: str = "input") -> None:
        super().__init__(name)
        self.runtime = runtime
        #: called with every frame sent on (16 kHz), as the pipeline hears it
        self.taps: list[AudioTap] = []
        self.t = 0.0  # media time of the next frame
        self._bad_samples = 0
        #: what the agent is doing, from the frames every stage receives
        self.activity = ReplyActivity()

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
        """No user turn open and no reply in progress."""
        return self.activity.idle

    async def on_system(self, frame: SystemFrame) -> None:
        self.activity.observe(frame)

    async def emit_audio(self, samples: np.ndarray, ts: float) -> None:
        """Send 16 kHz mono float32 on; NaN/inf samples become silence, reported once."""
        bad = ~np.isfinite(samples)
        if bad.any():
            samples = np.where(bad, 0.0, samples).astype(np.float32)
            if not self._bad_samples:
                await self.report_error(f"input audio has NaN or infinite samples at {ts:.2f} s;"
                                        " they are replaced with silence")
            self._bad_samples += int(bad.sum())
        for tap in self.taps:
            tap(samples, ts)
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
    session clock. The input, and with it the session, ends when :meth:`receive` returns None,
    or after ``input_timeout`` seconds (None: never) with no audio from the peer.

    A feed that stalls (a client with Opus DTX, a network stall, a client that stops sending)
    must not stop the session's time: every frame more than ``STALL_SECONDS`` overdue is
    filled with silence marked ``filled``, so a turn the user just finished still ends and is
    answered. Only real audio counts against ``input_timeout``.

    While ``muted`` the audio is replaced by silence, so time keeps flowing (the endpointer
    still closes a turn the user was in).
    """

    #: how late the next frame may be before its place is filled with silence: past the
    #: jitter of a healthy feed and the lag of a busy event loop (a gap filled in the middle
    #: of speech reads as a pause and can end the turn), at the cost of answering a client
    #: that stopped sending ~0.1 s later than one that sends its silence
    STALL_SECONDS = 0.3
    #: False for a feed paced on the session clock itself (the RTP input plays silence for
    #: missing packets): a late frame there is the event loop's lag, not a stall, and must not
    #: become silence in the middle of speech
    fills_gaps = True
    #: who sends the audio, for the reason the input ends on a timeout
    peer = "the peer"

    def __init__(self, runtime: SessionRuntime, name: str = "input", *,
                 input_timeout: float | None = None) -> None:
        super().__init__(runtime, name)
        self.muted = False
        self.input_timeout = input_timeout
        self.end_reason = ""  # why the input ended, for the session's end
        self._step = round(PIPELINE_RATE * FRAME_SECONDS)

    async def receive(self) -> tuple[np.ndarray, int] | None:
        """The next piece of mono float32 audio and its sample rate; None at the end. May wait
        as long as the feed is quiet: the gaps are filled meanwhile."""
        raise NotImplementedError

    async def produce(self) -> None:
        clock = self.runtime.clock
        resampler: StreamResampler | None = None
        pending = np.zeros(0, np.float32)
        self.t = heard = clock.now()
        after_gap = True  # nothing real sent since the start or a filled gap
        # One receive at a time, kept across the fill-ins: a transport's own wait (and a
        # piece half received) must not restart every time a gap is filled.
        receiving = asyncio.ensure_future(self.receive())
        try:
            while True:
                dues = [heard + self.input_timeout] if self.input_timeout is not None else []
                if self.fills_gaps:
                    dues.append(self.t + FRAME_SECONDS + self.STALL_SECONDS)
                if dues:
                    await race(asyncio.shield(receiving), clock.sleep_until(min(dues)))
                else:
                    await asyncio.wait([receiving])
                if not receiving.done():
                    if self._timed_out(heard):
                        return
                    if self.fills_gaps:
                        after_gap = await self._fill_gap() or after_gap
                    continue
                piece = receiving.result()
                if piece is None:
                    return
                receiving = asyncio.ensure_future(self.receive())
                heard = clock.now()
                samples, rate = piece
                if resampler is None or resampler.src_rate != rate:
                    resampler = StreamResampler(rate, PIPELINE_RATE)
                pending = np.concatenate([pending, resampler(samples)])
                while len(pending) >= self._step:
                    frame, pending = pending[:self._step], pending[self._step:]
                    now = clock.now()
                    if after_gap:  # real audio resumes at the clock, not behind the filler
                        self.t, after_gap = max(self.t, now - FRAME_SECONDS), False
                    elif abs(now - FRAME_SECONDS - self.t) > RESYNC_SECONDS:
                        self.t = max(0.0, now - FRAME_SECONDS)  # stamped with its start
                    if self.muted:
                        frame = np.zeros_like(frame)
                    await self.emit_audio(frame, self.t)
                    self.t += FRAME_SECONDS
        finally:
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)

    def _timed_out(self, heard: float) -> bool:
        if self.input_timeout is None or self.runtime.clock.now() - heard < self.input_timeout:
            return False
        self.end_reason = f"no audio from {self.peer} for {self.input_timeout:g} s"
        log.info("%s: %s; ending", self.runtime.session_id, self.end_reason)
        return True

    async def _fill_gap(self) -> bool:
        """Silence, marked as made up, for every frame now more than STALL_SECONDS overdue;
        True if there was any."""
        silence = np.zeros(self._step, np.float32)
        filled = False
        while self.t + FRAME_SECONDS + self.STALL_SECONDS <= self.runtime.clock.now():
            await self.emit(AudioFrame(ts=self.t, samples=silence, sample_rate=PIPELINE_RATE,
                                       filled=True))
            self.t += FRAME_SECONDS
            filled = True
        return filled


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
        #: the replies in progress (announced, not yet finished here)
        self.activity = ReplyActivity()
        #: called with every frame handed out (at ``rate``): exactly what the user heard
        self.taps: list[AudioTap] = []
        #: pending draft -> its frames so far, queued when it is committed
        self._draft_frames: dict[int, list[ReplyFrame]] = {}

    async def write(self, samples: np.ndarray, ts: float) -> None:
        raise NotImplementedError

    async def on_start(self) -> None:
        if self.paced:
            self.spawn(self._pace(), "playout")

    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, ReplyFrame) and frame.reply_id in self.activity.drafts:
            self._draft_frames.setdefault(frame.reply_id, []).append(frame)
        elif isinstance(frame, AgentAudioFrame):
            if frame.reply_id not in self.activity.live:
                return  # interrupted while this was in flight, or a draft: never played
            if self._resampler is None or self._resampler.src_rate != frame.sample_rate:
                self._resampler = StreamResampler(frame.sample_rate, self.rate)
            samples = self._resampler(frame.samples, last=frame.chunk_end)
            if frame.chunk_end:
                self._resampler = None
            self.buffer.add_audio(samples, frame.reply_id, frame.text, frame.chunk_end,
                                  frame.words)
        elif isinstance(frame, ReplyEnd) and frame.reply_id in self.activity.live:
            self.buffer.add_end(frame.reply_id)

    async def next_frame(self, ts: float) -> np.ndarray:
        """The frame heard at ``ts``; playout bookkeeping happens here."""
        samples, events = self.buffer.read(self.frame_samples)
        for event in events:
            if event.kind == "started":
                self.runtime.metrics.mark(event.reply_id, "first_audio_out", ts)
                await self._publish(PlayoutStartedFrame(ts=ts, reply_id=event.reply_id))
            elif event.reply_id in self.activity.live:
                await self._publish(PlayoutFinishedFrame(ts=ts, reply_id=event.reply_id,
                                                         heard_text=event.heard_text))
        for tap in self.taps:
            tap(samples, ts)
        return samples

    async def _publish(self, frame: PlayoutStartedFrame | PlayoutFinishedFrame) -> None:
        self.activity.observe(frame)  # at once: a finished reply takes no more audio
        if isinstance(frame, PlayoutFinishedFrame):
            self.runtime.metrics.finish(frame.reply_id)
        await self.broadcast(frame)

    async def _pace(self) -> None:
        pacer = Pacer(self.runtime.clock, FRAME_SECONDS, RESYNC_SECONDS)
        while True:
            t = await pacer.tick()
            await self.write(await self.next_frame(t), t)

    async def on_system(self, frame: SystemFrame) -> None:
        # a draft's discard leaves what is heard (or paused for a barge-in) as it is
        only_drafts = (isinstance(frame, InterruptionFrame) and frame.replies is not None
                       and bool(frame.replies) and frame.replies <= self.activity.drafts.keys())
        committed = (self._draft_frames.pop(frame.reply_id, [])
                     if isinstance(frame, ReplyStartedFrame) else [])
        self.activity.observe(frame)
        for draft in [d for d in self._draft_frames if d not in self.activity.drafts]:
            del self._draft_frames[draft]  # discarded
        if only_drafts:
            return
        if isinstance(frame, ReplyStartedFrame):  # a draft's commit: what it has plays now
            for held in committed:
                await self.process(held)
        elif isinstance(frame, PlayoutPauseFrame):
            self.buffer.paused = frame.paused
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt(frame)

    async def _interrupt(self, frame: InterruptionFrame) -> None:
        """Drop the unplayed audio of the replies ``frame`` stops; each ends with the words
        that were heard (none for a reply whose audio had not started)."""
        self.buffer.paused = False
        affected = self.activity.affected(frame)
        for reply_id in affected:
            heard = self.buffer.heard_text(reply_id)
            self.runtime.events.emit(AgentTextEvent(ts=frame.ts, text=heard, final=True,
                                                    turn_id=reply_id, interrupted=True))
            await self._publish(PlayoutFinishedFrame(ts=frame.ts, reply_id=reply_id,
                                                     heard_text=heard, interrupted=True))
        self.buffer.drop(set(affected))
        self._resampler = None

    async def on_end(self) -> None:
        """Let queued speech finish playing before the session ends."""
        if self.paced:
            while self.buffer.queued_samples and self.activity.live:
                await asyncio.sleep(FRAME_SECONDS)
