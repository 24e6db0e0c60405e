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

from voiceagent.threads import ModelLock, ModelTurn, Priority, iterate_in_thread

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
        self.enter()
        try:
            for i in range(n):
                time.sleep(STEP)
                yield i
        finally:
            self.leave()

    def enter(self) -> None:
        with self._count:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)

    def leave(self) -> None:
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


async def _queue(lock: ModelLock, order: list[str], name: str, priority: int) -> None:
    await lock.acquire(priority)
    order.append(name)
    lock.release()


async def test_the_lock_serves_the_more_urgent_first_and_in_arrival_order_within_a_priority(
) -> None:
    lock = ModelLock()
    await lock.acquire()
    order: list[str] = []
    waiters = []
    for name, priority in [("later1", Priority.LATER), ("first1", Priority.FIRST_AUDIO),
                           ("later2", Priority.LATER), ("first2", Priority.FIRST_AUDIO)]:
        waiters.append(asyncio.create_task(_queue(lock, order, name, priority)))
        await asyncio.sleep(0)  # queued in this order
    assert lock.waiting == 4
    assert lock.waiting_from(Priority.FIRST_AUDIO)
    lock.release()
    await asyncio.gather(*waiters)
    assert order == ["first1", "first2", "later1", "later2"]
    assert not lock.locked and lock.waiting == 0


async def test_a_cancelled_urgent_waiter_leaves_the_queue_and_the_next_gets_the_model() -> None:
    lock = ModelLock()
    await lock.acquire()
    order: list[str] = []
    urgent = asyncio.create_task(_queue(lock, order, "urgent", Priority.FIRST_AUDIO))
    later = asyncio.create_task(_queue(lock, order, "later", Priority.LATER))
    await asyncio.sleep(0)
    took = await _cancel_and_time(urgent)
    assert took < BOUND and not lock.waiting_from(Priority.FIRST_AUDIO)
    lock.release()
    await asyncio.wait_for(later, 1)
    assert order == ["later"] and not lock.locked


