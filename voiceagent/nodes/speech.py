"""Text to speech: chunk each reply's token stream into sentences, synthesise each as it
completes.

The first audio waits only for the first sentence (or clause), not for the whole reply. Each
reply has a chunker of its own: replies in progress at once (a ``say()`` while the LLM talks)
take turns at sentence boundaries and never mix their words.

A draft reply (preemptive, see the endpointer) has its first chunk synthesised while the
user's turn is still open; its next chunks wait for the commit, so a discarded draft costs
the TTS one clause at most.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from ..agent import AgentOptions
from ..audio import leading_silence
from ..backends import TTS, TimedSpeech, takes_first_of_reply
from ..chunker import SentenceChunker
from ..errors import BackendError
from ..events import StageEvent
from ..frames import (
    AgentAudioFrame,
    AgentChangedFrame,
    DataFrame,
    InterruptionFrame,
    LLMTextFrame,
    ReplyEnd,
    ReplyFrame,
    SystemFrame,
    TextChunkFrame,
    WordTiming,
)
from ..graph import Node
from ..replies import ReplyActivity
from ..runtime import SessionRuntime


class ChunkerNode(Node):
    def __init__(self, options: AgentOptions, runtime: SessionRuntime) -> None:
        super().__init__("chunker")
        self._first_clause_chars = options.first_clause_chars
        self._rt = runtime
        #: reply -> its chunker and whether it may be interrupted
        self._replies: dict[int, tuple[SentenceChunker, bool]] = {}
        self._spoken: set[int] = set()  # replies in _replies that have sent a chunk

    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, LLMTextFrame):
            if frame.reply_id not in self._replies:
                chunker = SentenceChunker(first_clause_chars=self._first_clause_chars)
                self._replies[frame.reply_id] = (chunker, frame.interruptible)
            await self._send(self._replies[frame.reply_id][0].push(frame.text), frame)
        elif isinstance(frame, ReplyEnd):
            reply = self._replies.pop(frame.reply_id, None)
            if reply is not None:
                try:
                    await self._send(reply[0].flush(), frame)
                finally:
                    self._spoken.discard(frame.reply_id)
            await self.emit(frame)
        else:
            await self.emit(frame)

    async def _send(self, chunks: list[str], of: ReplyFrame) -> None:
        for text in chunks:
            first = of.reply_id not in self._spoken
            self._spoken.add(of.reply_id)
            await self.emit(TextChunkFrame(ts=self._rt.clock.now(), text=text,
                                           reply_id=of.reply_id, interruptible=of.interruptible,
                                           first=first))

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, InterruptionFrame):  # an interrupted reply's leftovers go unsaid
            for reply_id, (_, interruptible) in list(self._replies.items()):
                if frame.affects(reply_id, interruptible):
                    del self._replies[reply_id]
                    self._spoken.discard(reply_id)


class TTSNode(Node):
    def __init__(self, tts: TTS, options: AgentOptions, runtime: SessionRuntime) -> None:
        super().__init__("tts")
        self._tts = tts
        self._first_hint = takes_first_of_reply(tts)
        self._timeout = options.tts_timeout
        self._rt = runtime
        self._activity = ReplyActivity()
        self._drafts_voiced: set[int] = set()  # pending drafts whose first chunk is done

    async def on_system(self, frame: SystemFrame) -> None:
        self._activity.observe(frame)
        self._drafts_voiced &= self._activity.drafts.keys()
        if isinstance(frame, AgentChangedFrame):  # the new agent's voice, from its next chunk
            self._tts = frame.tts or self._tts
            self._first_hint = takes_first_of_reply(self._tts)
            self._timeout = frame.options.tts_timeout

    async def process(self, frame: DataFrame) -> None:
        if not isinstance(frame, TextChunkFrame):
            await self.emit(frame)
            return
        if frame.reply_id in self._drafts_voiced:
            await self._activity.committed(frame.reply_id)
        elif frame.reply_id in self._activity.drafts:
            self._drafts_voiced.add(frame.reply_id)
        self._rt.metrics.mark(frame.reply_id, "tts_request", frame.ts)
        start = self._rt.clock.now()
        # a shared TTS serves a reply's first chunk before other replies' later ones
        hint = {"first_of_reply": frame.first} if self._first_hint else {}
        stream = self._tts.synthesize(frame.text, **hint)
        pending: np.ndarray | TimedSpeech | None = None
        first: float | None = None  # when the first audio came
        timed_out = finished = False
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                while True:
                    try:
                        async with asyncio.timeout(self._timeout):
                            piece = await anext(stream)
                    except StopAsyncIteration:
                        break
                    if first is None:
                        first = self._rt.clock.now()
                        if frame.first:  # the reply's first sound: no silence before it
                            piece = _without_lead_in(piece, self._tts.sample_rate)
                    # Hold one piece back so the last one can carry chunk_end.
                    if pending is not None:
                        await self._out(frame, pending, chunk_end=False)
                    pending = piece
            finished = True
        except TimeoutError:
            timed_out = True
        finally:  # also when an interruption cancels the synthesis
            self._rt.events.emit(StageEvent(ts=self._rt.clock.now(), stage="tts",
                                            turn_id=frame.reply_id, start=start, first=first,
                                            cancelled=not finished))
        if pending is not None:
            await self._out(frame, pending, chunk_end=True)
        if timed_out:
            raise BackendError(f"TTS produced no audio within {self._timeout} s "
                               f"for {frame.text[:40]!r}")

    async def _out(self, chunk: TextChunkFrame, piece: np.ndarray | TimedSpeech,
                   chunk_end: bool) -> None:
        now = self._rt.clock.now()
        self._rt.metrics.mark(chunk.reply_id, "tts_first_audio", now)
        samples = piece.samples if isinstance(piece, TimedSpeech) else piece
        words = piece.words if isinstance(piece, TimedSpeech) else None
        await self.emit(AgentAudioFrame(ts=now, samples=samples, sample_rate=self._tts.sample_rate,
                                        reply_id=chunk.reply_id,
                                        interruptible=chunk.interruptible, text=chunk.text,
                                        chunk_end=chunk_end, words=words))


def _without_lead_in(piece: np.ndarray | TimedSpeech, rate: int) -> np.ndarray | TimedSpeech:
    """``piece`` without the near-silence it opens with (its word timings moved to match)."""
    samples = piece.samples if isinstance(piece, TimedSpeech) else piece
    cut = leading_silence(samples, rate)
    if not cut:
        return piece
    if not isinstance(piece, TimedSpeech):
        return samples[cut:]
    shift = cut / rate
    return TimedSpeech(samples[cut:], tuple(
        WordTiming(w.word, max(0.0, w.start - shift), max(0.0, w.end - shift))
        for w in piece.words))
