"""Voice activity: turns per-window speech probabilities into speech start/stop frames.

Audio passes through untouched; :class:`SpeechStarted` / :class:`SpeechStopped` are inserted
in order with it (stamped with when speech really began or ended, not when that became
certain), and a :class:`UserSpeakingFrame` is broadcast so every stage knows at once.
"""

from __future__ import annotations

import numpy as np

from ..agent import EndpointingOptions
from ..backends import VAD
from ..events import UserSpeakingEvent
from ..frames import AudioFrame, DataFrame, SpeechStarted, SpeechStopped, UserSpeakingFrame
from ..graph import Node
from ..runtime import SessionRuntime

#: a window must fall this far below the activation threshold to count as silence
HYSTERESIS = 0.15


class SpeechSegmenter:
    """Speech on/off from per-window probabilities: hysteresis, ``min_speech`` to start,
    ``min_silence`` to stop. Reports each change with the time it really happened."""

    def __init__(self, options: EndpointingOptions) -> None:
        self._opts = options
        self.speaking = False
        self._run_start: float | None = None  # start of the current contrary run

    def update(self, prob: float, start: float, end: float) -> float | None:
        """Feed one window [start, end); returns the time of a change of state, if any."""
        threshold = self._opts.activation_threshold
        voiced = prob >= (threshold - HYSTERESIS if self.speaking else threshold)
        if voiced == self.speaking:
            self._run_start = None
            return None
        if self._run_start is None:
            self._run_start = start
        needed = self._opts.min_speech if voiced else self._opts.min_silence
        if end - self._run_start < needed:
            return None
        changed_at, self._run_start = self._run_start, None
        self.speaking = voiced
        return changed_at


class VADNode(Node):
    def __init__(self, vad: VAD, options: EndpointingOptions, runtime: SessionRuntime) -> None:
        super().__init__("vad")
        self._stream = vad.stream()
        self._window = vad.window_samples
        self._rate = vad.sample_rate
        self._segmenter = SpeechSegmenter(options)
        self._rt = runtime
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_ts = 0.0

    async def process(self, frame: DataFrame) -> None:
        if not isinstance(frame, AudioFrame):
            await self.emit(frame)
            return
        await self.emit(frame)
        if not len(self._pending):
            self._pending_ts = frame.ts
        self._pending = np.concatenate([self._pending, frame.samples])
        while len(self._pending) >= self._window:
            window, self._pending = self._pending[:self._window], self._pending[self._window:]
            start = self._pending_ts
            self._pending_ts += self._window / self._rate
            changed = self._segmenter.update(self._stream.probability(window), start,
                                             self._pending_ts)
            if changed is not None:
                await self._flip(self._segmenter.speaking, changed)

    async def _flip(self, speaking: bool, ts: float) -> None:
        await self.emit(SpeechStarted(ts=ts) if speaking else SpeechStopped(ts=ts))
        await self.broadcast(UserSpeakingFrame(ts=ts, speaking=speaking))
        self._rt.events.emit(UserSpeakingEvent(ts=ts, speaking=speaking))
