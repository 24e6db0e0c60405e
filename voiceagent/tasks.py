"""Background tasks that nobody awaits: held until they finish (asyncio keeps only weak
references to tasks), a failure logged instead of lost, and cancelled to the last one,
including those spawned while the others were being cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

log = logging.getLogger(__name__)

FailureHandler = Callable[[asyncio.Task, BaseException], Any]


class TaskSet:
    def __init__(self, on_failure: FailureHandler | None = None) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._on_failure = on_failure  # after the failure is logged

    def __iter__(self) -> Iterator[asyncio.Task]:
        return iter(list(self._tasks))

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            log.error("task %s failed", task.get_name(), exc_info=exc)
            if self._on_failure is not None:
                self._on_failure(task, exc)

    async def cancel_all(self) -> None:
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
