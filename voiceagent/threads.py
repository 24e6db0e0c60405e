"""Run blocking model code off the event loop, without ever waiting for a thread to stop.

:func:`iterate_in_thread` turns a blocking generator (llama.cpp tokens, Piper sentences) into
an async iterator. The generator runs in its own thread; items cross to the loop as they are
made. Closing the async iterator (or cancelling its consumer) asks the thread to stop at the
next item and returns at once: a cancelled reply never waits for a model call to end.

A model that takes one caller at a time (a llama.cpp context, Piper's phonemizer) is guarded
by a :class:`ModelLock`: the wait for it is an asyncio wait that cancellation ends at once,
and the worker thread itself releases it when it is done with the model, so a cancelled
consumer's thread still keeps the next one out until it has really stopped.

The lock serves waiters by :class:`Priority`, FIFO within one: the steps to a reply's first
audio go before other replies' later sentences, so a caller who speaks while others are
answered waits for a clause, not for whole replies. A worker that holds the model through a
long generation can lend it between two items (:meth:`ModelTurn.give_way`) to those waiting,
and queues to have it back.

The models of one process also share the CPU's cores, and more runs than cores only slow
each other down. A model's lock can name the cores it runs on (:data:`CPU_CORES`, a lock with
one unit per core) and how many its runs use (llama.cpp and Whisper one thread, Piper all);
a run then holds its model and its cores, and runs take the cores by the same priorities.
A long generation past its first clause hands its cores over between two tokens
(:meth:`ModelTurn.yield_cores`) when more urgent work waits for them, e.g. the speech of its
own reply's first clause, and takes them back after.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar, cast

from .tasks import TaskSet

T = TypeVar("T")

_DONE = object()


class Priority(IntEnum):
    """How urgently a caller needs a shared model; higher is served first. What a listener
    waits for in silence is urgent, and the nearer to sound a step is, the sooner it goes:
    when several callers wait at once, one is answered after another instead of all of them
    late, as their steps would finish if they took turns in arrival order."""

    #: a reply's later sentences, a transcript nobody waits for yet
    LATER = 0
    #: the first step of a reply's first audio: the final transcript of the turn
    FIRST_AUDIO = 1
    #: a reply's prompt and first clause
    FIRST_CLAUSE = 2
    #: the speech of a reply's first clause
    FIRST_SOUND = 3


class ModelLock:
    """One user of a shared model at a time (or, with ``capacity``, users taking up to that
    many units, e.g. the cores of :data:`CPU_CORES`); awaited on any event loop, released
    from any thread. Sessions in one process may run on different loops (tests do), so this is
    not an :class:`asyncio.Lock`, which binds to one loop. Waiters of a higher priority go
    first, first come first served within a priority; a waiter that does not fit yet holds
    back those behind it."""

    def __init__(self, cores: ModelLock | None = None, *, capacity: int = 1,
                 cores_used: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("a lock's capacity must be at least 1")
        #: the shared compute a run on this model holds as well (None: none), and how many of
        #: its units a run takes (None: all)
        self.cores = cores
        self.cores_used = cores_used
        self.capacity = capacity
        self._mutex = threading.Lock()
        self._holds: list[_Hold] = []  # each run holding it
        self._used = 0
        #: priority -> its waiters, in arrival order
        self._waiters: dict[int, deque[_Waiter]] = {}
        #: callers that found the model busy, and the seconds they waited (for metrics)
        self.waits = 0
        self.waited = 0.0

    @property
    def waiting(self) -> int:
        """Callers waiting for the model now."""
        return sum(len(q) for q in self._waiters.values())

    @property
    def locked(self) -> bool:
        return bool(self._holds)

    def waiting_from(self, priority: int) -> bool:
        """Whether a caller at ``priority`` or a more urgent one waits (from any thread)."""
        with self._mutex:
            return self._queued_from(priority)

    def busy_from(self, priority: int) -> bool:
        """Whether a run at ``priority`` or a more urgent one holds or waits for it."""
        with self._mutex:
            return (any(hold.priority >= priority for hold in self._holds)
                    or self._queued_from(priority))

    def _queued_from(self, priority: int) -> bool:  # (holding the mutex)
        return any(q for p, q in self._waiters.items() if p >= priority)

    def holder_priority(self, priority: int, holder: object = None) -> None:
        """(From the run that holds it.) The run's priority changed."""
        with self._mutex:
            self._hold_of(holder).priority = priority

    async def acquire(self, priority: int = Priority.LATER, *, units: int = 1,
                      holder: object = None) -> None:
        """Wait for ``units`` (at most the capacity) at ``priority``; ``holder`` names the
        run for :meth:`release` where several may hold it at once."""
        units = min(units, self.capacity)
        with self._mutex:
            if self._used + units <= self.capacity and not self._queued_from(priority):
                self._take(holder, priority, units)
                return
            waiter = _Waiter(asyncio.get_running_loop().create_future(), holder, units)
            self._waiters.setdefault(priority, deque()).append(waiter)
            self.waits += 1
        since = time.monotonic()
        try:
            await waiter.future
        except asyncio.CancelledError:
            with self._mutex:
                queue_ = self._waiters.get(priority, deque())
                queued = waiter in queue_
                if queued:
                    queue_.remove(waiter)
            if queued:
                self._grant()  # it may have held back smaller waiters behind it
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release(holder)  # handed over just as we were cancelled: pass it on
            # (handed over but cancelled first: _hand_over passes it on)
            raise
        finally:
            with self._mutex:
                self.waited += time.monotonic() - since

    def release(self, holder: object = None) -> None:
        """Give back ``holder``'s units; the most urgent waiters that fit get them (callable
        from any thread)."""
        with self._mutex:
            self._drop(holder)
        self._grant()

    def _take(self, holder: object, priority: int, units: int) -> None:
        self._holds.append(_Hold(holder, priority, units))
        self._used += units

    def _hold_of(self, holder: object) -> _Hold:
        hold = next((h for h in self._holds if h.holder is holder), None)
        if hold is None:
            raise RuntimeError("released or changed by a run that does not hold it")
        return hold

    def _drop(self, holder: object) -> None:
        hold = self._hold_of(holder)
        self._holds.remove(hold)
        self._used -= hold.units

    def _grant(self) -> None:
        while True:
            with self._mutex:
                waiter = None
                for priority in sorted(self._waiters, reverse=True):
                    queue_ = self._waiters[priority]
                    if queue_:
                        if self._used + queue_[0].units <= self.capacity:
                            waiter = queue_.popleft()
                            self._take(waiter.holder, priority, waiter.units)
                        break  # the most urgent waiter fits or holds the rest back
                if waiter is None:
                    return
            try:
                waiter.future.get_loop().call_soon_threadsafe(self._hand_over, waiter)
            except RuntimeError:  # that waiter's loop is closed: its units go back
                with self._mutex:
                    self._drop(waiter.holder)

    def _hand_over(self, waiter: _Waiter) -> None:
        if waiter.future.done():  # cancelled while the hand-over was on its way
            self.release(waiter.holder)
        else:
            waiter.future.set_result(None)


