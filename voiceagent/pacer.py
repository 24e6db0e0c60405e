"""A steady tick on the session clock, for everything that sends or takes audio in real time
(a paced output, a WebRTC track, an RTP input).

It never runs ahead, and it never catches up in a burst: when the loop stalled (a long
decode holding the CPU, a suspended machine) and a tick is more than ``max_lag`` late, the
timeline is re-anchored to now. The frames missed are not sent late all at once, which a far
end would hear as a glitch and its jitter buffer would have to throw away.
"""

from __future__ import annotations

from .clock import SessionClock


class Pacer:
    def __init__(self, clock: SessionClock, period: float, max_lag: float) -> None:
        if not period > 0:
            raise ValueError("the pacer's period must be positive")
        self.clock = clock
        self.period = period
        self.max_lag = max_lag
        self._due: float | None = None

    async def tick(self) -> float:
        """Wait for the next tick; returns when it was due on the session clock."""
        now = self.clock.now()
        if self._due is None or now - self._due > self.max_lag:
            self._due = now
        due = self._due
        await self.clock.sleep_until(due)
        self._due = due + self.period
        return due
