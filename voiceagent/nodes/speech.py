"""Text to speech: chunk the token stream into sentences, synthesise each as it completes.

The first audio waits only for the first sentence (or clause), not for the whole reply.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from ..agent import AgentOptions
from ..backends import TTS
from ..chunker import SentenceChunker
from ..errors import BackendError
from ..frames import (
    AgentAudioFrame,
    DataFrame,
    InterruptionFrame,
    LLMTextFrame,
    ReplyEnd,
    SystemFrame,
    TextChunkFrame,
)
from ..graph import Node
from ..runtime import SessionRuntime


class ChunkerNode(Node):
    def __init__(self, options: AgentOptions, runtime: SessionRuntime) -> None:
        super().__init__("chunker")
        self._chunker = SentenceChunker(first_clause_chars=options.first_clause_chars)
        self._rt = runtime

    async def process(self, frame: DataFrame) -> None:
        if isinstance(frame, LLMTextFrame):
            await self._send(self._chunker.push(frame.text), frame.turn_id)
        elif isinstance(frame, ReplyEnd):
            await self._send(self._chunker.flush(), frame.turn_id)
            await self.emit(frame)
        else:
            await self.emit(frame)

    async def _send(self, chunks: list[str], turn_id: int) -> None:
        for text in chunks:
            await self.emit(TextChunkFrame(ts=self._rt.clock.now(), text=text, turn_id=turn_id))

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, InterruptionFrame):
            self._chunker.flush()  # the interrupted reply's leftovers are not spoken


class TTSNode(Node):
    def __init__(self, tts: TTS, options: AgentOptions, runtime: SessionRuntime) -> None:
        super().__init__("tts")
        self._tts = tts
        self._timeout = options.tts_timeout
        self._rt = runtime

    async def process(self, frame: DataFrame) -> None:
        if not isinstance(frame, TextChunkFrame):
            await self.emit(frame)
            return
        self._rt.metrics.mark(frame.turn_id, "tts_request", frame.ts)
        stream = self._tts.synthesize(frame.text)
        pending: np.ndarray | None = None
        timed_out = False
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                while True:
                    try:
                        async with asyncio.timeout(self._timeout):
                            samples = await anext(stream)
                    except StopAsyncIteration:
                        break
                    # Hold one piece back so the last one can carry chunk_end.
                    if pending is not None:
                        await self._out(frame, pending, chunk_end=False)
                    pending = samples
        except TimeoutError:
            timed_out = True
        if pending is not None:
            await self._out(frame, pending, chunk_end=True)
        if timed_out:
            raise BackendError(f"TTS produced no audio within {self._timeout} s "
                               f"for {frame.text[:40]!r}")

    async def _out(self, chunk: TextChunkFrame, samples: np.ndarray, chunk_end: bool) -> None:
        now = self._rt.clock.now()
        self._rt.metrics.mark(chunk.turn_id, "tts_first_audio", now)
        await self.emit(AgentAudioFrame(ts=now, samples=samples, sample_rate=self._tts.sample_rate,
                                        turn_id=chunk.turn_id, text=chunk.text,
                                        chunk_end=chunk_end))
