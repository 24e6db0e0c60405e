"""Run blocking model code off the event loop, without ever waiting for a thread to stop.

:func:`iterate_in_thread` turns a blocking generator (llama.cpp tokens, Piper sentences) into
an async iterator. The generator runs in its own thread; items cross to the loop as they are
made. Closing the async iterator (or cancelling its consumer) asks the thread to stop at the
next item and returns at once: a cancelled reply never waits for a model call to end.

A model that takes one caller at a time (a llama.cpp context, Piper's phonemizer) is guarded
by a :class:`ModelLock`: the wait for it is an asyncio wait that cancellation ends at once,
and the worker thread itself releases it when it is done with the model, so a cancelled
consumer's thread still keeps the next one out until it has really stopped.

The lock serves waiters by priority, FIFO within one: the first audio of a reply
(:attr:`Priority.FIRST_AUDIO`) goes before other replies' later sentences, so a caller who
speaks while others are answered waits for a clause, not for whole replies. A worker that
holds the model through a long generation can lend it between two items
(:meth:`ModelTurn.give_way`) to those waiting, and queues to have it back.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from enum import IntEnum
from typing import TypeVar, cast

from .tasks import TaskSet

T = TypeVar("T")

_DONE = object()


class Priority(IntEnum):
    """How urgently a caller needs a shared model; higher is served first."""

    #: a reply's later sentences
    LATER = 0
    #: what a listener waits for in silence: a reply's prompt and first clause
    FIRST_AUDIO = 1


class ModelLock:
    """One user of a shared model at a time; awaited on any event loop, released from any
    thread. Sessions in one process may run on different loops (tests do), so this is not an
    :class:`asyncio.Lock`, which binds to one loop. Waiters of a higher priority go first;
    within a priority, first come first served."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        #: priority -> its waiters, in arrival order
        self._waiters: dict[int, deque[asyncio.Future[None]]] = {}
        #: callers that found the model busy, and the seconds they waited (for metrics)
        self.waits = 0
        self.waited = 0.0

    @property
    def waiting(self) -> int:
        """Callers waiting for the model now."""
        return sum(len(q) for q in self._waiters.values())

    @property
    def locked(self) -> bool:
        return self._held

    def waiting_from(self, priority: int) -> bool:
        """Whether a caller at ``priority`` or a more urgent one waits (from any thread)."""
        with self._mutex:
            return any(q for p, q in self._waiters.items() if p >= priority)

    async def acquire(self, priority: int = Priority.LATER) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(priority, deque()).append(waiter)
            self.waits += 1
        since = time.monotonic()
        try:
            await waiter
        except asyncio.CancelledError:
            with self._mutex:
                queue_ = self._waiters.get(priority, deque())
                queued = waiter in queue_
                if queued:
                    queue_.remove(waiter)
            if not queued and waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            # (handed over but cancelled first: _hand_over passes it on)
            raise
        finally:
            with self._mutex:
                self.waited += time.monotonic() - since

    def release(self) -> None:
        """Give the model to the most urgent waiter (callable from any thread)."""
        while True:
            with self._mutex:
                waiters = next((self._waiters[p] for p in sorted(self._waiters, reverse=True)
                                if self._waiters[p]), None)
                if waiters is None:
                    self._held = False
                    return
                waiter = waiters.popleft()
            try:
                waiter.get_loop().call_soon_threadsafe(self._hand_over, waiter)
                return
            except RuntimeError:  # that waiter's loop is closed: try the next one
                continue

    def _hand_over(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done():  # cancelled while the hand-over was on its way
            self.release()
        else:
            waiter.set_result(None)


class ModelTurn:
    """One run's hold on a :class:`ModelLock` at a ``priority`` the worker may lower as it
    goes (a reply past its first clause). Pass it as ``lock=`` to :func:`iterate_in_thread`;
    the generator, in the worker thread, may lend the model between two items."""

    def __init__(self, lock: ModelLock, priority: int = Priority.LATER) -> None:
        self.lock = lock
        self.priority = priority
        self._lend: Callable[[], bool] | None = None  # set while iterate_in_thread runs

    def others_waiting(self) -> bool:
        """Whether a caller as urgent as this run, or more, waits for the model: a run that
        gives way then lets the more urgent go first and takes turns with its equals."""
        return self.lock.waiting_from(self.priority)

    def give_way(self) -> bool:
        """(In the worker thread, holding the model.) Release it, queue again at this run's
        priority and block until the run has it back: True. False when the consumer went away
        meanwhile: the model is not held, the generator must stop without touching it."""
        if self._lend is None:
            raise RuntimeError("give_way() outside iterate_in_thread's worker")
        return self._lend()


async def iterate_in_thread(make: Callable[[], Iterator[T]], *,
                            lock: ModelLock | ModelTurn | None = None) -> AsyncIterator[T]:
    """The items of ``make()``, run in a worker thread (holding ``lock`` while it runs; a
    :class:`ModelTurn` asks for it at its priority and may lend it between items)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()
    turn = ModelTurn(lock) if isinstance(lock, ModelLock) else lock
    #: the answer to a lent model: True once it is the worker's again, False to stop
    regained: queue.SimpleQueue[bool] = queue.SimpleQueue()
    regaining = TaskSet()  # the asyncio waits to have a lent model back
    holding = turn is not None  # (the worker's view) whether it holds the model

    def put(item: object) -> bool:
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
            return True
        except RuntimeError:  # the loop closed under us; nobody is listening any more
            stop.set()
            return False

    async def regain() -> None:
        assert turn is not None
        await turn.lock.acquire(turn.priority)
        regained.put(True)  # the worker holds it from here

    def queue_for_it() -> None:  # (on the loop) in the queue now, not when the consumer reads
        if not stop.is_set():
            regaining.spawn(regain(), "voiceagent-regain-model")

    def lend() -> bool:
        nonlocal holding
        assert turn is not None
        holding = False
        turn.lock.release()
        # The wait to have it back is an asyncio wait, which closing the iterator ends at once.
        try:
            loop.call_soon_threadsafe(queue_for_it)
        except RuntimeError:  # the loop closed under us
            return False
        holding = regained.get()
        return holding

    def work() -> None:
        end: object = _DONE
        try:
            iterator = make()
            try:
                for item in iterator:
                    if stop.is_set():
                        break
                    put(item)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # handed to the consumer, raised there
            end = exc
        finally:  # the model is free by the time the consumer hears of the end
            if holding and turn is not None:
                turn.lock.release()
        put(end)

    if turn is not None:
        await turn.lock.acquire(turn.priority)
        turn._lend = lend
    try:
        threading.Thread(target=work, name="voiceagent-worker", daemon=True).start()
    except BaseException:
        if turn is not None:
            turn.lock.release()
        raise
    try:
        while True:
            item = await items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(T, item)
    finally:
        stop.set()  # the thread stops at its next item and releases the model itself
        await regaining.cancel_all()
        regained.put(False)  # a worker waiting to have the model back stops instead
