"""voiceagent's TTS (Piper by default) as a ``livekit.agents.tts.TTS``.

Piper synthesises whole sentences, so this is a non-streaming TTS: LiveKit's agent feeds it
sentence by sentence (its ``tts.StreamAdapter``), and each sentence's audio goes out as Piper
produces it. Closing the stream (an interruption) stops the synthesis thread at its next
piece; each wait for a piece is bounded by ``conn_options.timeout``.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts
from livekit.agents.utils import shortuuid

from voiceagent import registry
from voiceagent.backends import TimedSpeech

from .errors import as_api_errors
from .frames import to_pcm


class TTS(tts.TTS):
    """``backend``: a voiceagent TTS by registry name (or an object), with its ``options``."""

    def __init__(self, *, backend: Any = "piper", **options: Any) -> None:
        self._backend = registry.resolve("tts", backend, **options)
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=int(self._backend.sample_rate), num_channels=1)
        self._name = backend if isinstance(backend, str) else type(backend).__name__

    @property
    def model(self) -> str:
        return self._name

    @property
    def provider(self) -> str:
        return "voiceagent"

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> ChunkedStream:
        return ChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class ChunkedStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        owner = self._tts
        assert isinstance(owner, TTS)
        output_emitter.initialize(request_id=shortuuid("va_"), sample_rate=owner.sample_rate,
                                  num_channels=1, mime_type="audio/pcm")
        what = f"the {owner._name} TTS"
        async with aclosing(owner._backend.synthesize(self.input_text)) as pieces:
            while True:
                # a synthesis failing the same way again is no use: not retryable
                async with as_api_errors(what, self._conn_options.timeout, retryable=False):
                    piece = await anext(pieces, None)
                if piece is None:
                    break
                samples = piece.samples if isinstance(piece, TimedSpeech) else piece
                output_emitter.push(to_pcm(samples))
        output_emitter.flush()