class LendingModel(FakeModel):
    """Long generations that lend the model, between items, to whoever waits at their
    priority or above (what the llama.cpp backend does at clause boundaries)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []  # the items made, and the lending, in order

    def _lending(self, name: str, n: int, turn: ModelTurn) -> Iterator[str]:
        for i in self._items(n):
            self.log.append(f"{name}{i}")
            yield f"{name}{i}"
            turn.priority = Priority.LATER  # past its first item
            if turn.others_waiting():
                self.log.append(f"{name} lends")
                self.leave()  # (out of the model while it is lent)
                if not turn.give_way():
                    self.log.append(f"{name} stopped while lent")
                    with self._count:
                        self.inside += 1  # (balances the leave of _items' end)
                    return
                self.enter()

    async def consume_lending(self, name: str, n: int, got: list[str]) -> None:
        turn = ModelTurn(self.lock, Priority.FIRST_AUDIO)
        async for item in iterate_in_thread(lambda: self._lending(name, n, turn), lock=turn):
            got.append(item)


async def test_a_long_run_lends_the_model_to_a_new_caller_and_then_they_take_turns() -> None:
    model = LendingModel()
    long: list[str] = []
    holder = asyncio.create_task(model.consume_lending("long", 4, long))
    while not long:
        await asyncio.sleep(0.01)
    new: list[str] = []
    await asyncio.wait_for(model.consume_lending("new", 2, new), 6 * STEP + 1)
    assert not holder.done(), "the new caller waited for the whole long run"
    await holder
    assert long == ["long0", "long1", "long2", "long3"] and new == ["new0", "new1"]
    made = [e for e in model.log if "lends" not in e]
    # the new caller's first item after at most one more of the long run, then item by item
    assert made in (["long0", "new0", "long1", "new1", "long2", "long3"],
                    ["long0", "long1", "new0", "long2", "new1", "long3"]), made
    assert model.most_inside == 1 and not model.lock.locked


async def test_a_run_cancelled_while_it_lends_the_model_stops_at_once_and_takes_nothing_back(
) -> None:
    model = LendingModel()
    long: list[str] = []
    holder = asyncio.create_task(model.consume_lending("long", 4, long))
    while not long:
        await asyncio.sleep(0.01)
    new = asyncio.create_task(model.consume_lending("new", 3, []))
    while "long lends" not in model.log:
        await asyncio.sleep(0.01)
    await asyncio.sleep(STEP / 3)  # the new caller is inside its first item
    took = await _cancel_and_time(holder)  # waiting to have the model back
    assert took < BOUND, f"cancelling a run that lent the model took {took:.2f} s"
    await asyncio.wait_for(new, 3 * STEP + 1)
    for _ in range(50):
        if "long stopped while lent" in model.log:
            break
        await asyncio.sleep(0.01)
    assert "long stopped while lent" in model.log
    assert "new lends" not in model.log  # nobody waited for the model after the cancel
    assert not model.lock.locked and model.lock.waiting == 0 and model.most_inside == 1


def test_give_way_belongs_to_a_running_worker() -> None:
    with pytest.raises(RuntimeError, match="outside"):
        ModelTurn(ModelLock()).give_way()


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


class CoreSharingModel(FakeModel):
    """A model with a lock of its own on cores shared with other models. A run past its
    first item hands the cores to more urgent work between items, as llama.cpp's generation
    does between tokens."""

    def __init__(self, cores: ModelLock, log: list[str]) -> None:
        super().__init__()
        self.lock = ModelLock(cores=cores)
        self.log = log

    def _yielding(self, name: str, n: int, turn: ModelTurn) -> Iterator[str]:
        for i in range(n):
            time.sleep(STEP / 3)
            self.log.append(f"{name}{i}")
            yield f"{name}{i}"
            turn.priority = Priority.LATER
            if turn.urgent_waiting():
                self.log.append(f"{name} yields")
                if not turn.yield_cores():
                    self.log.append(f"{name} stopped while yielding")
                    return

    async def run(self, name: str, n: int, priority: int, got: list[str]) -> None:
        turn = ModelTurn(self.lock, priority)
        async for item in iterate_in_thread(lambda: self._yielding(name, n, turn), lock=turn):
            got.append(item)


async def test_models_take_turns_on_shared_cores_and_urgent_work_goes_first() -> None:
    cores, log = ModelLock(), []
    llm, tts = CoreSharingModel(cores, log), CoreSharingModel(cores, log)
    long: list[str] = []
    generation = asyncio.create_task(llm.run("llm", 6, Priority.FIRST_AUDIO, long))
    while len(long) < 2:
        await asyncio.sleep(0.01)
    assert not cores.busy_from(Priority.FIRST_AUDIO)  # past its first item: LATER work
    speech: list[str] = []
    await asyncio.wait_for(tts.run("tts", 2, Priority.FIRST_AUDIO, speech), 4 * STEP)
    assert not generation.done() and llm.lock.locked  # it kept its model meanwhile
    await generation
    # the urgent run started after at most one more item and ran alone on the cores
    start = log.index("tts0")
    assert log[start - 1] == "llm yields" and log[start + 1] == "tts1", log
    assert long == [f"llm{i}" for i in range(6)] and speech == ["tts0", "tts1"]
    assert not cores.locked and not llm.lock.locked and not tts.lock.locked


async def test_a_run_cancelled_while_it_yields_the_cores_stops_at_once_and_frees_its_model(
) -> None:
    cores, log = ModelLock(), []
    llm, tts = CoreSharingModel(cores, log), CoreSharingModel(cores, log)
    long: list[str] = []
    generation = asyncio.create_task(llm.run("llm", 6, Priority.LATER, long))
    while not long:
        await asyncio.sleep(0.01)
    urgent = asyncio.create_task(tts.run("tts", 3, Priority.FIRST_AUDIO, []))
    while "llm yields" not in log:
        await asyncio.sleep(0.01)
    took = await _cancel_and_time(generation)
    assert took < BOUND, f"cancelling a run that yielded the cores took {took:.2f} s"
    await asyncio.wait_for(urgent, 3 * STEP)
    for _ in range(50):
        if "llm stopped while yielding" in log and not llm.lock.locked:
            break
        await asyncio.sleep(0.01)
    assert "llm stopped while yielding" in log
    assert not llm.lock.locked and not cores.locked and cores.waiting == 0


async def test_cores_are_shared_by_units_and_the_most_urgent_waiter_is_not_overtaken() -> None:
    cores = ModelLock(capacity=2)
    one, two = object(), object()
    await cores.acquire(Priority.LATER, units=1, holder=one)
    await cores.acquire(Priority.FIRST_AUDIO, units=1, holder=two)  # a second core is free
    assert cores.busy_from(Priority.FIRST_AUDIO) and cores.waiting == 0
    order: list[str] = []

    async def take(name: str, priority: int, units: int) -> None:
        await cores.acquire(priority, units=units, holder=name)
        order.append(name)

    both = asyncio.create_task(take("both cores", Priority.FIRST_SOUND, 2))
    await asyncio.sleep(0.01)
    small = asyncio.create_task(take("one core", Priority.LATER, 1))
    cores.release(one)  # a core is free, but the urgent waiter needs two: nobody overtakes it
    await asyncio.sleep(0.01)
    assert order == [] and cores.waiting == 2
    cores.release(two)
    await asyncio.wait_for(both, 1)
    assert order == ["both cores"]
    cores.release("both cores")
    await asyncio.wait_for(small, 1)
    cores.release("one core")
    assert order == ["both cores", "one core"] and not cores.locked
    with pytest.raises(RuntimeError, match="does not hold"):
        cores.release("one core")
