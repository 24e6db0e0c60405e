"""Per-source rate limits: one token bucket per client address, shared by every public
entry point (SIP INVITEs, WebRTC offers, media-stream connections).

A flood from one address must not take the slots every other caller needs, and the limiter
itself must not become the leak: it remembers at most ``max_sources`` addresses, forgetting
the least recently seen first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from pydantic import BaseModel, Field


class RateLimitOptions(BaseModel):
    """New sessions allowed per client address: ``burst`` at once, then ``per_minute``."""

    per_minute: float = Field(30.0, gt=0)
    burst: int = Field(10, ge=1)
    #: addresses remembered at once; beyond that the least recently seen is forgotten
    max_sources: int = Field(10_000, ge=1)


class SourceRateLimiter:
    def __init__(self, options: RateLimitOptions | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.options = options or RateLimitOptions()
        self._clock = clock
        #: address -> (tokens, time of the last refill)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, source: str) -> bool:
        """Take one token from ``source``'s bucket; False when it is empty."""
        tokens, now = self._refill(source)
        if tokens < 1.0:
            self._buckets[source] = (tokens, now)
            return False
        self._buckets[source] = (tokens - 1.0, now)
        return True

    def retry_after(self, source: str) -> float:
        """Seconds until ``source`` may try again (0 when it may now)."""
        tokens, _ = self._refill(source, store=False)
        return max(0.0, (1.0 - tokens) * 60.0 / self.options.per_minute)

    def _refill(self, source: str, *, store: bool = True) -> tuple[float, float]:
        now = self._clock()
        burst = float(self.options.burst)
        tokens, last = self._buckets.get(source, (burst, now))
        tokens = min(burst, tokens + (now - last) * self.options.per_minute / 60.0)
        if store:
            self._buckets[source] = (tokens, now)
            self._buckets.move_to_end(source)
            while len(self._buckets) > self.options.max_sources:
                self._buckets.popitem(last=False)
        return tokens, now
