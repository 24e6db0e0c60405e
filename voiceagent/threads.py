"""Run blocking model code off the event loop, without ever waiting for a thread to stop.

:func:`iterate_in_thread` turns a blocking generator (llama.cpp tokens, Piper sentences) into
an async iterator. The generator runs in its own thread; items cross to the loop as they are
made. Closing the async iterator (or cancelling its consumer) asks the thread to stop at the
next item and returns at once: a cancelled reply never waits for a model call to end.

A model that takes one caller at a time (a llama.cpp context, Piper's phonemizer) is guarded
by a :class:`ModelLock`: the wait for it is an asyncio wait that cancellation ends at once,
and the worker thread itself releases it when it is done with the model, so a cancelled
consumer's thread still keeps the next one out until it has really stopped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar, cast

T = TypeVar("T")

_DONE = object()


class ModelLock:
    """One user of a shared model at a time; awaited on any event loop, released from any
    thread. Sessions in one process may run on different loops (tests do), so this is not an
    :class:`asyncio.Lock`, which binds to one loop."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: callers that found the model busy, and the seconds they waited (for metrics)
        self.waits = 0
        self.waited = 0.0

    @property
    def waiting(self) -> int:
        """Callers waiting for the model now."""
        return len(self._waiters)

    @property
    def locked(self) -> bool:
        return self._held

    async def acquire(self) -> None:
        with self._mutex:
            if not self._held:
                self._held = True
                return
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self.waits += 1
        since = time.monotonic()
        try:
            await waiter
        except asyncio.CancelledError:
            with self._mutex:
                queued = waiter in self._waiters
                if queued:
                    self._waiters.remove(waiter)
            if not queued and waiter.done() and not waiter.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            # (handed over but cancelled first: _hand_over passes it on)
            raise
        finally:
            with self._mutex:
                self.waited += time.monotonic() - since

    def release(self) -> None:
        """Give the model to the next waiter (callable from any thread)."""
        while True:
            with self._mutex:
                if not self._waiters:
                    self._held = False
                    return
                waiter = self._waiters.popleft()
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


async def iterate_in_thread(make: Callable[[], Iterator[T]], *,
                            lock: ModelLock | None = None) -> AsyncIterator[T]:
    """The items of ``make()``, run in a worker thread (holding ``lock`` while it runs)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def put(item: object) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop closed under us; nobody is listening any more
            stop.set()

    def work() -> None:
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
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            if lock is not None:
                lock.release()

    if lock is not None:
        await lock.acquire()
    try:
        threading.Thread(target=work, name="voiceagent-worker", daemon=True).start()
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(T, item)
    finally:
        stop.set()  # the thread stops at its next item and releases the model itself