@dataclass(eq=False)
class _Hold:
    holder: object  # who releases it (None: an anonymous caller of a one-unit lock)
    priority: int
    units: int


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[None]
    holder: object
    units: int


#: the CPU cores of this process, shared by its in-process models (see the module docstring)
CPU_CORES = ModelLock(capacity=os.cpu_count() or 1)


class ModelTurn:
    """One run's hold on a :class:`ModelLock` (and the cores it names) at a ``priority`` the
    worker may lower as it goes (a reply past its first clause). Pass it as ``lock=`` to
    :func:`iterate_in_thread`; the generator, in the worker thread, may lend the model or the
    cores between two items."""

    def __init__(self, lock: ModelLock, priority: int = Priority.LATER) -> None:
        self.lock = lock
        #: what the run holds, in the order it takes them
        self.locks = (lock,) if lock.cores is None else (lock, lock.cores)
        self._priority = priority
        #: set while iterate_in_thread runs: lend these locks, block until they are back
        self._lend: Callable[[tuple[ModelLock, ...]], bool] | None = None

    @property
    def priority(self) -> int:
        return self._priority

    @priority.setter
    def priority(self, priority: int) -> None:
        """(In the worker thread, holding the locks.)"""
        self._priority = priority
        for lock in self.locks:
            lock.holder_priority(priority, self)

    def units(self, lock: ModelLock) -> int:
        """What the run takes of ``lock``: the model, or as many cores as the model uses."""
        if lock is self.lock or self.lock.cores_used is None:
            return lock.capacity
        return self.lock.cores_used

    def others_waiting(self) -> bool:
        """Whether a caller as urgent as this run, or more, waits for the model: a run that
        gives way then lets the more urgent go first and takes turns with its equals."""
        return self.lock.waiting_from(self.priority)

    def give_way(self) -> bool:
        """(In the worker thread, holding the model.) Release it, queue again at this run's
        priority and block until the run has it back: True. False when the consumer went away
        meanwhile: the model is not held, the generator must stop without touching it."""
        return self._lent(self.locks)

    def urgent_waiting(self) -> bool:
        """Whether more urgent work than this run waits for its cores."""
        cores = self.lock.cores
        return cores is not None and cores.waiting_from(self.priority + 1)

    def yield_cores(self) -> bool:
        """(In the worker thread.) Like :meth:`give_way`, for the cores alone: the model
        stays this run's, its state untouched, while more urgent work computes."""
        return self._lent(self.locks[1:])

    def _lent(self, locks: tuple[ModelLock, ...]) -> bool:
        if self._lend is None:
            raise RuntimeError("lending outside iterate_in_thread's worker")
        return self._lend(locks)


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

    async def regain(locks: tuple[ModelLock, ...]) -> None:
        assert turn is not None
        await _acquire_all(turn, locks)
        regained.put(True)  # the worker holds them from here

    def queue_for(locks: tuple[ModelLock, ...]) -> None:
        # (on the loop) in the queue now, not when the consumer reads
        if not stop.is_set():
            regaining.spawn(regain(locks), "voiceagent-regain-model")

    def lend(locks: tuple[ModelLock, ...]) -> bool:
        nonlocal holding
        assert turn is not None
        if not locks:
            return not stop.is_set()
        kept = turn.locks[:len(turn.locks) - len(locks)]  # lent: a tail of what it holds
        _release_all(turn, locks)
        holding = False
        # The wait to have it back is an asyncio wait, which closing the iterator ends at once.
        try:
            loop.call_soon_threadsafe(queue_for, locks)
        except RuntimeError:  # the loop closed under us
            _release_all(turn, kept)
            return False
        holding = regained.get()
        if not holding:
            _release_all(turn, kept)  # the worker stops: what it kept goes too
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
                _release_all(turn, turn.locks)
        put(end)

    if turn is not None:
        await _acquire_all(turn, turn.locks)
        turn._lend = lend
    try:
        threading.Thread(target=work, name="voiceagent-worker", daemon=True).start()
    except BaseException:
        if turn is not None:
            _release_all(turn, turn.locks)
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


async def _acquire_all(turn: ModelTurn, locks: tuple[ModelLock, ...]) -> None:
    """Take ``locks`` for ``turn`` in order (always the same order: no two runs wait on each
    other); cancelled half way, it gives back what it took."""
    taken: list[ModelLock] = []
    try:
        for lock in locks:
            await lock.acquire(turn.priority, units=turn.units(lock), holder=turn)
            taken.append(lock)
    except BaseException:
        _release_all(turn, tuple(taken))
        raise


def _release_all(turn: ModelTurn, locks: tuple[ModelLock, ...]) -> None:
    for lock in reversed(locks):
        lock.release(turn)
