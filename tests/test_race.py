"""race(): the first of several waits to finish; the others are cancelled and awaited."""

from __future__ import annotations

import asyncio

import pytest

from voiceagent.race import race


async def test_the_first_to_finish_wins_and_the_rest_are_cancelled_and_awaited():
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "slow"

    async def fast() -> str:
        await asyncio.sleep(0.01)
        return "fast"

    first = await race(slow(), fast())
    assert first is not None and first.result() == "fast"
    assert cancelled.is_set()  # awaited, not just asked to stop
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_a_failure_is_the_callers_to_read():
    async def broken() -> None:
        raise RuntimeError("socket broke")

    first = await race(broken(), asyncio.sleep(60))
    assert first is not None
    with pytest.raises(RuntimeError, match="socket broke"):
        first.result()


async def test_timeout_returns_none_and_leaves_nothing():
    assert await race(asyncio.sleep(60), asyncio.sleep(60), timeout=0.01) is None
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def test_cancelling_the_race_cancels_every_runner():
    runners: list[asyncio.Event] = [asyncio.Event(), asyncio.Event()]

    async def wait(i: int) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            runners[i].set()

    task = asyncio.create_task(race(wait(0), wait(1)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(r.is_set() for r in runners)
