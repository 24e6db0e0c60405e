"""The per-source token bucket (logic only: a manual clock)."""

from __future__ import annotations

from voiceagent.ratelimit import RateLimitOptions, SourceRateLimiter


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_refill_per_source() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(RateLimitOptions(per_minute=60, burst=3), clock=clock)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b"), "another address has its own bucket"
    assert 0.9 < limiter.retry_after("a") <= 1.0
    clock.t = 1.0
    assert limiter.allow("a") and not limiter.allow("a")
    clock.t = 100.0
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False], "burst caps"


def test_remembers_a_bounded_number_of_sources() -> None:
    clock = Clock()
    limiter = SourceRateLimiter(RateLimitOptions(per_minute=1, burst=1, max_sources=2),
                                clock=clock)
    assert limiter.allow("a") and not limiter.allow("a")
    limiter.allow("b")
    limiter.allow("c")
    assert len(limiter._buckets) == 2
    assert limiter.allow("a"), "the least recently seen address was forgotten"
