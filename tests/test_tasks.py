"""Background tasks (voiceagent.tasks): failures reported, nothing left behind."""

from __future__ import annotations

import asyncio

from voiceagent.tasks import TaskSet


async def test_a_failed_task_is_logged_and_handed_to_its_owner(caplog):
    failed: list[tuple[str, str]] = []
    tasks = TaskSet(on_failure=lambda task, exc: failed.append((task.get_name(), str(exc))))

    async def boom() -> None:
        raise ValueError("no model")

    task = tasks.spawn(boom(), "loader")
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0)  # the done callback
    assert failed == [("loader", "no model")]
    assert "task loader failed" in caplog.text
    assert list(tasks) == []


async def test_cancel_all_also_cancels_tasks_spawned_while_cancelling():
    tasks = TaskSet()
    late: list[asyncio.Task] = []

    async def spawns_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            late.append(tasks.spawn(asyncio.sleep(60), "cleanup"))

    tasks.spawn(spawns_on_cancel(), "worker")
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.cancel_all(), 1)
    assert late and late[0].cancelled()
    assert list(tasks) == []
