"""The live-input base on a manual clock: a feed that stalls keeps the session's time moving
with silence marked as filled, real audio resumes at the clock, and the input timeout counts
from the last real audio only."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from voiceagent.frames import AudioFrame, Frame
from voiceagent.testing import ManualClock, make_runtime
from voiceagent.transports.base import FRAME_SECONDS, LiveAudioInput

RATE = 16_000
STEP = round(RATE * FRAME_SECONDS)


class QueuedInput(LiveAudioInput):
    """Pieces the test hands in; a quiet queue is a feed whose ``receive`` blocks."""

    def __init__(self, clock: ManualClock, timeout: float | None = None) -> None:
        super().__init__(make_runtime(clock), input_timeout=timeout)
        self.pieces: asyncio.Queue[tuple[np.ndarray, int]] = asyncio.Queue()
        self.frames: list[AudioFrame] = []

    async def receive(self) -> tuple[np.ndarray, int] | None:
        return await self.pieces.get()

    async def emit(self, frame: Frame) -> None:
        assert isinstance(frame, AudioFrame)
        self.frames.append(frame)


async def run_for(clock: ManualClock, seconds: float, source: QueuedInput | None = None,
                  *, speaking: bool = False) -> None:
    """Move the clock in 20 ms steps (a real frame each step while ``speaking``)."""
    for _ in range(round(seconds / FRAME_SECONDS)):
        clock.advance(FRAME_SECONDS)
        if speaking and source is not None:
            source.pieces.put_nowait((np.full(STEP, 0.1, np.float32), RATE))
        for _ in range(20):
            await asyncio.sleep(0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_a_stalled_feed_is_filled_with_marked_silence_on_the_clock(clock):
    source = QueuedInput(clock)
    task = asyncio.create_task(source.produce())
    await run_for(clock, 0.5, source, speaking=True)
    real = list(source.frames)
    assert real and not any(f.filled for f in real)

    await run_for(clock, 1.0)  # the feed stops: receive() just blocks
    filled = source.frames[len(real):]
    assert filled and all(f.filled and not f.samples.any() for f in filled)
    # the timeline goes on where the real audio ended, one frame after another, and keeps
    # up with the clock (behind it by at most the stall allowance and a frame)
    stamps = np.array([f.ts for f in source.frames])
    assert np.allclose(np.diff(stamps), FRAME_SECONDS)
    assert clock.now() - (stamps[-1] + FRAME_SECONDS) <= source.STALL_SECONDS + FRAME_SECONDS

    await run_for(clock, 0.2, source, speaking=True)  # and the real audio comes back
    back = [f for f in source.frames[len(real) + len(filled):]]
    assert back and not any(f.filled for f in back)
    assert back[0].ts >= filled[-1].ts + FRAME_SECONDS  # never back in time
    assert back[0].ts >= clock.now() - 0.2 - 2 * FRAME_SECONDS  # at the clock, not behind
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_input_timeout_counts_from_the_last_real_audio(clock):
    source = QueuedInput(clock, timeout=2.0)
    task = asyncio.create_task(source.produce())
    await run_for(clock, 1.5)  # no audio yet: filled, still open
    assert source.frames and all(f.filled for f in source.frames)
    await run_for(clock, 0.2, source, speaking=True)  # real audio at 1.5-1.7 s
    await run_for(clock, 1.9)  # 1.9 s of nothing: filled silence is not a sign of life
    assert not task.done()
    await run_for(clock, 0.2)
    await asyncio.wait_for(task, 1)
    assert source.end_reason == "no audio from the peer for 2 s"
    assert 3.6 <= clock.now() <= 3.8 + 1e-9


async def test_a_feed_that_keeps_up_is_never_filled(clock):
    source = QueuedInput(clock, timeout=1.0)
    task = asyncio.create_task(source.produce())
    await run_for(clock, 3.0, source, speaking=True)
    assert len(source.frames) >= 140 and not any(f.filled for f in source.frames)
    assert not task.done()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
