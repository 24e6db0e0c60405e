"""voiceagent's VAD (Silero on onnxruntime by default) as a ``livekit.agents.vad.VAD``.

The speech decision is voiceagent's own (the segmenter of ``voiceagent/nodes/vad.py``:
hysteresis, ``min_speech``, ``min_silence``), and each event is dated as LiveKit expects:
``START_OF_SPEECH`` carries how long speech has been going on, ``END_OF_SPEECH`` how long
it has been over, so LiveKit's turn timing starts from when the user really stopped.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import vad

from voiceagent import registry
from voiceagent.agent import EndpointingOptions

from .frames import to_float, to_frame
from .naming import NamedBackend
from .speech import SAMPLE_RATE, SpeechTracker

#: the longest speech an END_OF_SPEECH event carries (older audio is dropped)
MAX_SPEECH_S = 60.0


class VAD(NamedBackend, vad.VAD):
    """``backend``: a voiceagent VAD by registry name (or an object). ``min_silence`` is the
    silence that ends a speech segment: LiveKit starts its end-of-turn decision there.
    The other endpointing options (``activation_threshold``, ``min_speech``, ``pre_roll``)
    are voiceagent's."""

    def __init__(self, *, backend: Any = "silero", min_silence: float = 0.2,
                 endpointing: EndpointingOptions | None = None, **options: Any) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))
        self._backend = registry.resolve("vad", backend, **options)
        base = endpointing or EndpointingOptions()
        self._options = base.model_copy(update={"min_silence": min_silence})
        self._name_backend(backend)

    def stream(self) -> VADStream:
        return VADStream(self)


class VADStream(vad.VADStream):
    def __init__(self, owner: VAD) -> None:
        self._owner = owner
        self._tracker = SpeechTracker(owner._backend, owner._options)
        self._resampler: rtc.AudioResampler | None = None
        self._rate = 0
        self._audio = _Recent()  # the open segment's speech, or the audio before speech
        self._run_start = 0.0  # start of the current run of raw speech or raw silence
        self._run_voiced = False
        self._segment_start = 0.0  # when the open speech segment (or silence) began
        super().__init__(owner)

    async def _main_task(self) -> None:
        async for item in self._input_ch:
            if isinstance(item, self._FlushSentinel):
                self._flush()
                continue
            for samples in self._to_16k(item):
                self._feed(samples)

    def _to_16k(self, frame: rtc.AudioFrame) -> list[np.ndarray]:
        if frame.sample_rate == SAMPLE_RATE:
            return [to_float(frame)]
        if self._resampler is None or self._rate != frame.sample_rate:
            self._rate = frame.sample_rate
            self._resampler = rtc.AudioResampler(frame.sample_rate, SAMPLE_RATE,
                                                 num_channels=frame.num_channels)
        return [to_float(f) for f in self._resampler.push(frame)]

    def _flush(self) -> None:
        """A hard segment boundary (LiveKit's contract): speech state starts over."""
        self._tracker.reset()
        self._audio.clear()
        self._segment_start = self._run_start = self._tracker.heard
        self._run_voiced = False

    def _feed(self, samples: np.ndarray) -> None:
        opts = self._owner._options
        self._audio.add(samples, MAX_SPEECH_S if self._tracker.speaking
                        else opts.pre_roll + opts.min_speech)
        for window in self._tracker.feed(samples):
            started = time.perf_counter()
            voiced = window.probability >= opts.activation_threshold
            if voiced != self._run_voiced:
                self._run_voiced, self._run_start = voiced, window.start
            now = window.end
            if window.changed_at is not None:
                self._change(window.changed_at, now)
            run = now - self._run_start
            self._send(vad.VADEventType.INFERENCE_DONE, now, probability=window.probability,
                       inference_duration=time.perf_counter() - started,
                       raw_accumulated_speech=run if voiced else 0.0,
                       raw_accumulated_silence=0.0 if voiced else run)

    def _change(self, at: float, now: float) -> None:
        previous, self._segment_start = self._segment_start, at
        if self._tracker.speaking:  # the pre-roll before the start, then the speech
            speech = self._audio.since(at - self._owner._options.pre_roll, self._tracker.heard)
            self._audio.clear()
            self._audio.add(speech, MAX_SPEECH_S)
            self._send(vad.VADEventType.START_OF_SPEECH, now,
                       frames=[to_frame(speech, SAMPLE_RATE)])
        else:
            speech = self._audio.since(previous, self._tracker.heard)
            self._audio.clear()
            self._send(vad.VADEventType.END_OF_SPEECH, now, speech_duration=at - previous,
                       frames=[to_frame(speech, SAMPLE_RATE)] if len(speech) else [])

    def _send(self, kind: vad.VADEventType, now: float, **fields: Any) -> None:
        speaking = self._tracker.speaking
        elapsed = now - self._segment_start
        event: dict[str, Any] = {"speech_duration": elapsed if speaking else 0.0,
                                 "silence_duration": 0.0 if speaking else elapsed}
        self._event_ch.send_nowait(vad.VADEvent(
            type=kind, samples_index=int(now * SAMPLE_RATE), timestamp=time.time(),
            speaking=speaking, **{**event, **fields}))


class _Recent:
    """The latest audio, at most ``keep`` seconds of it, ending at the stream's present."""

    def __init__(self) -> None:
        self._pieces: deque[np.ndarray] = deque()
        self._samples = 0

    def add(self, samples: np.ndarray, keep: float) -> None:
        self._pieces.append(samples)
        self._samples += len(samples)
        while len(self._pieces) > 1 and self._samples - len(self._pieces[0]) >= keep * SAMPLE_RATE:
            self._samples -= len(self._pieces.popleft())

    def clear(self) -> None:
        self._pieces.clear()
        self._samples = 0

    def since(self, start: float, now: float) -> np.ndarray:
        """The audio held from ``start`` on (seconds on the stream's clock)."""
        audio = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.float32)
        skip = max(0, len(audio) - int(round((now - start) * SAMPLE_RATE)))
        return audio[skip:]
