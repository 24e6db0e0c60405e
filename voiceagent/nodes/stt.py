"""Streaming speech-to-text: feeds the user's speech to an STT stream, emits transcripts.

It takes audio and speech start/stop frames from the VAD and sends on only transcripts.

Only speech reaches the recogniser (plus a little audio from before the VAD was sure, so the
first syllable survives): Whisper-style models invent words in silence. When the user pauses
the stream decodes at once, so the final transcript is usually ready by the time the
endpointer declares the turn over.

Every call into the recogniser is bounded by ``stt_timeout``. A call that fails or hangs is
reported, the stream is replaced by a fresh one and a turn waiting for its final transcript
gets an empty one (the endpointer drops it): the session keeps listening and the next turn is
heard, instead of waiting forever on one stuck decode.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

from ..agent import EndpointingOptions
from ..backends import STT, STTStream, Transcript
from ..errors import BackendError
from ..events import StageEvent, UserTranscriptEvent
from ..frames import (
    AudioFrame,
    DataFrame,
    EndOfTurnFrame,
    SpeechStarted,
    SpeechStopped,
    SystemFrame,
    TranscriptFrame,
)
from ..graph import Node
from ..replies import ReplyActivity
from ..runtime import SessionRuntime

log = logging.getLogger(__name__)


class STTNode(Node):
    def __init__(self, stt: STT, options: EndpointingOptions, runtime: SessionRuntime, *,
                 timeout: float = 20.0) -> None:
        super().__init__("stt")
        self._stt = stt
        self._stream = stt.stream()
        self._timeout = timeout
        self._rt = runtime
        self._lock = asyncio.Lock()  # finish() runs from a system frame, beside push()
        self._in_speech = False
        self._recent: deque[AudioFrame] = deque()  # audio before speech was confirmed
        self._pre_roll = options.pre_roll
        self._keep = options.pre_roll + options.min_speech
        self._heard_until = 0.0  # media time of everything taken in so far
        self._ends: deque[EndOfTurnFrame] = deque()  # turns ended, not yet finalised
        self._activity = ReplyActivity()  # the open user turn, from the endpointer's frames

    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, AudioFrame):
            if self._in_speech:
                await self._push(frame.samples)
            else:
                self._recent.append(frame)
                while self._recent and frame.ts - self._recent[0].ts > self._keep:
                    self._recent.popleft()
            self._heard_until = frame.ts + frame.duration
        elif isinstance(frame, SpeechStarted):
            self._in_speech = True
            earliest = frame.ts - self._pre_roll
            backlog = [f.samples for f in self._recent if f.ts + f.duration > earliest]
            self._recent.clear()
            if backlog:
                await self._push(np.concatenate(backlog))
        elif isinstance(frame, SpeechStopped):
            self._in_speech = False
            self._heard_until = max(self._heard_until, frame.ts)
            turn_id = self._activity.user_turn or 0
            result = await self._call(lambda: self._stream.pause(), "pause", turn_id)
            await self._publish(result, final=False, turn_id=turn_id, at_pause=True)
        await self._finish_due_turns()

    async def _push(self, samples: np.ndarray) -> None:
        turn_id = self._activity.user_turn or 0
        result = await self._call(lambda: self._stream.push(samples), "push", turn_id)
        await self._publish(result, final=False, turn_id=turn_id)

    async def _publish(self, result: Transcript | None, *, final: bool, turn_id: int,
                       at_pause: bool = False) -> None:
        if result is None:
            return
        text = result.text.strip()
        frame = TranscriptFrame(ts=self._rt.clock.now(), text=text, final=final,
                                stable=text if final else result.stable.strip(), turn_id=turn_id,
                                at_pause=at_pause, end_probability=result.end_probability,
                                confidence=result.confidence)
        self._rt.events.emit(UserTranscriptEvent(ts=frame.ts, text=text, final=final,
                                                 stable=frame.stable, turn_id=turn_id))
        if final:
            self._rt.metrics.mark(turn_id, "stt_final", frame.ts)
        await self.emit(frame)

    async def on_system(self, frame: SystemFrame) -> None:
        self._activity.observe(frame)
        if isinstance(frame, EndOfTurnFrame):
            self._ends.append(frame)
            await self._finish_due_turns()

    async def _finish_due_turns(self) -> None:
        """Finalise each ended turn once this stage has taken in all of its speech: the
        endpointer, fed by the VAD directly, can decide before a slow decode lets the last
        of the turn's audio through here."""
        while self._ends and self._heard_until >= self._ends[0].speech_end_ts:
            end = self._ends.popleft()
            result = await self._call(lambda: self._stream.finish(), "finish", end.turn_id)
            await self._publish(result or Transcript(""), final=True, turn_id=end.turn_id)

    async def _call(self, step: Callable[[], Awaitable[Transcript | None]], kind: str,
                    turn_id: int) -> Transcript | None:
        """One bounded call into the stream; None (reported, stream replaced) if it fails.
        A call that decoded (it has a transcript) is reported as a ``stage`` event."""
        async with self._lock:
            start = self._rt.clock.now()
            try:
                async with asyncio.timeout(self._timeout):
                    result = await step()
                if result is not None:
                    self._rt.events.emit(StageEvent(ts=self._rt.clock.now(), stage="stt",
                                                    turn_id=turn_id, start=start, detail=kind))
                return result
            except Exception as exc:  # noqa: BLE001 (a backend may raise anything)
                error = exc
                failed, self._stream = self._stream, self._stt.stream()
        if isinstance(error, TimeoutError):
            error = BackendError(f"the STT gave no result within {self._timeout:g} s")
        elif not isinstance(error, BackendError):
            error = BackendError(f"the STT failed: {type(error).__name__}: {error}")
        await self.report_error(error)
        await self._close(failed)
        return None

    async def _close(self, stream: STTStream) -> None:
        """Close a stream, bounded: a failed one may be as stuck as the call that failed."""
        try:
            async with asyncio.timeout(1.0):
                await stream.aclose()
        except Exception:  # noqa: BLE001
            log.warning("an STT stream did not close cleanly", exc_info=True)

    async def on_stop(self) -> None:
        await self._close(self._stream)
