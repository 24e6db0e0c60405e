"""The session clock: one timeline for every frame timestamp in a session.

``speed`` > 1 runs a simulated session (a file played faster than real time): media time
advances ``speed`` times faster than the wall clock, and every pacing sleep shrinks with it,
so timestamps stay consistent among themselves (latencies then include compute time scaled
by ``speed``; real latencies come from ``speed=1``).
"""

from __future__ import annotations

import asyncio
import time


class SessionClock:
    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("clock speed must be positive")
        self.speed = speed
        self.restart()

    def restart(self) -> None:
        self._t0 = time.monotonic()
        #: wall-clock time (seconds since the Unix epoch) of session time 0: exporters that
        #: need absolute times (trace spans) add the session times to it
        self.epoch = time.time()

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    async def sleep_until(self, t: float) -> None:
        delay = (t - self.now()) / self.speed
        if delay > 0:
            await asyncio.sleep(delay)
