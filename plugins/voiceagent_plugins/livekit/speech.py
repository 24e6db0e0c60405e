"""Speech on/off over a stream of 16 kHz audio: voiceagent's VAD and segmenter, shared by
the LiveKit VAD and STT plugins so both hear speech exactly as a voiceagent session does."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voiceagent.agent import EndpointingOptions
from voiceagent.backends import VAD
from voiceagent.nodes.vad import SpeechSegmenter

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class Window:
    """One VAD window, timed in seconds from the start of the stream."""

    start: float
    end: float
    probability: float
    #: when speech really started or stopped, if this window confirmed a change
    changed_at: float | None = None


class SpeechTracker:
    def __init__(self, vad: VAD, options: EndpointingOptions) -> None:
        if vad.sample_rate != SAMPLE_RATE:
            raise ValueError(f"the VAD must take {SAMPLE_RATE} Hz audio")
        self._vad = vad
        self._options = options
        self._size = vad.window_samples
        self._heard = 0.0  # seconds of audio fed so far
        self._windowed = 0.0  # end of the last window scored
        self.reset()

    def reset(self) -> None:
        """Forget speech state (a segment boundary); the stream's clock goes on."""
        self._stream = self._vad.stream()
        self._segmenter = SpeechSegmenter(self._options)
        self._pending = np.zeros(0, np.float32)
        self._windowed = self._heard

    @property
    def speaking(self) -> bool:
        return self._segmenter.speaking

    @property
    def heard(self) -> float:
        """Seconds of audio fed so far."""
        return self._heard

    def feed(self, samples: np.ndarray) -> list[Window]:
        self._heard += len(samples) / SAMPLE_RATE
        self._pending = np.concatenate([self._pending, samples])
        windows = []
        while len(self._pending) >= self._size:
            chunk, self._pending = self._pending[:self._size], self._pending[self._size:]
            start, self._windowed = self._windowed, self._windowed + self._size / SAMPLE_RATE
            prob = self._stream.probability(chunk)  # well under 1 ms: on the loop, as in a session
            changed = self._segmenter.update(prob, start, self._windowed)
            windows.append(Window(start, self._windowed, prob, changed))
        return windows
