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


class VADNode(Node):
    def __init__(self, vad: VAD, options: EndpointingOptions, runtime: SessionRuntime) -> None:
        super().__init__("vad")
        self._stream = vad.stream()
        self._window = vad.window_samples
        self._rate = vad.sample_rate
        self._opts = options
        self._rt = runtime
        self._pending = np.zeros(0, dtype=np.float32)
        self._pending_ts = 0.0
        self.speaking = False
        self._run_start: float | None = None  # start of the current speech (or silence) run

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
            await self._on_window(self._stream.probability(window), start, self._pending_ts)

    async def _on_window(self, prob: float, start: float, end: float) -> None:
        threshold = self._opts.activation_threshold
        voiced = prob >= threshold if not self.speaking else prob >= threshold - HYSTERESIS
        if voiced != self.speaking:
            if self._run_start is None:
                self._run_start = start
            needed = self._opts.min_speech if voiced else self._opts.min_silence
            if end - self._run_start >= needed:
                await self._flip(voiced, self._run_start)
        else:
            self._run_start = None

    async def _flip(self, speaking: bool, ts: float) -> None:
        self.speaking = speaking
        self._run_start = None
        await self.emit(SpeechStarted(ts=ts) if speaking else SpeechStopped(ts=ts))
        await self.broadcast(UserSpeakingFrame(ts=ts, speaking=speaking))
        self._rt.events.emit(UserSpeakingEvent(ts=ts, speaking=speaking))
