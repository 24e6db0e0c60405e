"""File transport: play a recording as a live microphone would, record what the user hears.

The input is fed in 20 ms frames on the session clock (real time at speed 1). After the
recording ends, silence keeps flowing, like an open microphone, until the agent has finished
answering; then the session ends. The output file is on the same timeline as the input:
silence where the agent is quiet.
"""

from __future__ import annotations

import numpy as np

from ..audio import PIPELINE_RATE, AudioTimeline
from ..runtime import SessionRuntime
from .base import AudioSinkNode, AudioSourceNode


class FileAudioInput(AudioSourceNode):
    transport = "file"

    def __init__(self, samples: np.ndarray, runtime: SessionRuntime, *,
                 max_tail: float = 60.0, idle_grace: float = 0.6) -> None:
        super().__init__(runtime)
        self.samples = samples
        self.max_tail = max_tail
        self.idle_grace = idle_grace

    async def produce(self) -> None:
        await self.play(self.samples)
        # An open microphone after the recording: silence until the agent is done.
        await self.play_silence_until(self.agent_done, self.max_tail, self.idle_grace)


class FileAudioOutput(AudioSinkNode):
    """Collects what the user hears, frame by frame on the session clock: frames the pacer
    skipped after a stall are silence, so the file stays on the input's timeline."""

    paced = True

    def __init__(self, runtime: SessionRuntime, rate: int = PIPELINE_RATE) -> None:
        super().__init__(rate, runtime)
        self._timeline = AudioTimeline(rate)

    async def write(self, samples: np.ndarray, ts: float) -> None:
        self._timeline.add(samples, ts)

    @property
    def audio(self) -> np.ndarray:
        return self._timeline.samples()
