"""voiceagent's streaming STT (Whisper by default, or the transducer) as a
``livekit.agents.stt.STT`` with interim results.

LiveKit sends an STT stream all of the room's audio, silence included. Whisper invents words
in silence, so the stream hears speech the way a voiceagent session does: voiceagent's VAD
marks it, and only speech (with ``pre_roll`` before it) reaches the recogniser. While the
user speaks, partial transcripts go out as ``INTERIM_TRANSCRIPT``; at a pause the speech is
decoded at once (``pause()``) and goes out as ``PREFLIGHT_TRANSCRIPT``, on which LiveKit starts
its preemptive reply; when the pause reaches ``final_silence`` that decode's new words become
the ``FINAL_TRANSCRIPT`` (with ``START_OF_SPEECH``/``END_OF_SPEECH`` around
it). Speech that resumes sooner continues the same transcript; speech after a pause shorter
than ``context_silence`` is decoded together with what came before. A ``flush()`` from
LiveKit finalises at once.

Each recogniser call is bounded by the stream's ``conn_options.timeout``; a failure is a
retryable ``APIError``, so LiveKit reports it and restarts the stream with fresh state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, NotGivenOr, stt
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN
from livekit.agents.utils import AudioBuffer, shortuuid

from voiceagent import registry
from voiceagent.agent import EndpointingOptions
from voiceagent.audio import resample
from voiceagent.backends import STTStream, Transcript
from voiceagent.text import prefix_end

from .errors import as_api_errors
from .frames import to_float
from .naming import NamedBackend
from .speech import SAMPLE_RATE, SpeechTracker


class STT(NamedBackend, stt.STT):
    """``backend``: a voiceagent STT by registry name (``whisper``, ``transducer``) or an
    object, with its ``options``; ``vad``: the VAD that marks speech for it. A transcript
    is final after ``final_silence`` of silence; speech after less than ``context_silence``
    is recognised in the context of what came before (see :class:`_Listener`)."""

    def __init__(self, *, backend: Any = "whisper", vad: Any = "silero",
                 final_silence: float = 0.2, context_silence: float = 2.0,
                 language: str = "en",
                 endpointing: EndpointingOptions | None = None, **options: Any) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=True, interim_results=True))
        self._backend = registry.resolve("stt", backend, **options)
        self._vad = registry.resolve("vad", vad)
        self._endpointing = endpointing or EndpointingOptions()
        self._final_silence = final_silence
        self._context_silence = max(context_silence, final_silence)
        self._language = language
        self._name_backend(backend)

    async def _recognize_impl(self, buffer: AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        frames = buffer if isinstance(buffer, list) else [buffer]
        pieces = [resample(to_float(f), f.sample_rate, SAMPLE_RATE) for f in frames]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        stream = self._backend.stream()
        try:
            async with as_api_errors(f"the {self.model} STT", conn_options.timeout,
                                     retryable=False):
                await stream.push(audio)
                result = await stream.finish()
        finally:
            await stream.aclose()
        return _event(stt.SpeechEventType.FINAL_TRANSCRIPT, result.text, self._language,
                      0.0, len(audio) / SAMPLE_RATE)

    def stream(self, *, language: NotGivenOr[str] = NOT_GIVEN,
               conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> SpeechStream:
        return SpeechStream(self, conn_options)


class SpeechStream(stt.RecognizeStream):
    def __init__(self, owner: STT, conn_options: APIConnectOptions) -> None:
        super().__init__(stt=owner, conn_options=conn_options, sample_rate=SAMPLE_RATE)
        self._owner = owner

    async def _run(self) -> None:
        # All state is this attempt's: a retry after an error starts clean.
        listener = _Listener(self._owner, self._owner._backend.stream(), self._event_ch.send_nowait,
                     self._conn_options.timeout, self.start_time_offset)
        try:
            async for item in self._input_ch:
                if isinstance(item, self._FlushSentinel):
                    await listener.finalise()
                else:
                    await listener.hear(to_float(item))
            await listener.finalise()
        finally:
            await listener.stream.aclose()


class _Listener:
    """One attempt's speech gate and recogniser stream.

    A LiveKit transcript ends at each pause of ``final_silence``, but the recogniser's turn
    goes on until ``context_silence``: speech after a short pause is decoded together with
    what came before (Whisper hears "ask not" far better within its sentence than alone),
    and each final transcript is the words after those already sent."""

    def __init__(self, owner: STT, stream: STTStream, send: Callable[[stt.SpeechEvent], None],
                 timeout: float, offset: float) -> None:
        self._owner = owner
        self.stream = stream
        self._send = send
        self._timeout = timeout
        self._offset = offset
        opts = owner._endpointing
        self._tracker = SpeechTracker(owner._vad, opts)
        self._pre_roll = opts.pre_roll
        self._keep = opts.pre_roll + opts.min_speech
        self._waiting: list[np.ndarray] = []  # audio not pushed, from before speech resumed
        self._waiting_samples = 0
        self._pushed = False  # the recogniser's turn holds speech
        self._sent: list[str] = []  # its words already sent as final transcripts
        self._segment = False  # a LiveKit transcript is open (START_OF_SPEECH sent)
        self._start = 0.0  # when the open transcript's speech began
        self._paused_at: float | None = None  # the current pause, if any
        self._partial = ""

    async def hear(self, samples: np.ndarray) -> None:
        if self._tracker.speaking:
            await self._push(samples)
        else:
            self._hold(samples)
        for window in self._tracker.feed(samples):
            if window.changed_at is None:
                continue
            if self._tracker.speaking:
                await self._speech_started(window.changed_at)
            else:
                self._paused_at = window.changed_at
                await self._publish(await self._call(self.stream.pause),
                                    stt.SpeechEventType.PREFLIGHT_TRANSCRIPT)
        if self._paused_at is None:
            return
        silence = self._tracker.heard - self._paused_at
        if self._segment and silence >= self._owner._final_silence:
            result = await self._call(self.stream.pause)
            if result is None:  # a recogniser that cannot decode early: end its turn
                await self.finalise()
            else:
                await self._final(result)
        if self._pushed and silence >= self._owner._context_silence:
            await self.finalise()

    def _hold(self, samples: np.ndarray) -> None:
        self._waiting.append(samples)
        self._waiting_samples += len(samples)
        while self._waiting_samples - len(self._waiting[0]) >= self._keep * SAMPLE_RATE:
            self._waiting_samples -= len(self._waiting.pop(0))

    async def _speech_started(self, at: float) -> None:
        if not self._segment:
            self._segment, self._start, self._partial = True, at, ""
            self._send(stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH))
        self._paused_at = None
        held = np.concatenate(self._waiting) if self._waiting else np.zeros(0, np.float32)
        self._waiting, self._waiting_samples = [], 0
        wanted = int(round((self._tracker.heard - (at - self._pre_roll)) * SAMPLE_RATE))
        if len(held) and wanted > 0:
            await self._push(held[-wanted:])

    async def _push(self, samples: np.ndarray) -> None:
        self._pushed = True
        await self._publish(await self._call(lambda: self.stream.push(samples)))

    def _new_words(self, result: Transcript | None) -> list[str]:
        words = result.text.split() if result is not None else []
        return words[prefix_end(self._sent, words):]

    async def _publish(self, result: Transcript | None, kind: stt.SpeechEventType =
                       stt.SpeechEventType.INTERIM_TRANSCRIPT) -> None:
        text = " ".join(self._new_words(result))
        if text and (text != self._partial or kind != stt.SpeechEventType.INTERIM_TRANSCRIPT):
            self._partial = text
            self._send(self._event(kind, text))

    async def _final(self, result: Transcript | None) -> None:
        """Close the open LiveKit transcript with ``result``'s new words."""
        new = self._new_words(result)
        if new:
            self._send(self._event(stt.SpeechEventType.FINAL_TRANSCRIPT, " ".join(new)))
            self._sent += new
        if self._tracker.speaking:  # flushed mid-speech: what follows is a new transcript
            self._start, self._partial = self._tracker.heard, ""
        else:
            self._segment = False
            self._send(stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH))

    async def finalise(self) -> None:
        """End the recogniser's turn (a long silence, LiveKit's flush, the end of input),
        closing the open transcript with its final words."""
        if not self._pushed:
            return
        result = await self._call(self.stream.finish)
        self._pushed = False
        if self._segment:
            await self._final(result)
        self._sent = []

    def _event(self, kind: stt.SpeechEventType, text: str) -> stt.SpeechEvent:
        end = self._paused_at if self._paused_at is not None else self._tracker.heard
        return _event(kind, text, self._owner._language, self._offset + self._start,
                      self._offset + end)

    async def _call(self, step: Callable[[], Awaitable[Transcript | None]]) -> Transcript | None:
        async with as_api_errors(f"the {self._owner.model} STT", self._timeout,
                                 retryable=True):
            return await step()

def _event(kind: stt.SpeechEventType, text: str, language: str, start: float,
           end: float) -> stt.SpeechEvent:
    return stt.SpeechEvent(type=kind, request_id=shortuuid("va_"), alternatives=[
        stt.SpeechData(language=LanguageCode(language), text=text, start_time=start, end_time=end)])
