"""File transport: play a recording as a live microphone would, record what the user hears.

The input is fed in 20 ms frames on the session clock (real time at speed 1). After the
recording ends, silence keeps flowing, like an open microphone, until the agent has finished
answering; then the session ends. The output file is on the same timeline as the input:
silence where the agent is quiet.
"""

from __future__ import annotations

import numpy as np

from ..audio import PIPELINE_RATE
from ..runtime import SessionRuntime
from .base import FRAME_SECONDS, AudioSinkNode, AudioSourceNode


class FileAudioInput(AudioSourceNode):
    def __init__(self, samples: np.ndarray, runtime: SessionRuntime, *,
                 max_tail: float = 60.0, idle_grace: float = 0.6) -> None:
        super().__init__(runtime)
        self.samples = samples
        self.max_tail = max_tail
        self.idle_grace = idle_grace

    async def produce(self) -> None:
        clock = self.runtime.clock
        step = round(PIPELINE_RATE * FRAME_SECONDS)
        t = 0.0
        for start in range(0, len(self.samples), step):
            piece = self.samples[start:start + step]
            if len(piece) < step:
                piece = np.pad(piece, (0, step - len(piece)))
            await clock.sleep_until(t + FRAME_SECONDS)  # a microphone delivers a frame at its end
            await self.emit_audio(piece, t)
            t += FRAME_SECONDS
        # An open microphone after the recording: silence until the agent is done.
        silence = np.zeros(step, dtype=np.float32)
        end, idle_since = t, None
        while t - end < self.max_tail:
            await clock.sleep_until(t + FRAME_SECONDS)
            await self.emit_audio(silence, t)
            t += FRAME_SECONDS
            if self.runtime.idle and self.runtime.agent_state == "listening":
                idle_since = t if idle_since is None else idle_since
                if t - idle_since >= self.idle_grace:
                    return
            else:
                idle_since = None


class FileAudioOutput(AudioSinkNode):
    """Collects what the user hears, frame by frame on the session clock."""

    paced = True

    def __init__(self, runtime: SessionRuntime, rate: int = PIPELINE_RATE) -> None:
        super().__init__(rate, runtime)
        self._frames: list[np.ndarray] = []

    async def write(self, samples: np.ndarray, ts: float) -> None:
        self._frames.append(samples)

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self._frames) if self._frames else np.zeros(0, np.float32)
