"""A steady tick on the session clock, for everything that sends or takes audio in real time
(a paced output, a WebRTC track, an RTP input).

It never runs ahead, and it never catches up in a burst: when the loop stalled (a long
decode holding the CPU, a suspended machine) and a tick is more than ``max_lag`` late, the
timeline is re-anchored to now. The frames missed are not sent late all at once, which a far
end would hear as a glitch and its jitter buffer would have to throw away.
"""

from __future__ import annotations

import asyncio

from .clock import SessionClock
from .race import race


class Pacer:
    def __init__(self, clock: SessionClock, period: float, max_lag: float) -> None:
        if not period > 0:
            raise ValueError("the pacer's period must be positive")
        self.clock = clock
        self.period = period
        self.max_lag = max_lag
        self._due: float | None = None

    async def tick(self, wake: asyncio.Event | None = None) -> float:
        """Wait for the next tick; returns when it was due on the session clock.

        ``wake`` set before then ends the wait early and the timeline goes on from there:
        a sender's first sound after silence need not wait out the rest of a period (the far
        end sees one packet come early, never a burst)."""
        now = self.clock.now()
        if self._due is None or now - self._due > self.max_lag:
            self._due = now
        due = self._due
        if wake is not None and due > now and not wake.is_set():
            await race(self.clock.sleep_until(due), wake.wait())
            due = min(due, self.clock.now())
        else:
            await self.clock.sleep_until(due)
        self._due = due + self.period
        return due
