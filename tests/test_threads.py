"""Blocking model code in worker threads: no cancel path waits for a thread (issue 12, defect 3).

Two sessions share one model that takes one caller at a time. A session cancelled while the
other holds the model, or while its own thread is in the middle of a model call, must be
free at once; the model must still never run twice at the same time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from voiceagent.threads import ModelLock, iterate_in_thread

#: what a blocking model call costs here; a cancel must end well within it
STEP = 0.6
BOUND = 0.2


class FakeModel:
    """A blocking generator, one caller at a time, that counts callers inside it."""

    def __init__(self) -> None:
        self.lock = ModelLock()
        self.inside = 0
        self.most_inside = 0
        self._count = threading.Lock()

    def _items(self, n: int) -> Iterator[int]:
        with self._count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            for i in range(n):
                time.sleep(STEP)
                yield i
        finally:
            with self._count:
                self.inside -= 1

    async def consume(self, n: int, got: list[int]) -> None:
        async for item in iterate_in_thread(lambda: self._items(n), lock=self.lock):
            got.append(item)


async def _cancel_and_time(task: asyncio.Task[None]) -> float:
    t0 = time.monotonic()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return time.monotonic() - t0


async def test_waiting_for_a_model_another_session_holds_is_cancelled_at_once() -> None:
    model = FakeModel()
    first: list[int] = []
    holder = asyncio.create_task(model.consume(5, first))
    while not first:
        await asyncio.sleep(0.01)
    waiter = asyncio.create_task(model.consume(5, []))
    await asyncio.sleep(0.05)  # queued for the model behind the holder
    took = await _cancel_and_time(waiter)
    assert took < BOUND, f"a cancelled wait for the model took {took:.2f} s"
    assert not holder.done()  # the other session carries on
    await holder
    assert first == [0, 1, 2, 3, 4]
    assert not model.lock.locked


async def test_cancelling_mid_call_does_not_wait_for_the_thread_but_keeps_the_model() -> None:
    model = FakeModel()
    got: list[int] = []
    task = asyncio.create_task(model.consume(5, got))
    while not got:
        await asyncio.sleep(0.01)
    await asyncio.sleep(STEP / 3)  # the thread is inside the next model call
    took = await _cancel_and_time(task)
    assert took < BOUND, f"cancelling took {took:.2f} s: it waited for the worker thread"
    # The cancelled session's thread is still in the model: the next caller waits for it.
    assert model.lock.locked and model.inside == 1
    after: list[int] = []
    await asyncio.wait_for(model.consume(2, after), 3 * STEP + 1)
    assert after == [0, 1]
    assert model.most_inside == 1  # never two callers in the model at once
    assert not model.lock.locked


async def test_errors_in_the_thread_reach_the_consumer_and_free_the_model() -> None:
    lock = ModelLock()

    def broken() -> Iterator[int]:
        yield 1
        raise ValueError("model failed")

    got: list[int] = []
    with pytest.raises(ValueError, match="model failed"):
        async for item in iterate_in_thread(broken, lock=lock):
            got.append(item)
    assert got == [1]
    for _ in range(50):
        if not lock.locked:
            break
        await asyncio.sleep(0.01)
    assert not lock.locked


def test_the_lock_serves_sessions_on_different_event_loops() -> None:
    """Sessions of one process may run on different loops; a model lock is shared by all."""
    model = FakeModel()
    results: list[list[int]] = [[], []]

    def session(i: int) -> None:
        asyncio.run(model.consume(2, results[i]))

    threads = [threading.Thread(target=session, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [[0, 1], [0, 1]]
    assert model.most_inside == 1 and not model.lock.locked


@pytest.mark.slow
async def test_llamacpp_a_cancelled_chat_does_not_wait_for_another_sessions_generation() -> None:
    """The real backend: one session generates, another waits for the model and is
    cancelled (an interruption); then the generating one is cancelled mid-reply."""
    from voiceagent import registry
    from voiceagent.backends import ChatMessage

    llm = registry.get("llm", "llamacpp", max_tokens=120)
    messages = [ChatMessage("user", "Tell me a long story about a dragon.")]
    tokens: list[str] = []

    async def chat(out: list[str]) -> None:
        async for delta in llm.chat(messages):
            out.append(delta.text)

    generating = asyncio.create_task(chat(tokens))
    while not tokens:
        await asyncio.sleep(0.01)
    waiting = asyncio.create_task(chat([]))
    await asyncio.sleep(0.1)
    waited = await _cancel_and_time(waiting)
    assert not generating.done(), "the first reply finished too soon to test anything"
    mid_reply = await _cancel_and_time(generating)
    print(f"\ncancel while another session generates: {waited * 1000:.1f} ms; "
          f"cancel mid-reply: {mid_reply * 1000:.1f} ms")
    assert waited < BOUND and mid_reply < BOUND
    # The model is free again once the cancelled thread has stopped at its next token.
    again: list[str] = []
    await asyncio.wait_for(chat(again), 60)
    assert again
