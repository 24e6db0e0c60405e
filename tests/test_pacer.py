"""The 20 ms pacer shared by paced outputs, the WebRTC track and the RTP input."""

from __future__ import annotations

import time

from voiceagent.clock import SessionClock
from voiceagent.pacer import Pacer

PERIOD, MAX_LAG = 0.02, 0.2


async def _tick_times(pacer: Pacer, n: int) -> list[float]:
    times = []
    for _ in range(n):
        await pacer.tick()
        times.append(time.monotonic())
    return times


async def test_ticks_are_steady_and_never_ahead():
    clock = SessionClock()
    pacer = Pacer(clock, PERIOD, MAX_LAG)
    dues = [await pacer.tick() for _ in range(10)]
    assert all(b - a == PERIOD or abs(b - a - PERIOD) < 1e-9 for a, b in zip(dues, dues[1:]))
    assert clock.now() >= dues[-1]


async def test_after_a_stall_the_pacer_re_anchors_instead_of_bursting():
    """A loop stall (a long decode, a suspended machine) must not be followed by the missed
    frames all at once: a phone's jitter buffer would throw them away."""
    pacer = Pacer(SessionClock(), PERIOD, MAX_LAG)
    await _tick_times(pacer, 3)
    time.sleep(0.5)  # the event loop is blocked for 25 ticks
    after = await _tick_times(pacer, 6)
    gaps = [b - a for a, b in zip(after, after[1:])]
    assert min(gaps) > PERIOD / 2, f"burst after the stall: {gaps}"
    assert after[-1] - after[0] >= 5 * PERIOD * 0.9


async def test_a_small_delay_is_caught_up_to_keep_the_rate():
    clock = SessionClock()
    pacer = Pacer(clock, PERIOD, MAX_LAG)
    first = await pacer.tick()
    time.sleep(0.05)  # late by less than MAX_LAG: the timeline holds
    dues = [await pacer.tick() for _ in range(5)]
    assert dues[0] == first + PERIOD and abs(dues[-1] - (first + 5 * PERIOD)) < 1e-9


async def test_a_wake_ends_the_wait_early_and_the_timeline_goes_on_from_there():
    """A sender's first sound after silence goes out when it comes, not at the next tick."""
    import asyncio

    clock = SessionClock()
    pacer = Pacer(clock, PERIOD, MAX_LAG)
    wake = asyncio.Event()
    first = await pacer.tick(wake)
    asyncio.get_running_loop().call_later(0.005, wake.set)
    woken = await pacer.tick(wake)
    assert woken - first < PERIOD * 0.75  # without the wake: exactly one period
    after = await pacer.tick(wake)  # already set: an ordinary tick, one period on
    assert abs(after - woken - PERIOD) < 1e-9
