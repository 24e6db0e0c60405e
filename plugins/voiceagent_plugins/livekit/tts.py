"""voiceagent's TTS (Piper by default) as a ``livekit.agents.tts.TTS``.

Piper synthesises a phrase at a time. As a streaming TTS it cuts LiveKit's token stream with
voiceagent's own chunker (sentences, and an early clause to start the first reply sooner,
exactly as a voiceagent session speaks) and synthesises each chunk as soon as it is
complete; ``synthesize(text)`` does one text. Closing a stream (an interruption) stops the
synthesis thread at its next piece; each wait for a piece is bounded by
``conn_options.timeout``, and a failure is an ``APIError``.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts
from livekit.agents.utils import shortuuid
from livekit.agents.voice.io import TimedString

from voiceagent import registry
from voiceagent.backends import TimedSpeech
from voiceagent.chunker import SentenceChunker

from .errors import as_api_errors
from .frames import to_pcm
from .naming import NamedBackend


class TTS(NamedBackend, tts.TTS):
    """``backend``: a voiceagent TTS by registry name (or an object), with its ``options``;
    ``first_clause_chars``: the chunker's early first cut (0: whole sentences only)."""

    def __init__(self, *, backend: Any = "piper", first_clause_chars: int = 24,
                 **options: Any) -> None:
        self._backend = registry.resolve("tts", backend, **options)
        super().__init__(capabilities=tts.TTSCapabilities(streaming=True),
                         sample_rate=int(self._backend.sample_rate), num_channels=1)
        self._name_backend(backend)
        self._first_clause_chars = first_clause_chars or 10**9

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
               ) -> SynthesizeStream:
        return SynthesizeStream(tts=self, conn_options=conn_options)

    async def _speak(self, text: str, emitter: tts.AudioEmitter, timeout: float) -> float:
        """Synthesise ``text`` into ``emitter``; returns the seconds of audio made."""
        seconds = 0.0
        async with aclosing(self._backend.synthesize(text)) as pieces:
            while True:
                # a synthesis failing the same way again is no use: not retryable
                async with as_api_errors(f"the {self.model} TTS", timeout, retryable=False):
                    piece = await anext(pieces, None)
                if piece is None:
                    return seconds
                samples = piece.samples if isinstance(piece, TimedSpeech) else piece
                emitter.push(to_pcm(samples))
                seconds += len(samples) / self.sample_rate


class ChunkedStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._tts
        assert isinstance(owner, TTS)
        output_emitter.initialize(request_id=shortuuid("va_"), sample_rate=owner.sample_rate,
                                  num_channels=1, mime_type="audio/pcm")
        await owner._speak(self.input_text, output_emitter, self._conn_options.timeout)
        output_emitter.flush()


class SynthesizeStream(tts.SynthesizeStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._tts
        assert isinstance(owner, TTS)
        output_emitter.initialize(request_id=shortuuid("va_"), sample_rate=owner.sample_rate,
                                  num_channels=1, mime_type="audio/pcm", stream=True)
        output_emitter.start_segment(segment_id=shortuuid("va_"))
        chunker = SentenceChunker(first_clause_chars=owner._first_clause_chars)
        spoken = 0.0

        async def speak(chunks: list[str]) -> None:
            nonlocal spoken
            for text in chunks:
                # what is said when, for LiveKit's transcript synchronisation
                output_emitter.push_timed_transcript(TimedString(text=f"{text} ",
                                                                 start_time=spoken))
                self._mark_started()
                spoken += await owner._speak(text, output_emitter, self._conn_options.timeout)
                output_emitter.flush()

        async for data in self._input_ch:
            await speak(chunker.flush() if isinstance(data, self._FlushSentinel)
                        else chunker.push(data))
        await speak(chunker.flush())
