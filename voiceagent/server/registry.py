"""The server's live sessions: at most ``max_sessions``, each served by a task it owns.
While it drains it takes no new ones."""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Conversation(Protocol):
    """What the registry serves: a browser's peer connection, a phone call's media stream.
    ``serve()`` lasts as long as the conversation and cleans up, also when cancelled."""

    session_id: str | None

    async def serve(self) -> None: ...


class SessionRegistry:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.sessions: dict[str, Conversation] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._reserved = 0  # sessions being set up: they count against the limit
        self.draining = False

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def full(self) -> bool:
        return len(self.sessions) + self._reserved >= self.max_sessions

    def reserve(self) -> bool:
        """Claim a place for a session about to be created; False when full or draining."""
        if self.full or self.draining:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        self._reserved -= 1

    def add(self, conversation: Conversation) -> asyncio.Task:
        """Serve a started conversation until it ends; then it leaves the registry."""
        sid = conversation.session_id
        assert sid is not None
        self.sessions[sid] = conversation
        task = asyncio.create_task(conversation.serve(), name=f"session-{sid}:serve")
        self._tasks[sid] = task
        task.add_done_callback(lambda t: self._forget(sid, t))
        return task

    def _forget(self, sid: str, task: asyncio.Task) -> None:
        self.sessions.pop(sid, None)
        self._tasks.pop(sid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s failed", sid, exc_info=task.exception())

    async def drain(self, timeout: float) -> None:
        """Take no new sessions and wait until those in progress (and those being set up)
        are over, for up to ``timeout`` seconds; :meth:`close_all` ends the rest."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._tasks or self._reserved) and (remaining := deadline - loop.time()) > 0:
            if self._tasks:  # short waits: a session being set up joins the tasks soon
                await asyncio.wait(list(self._tasks.values()), timeout=min(remaining, 0.2))
            else:
                await asyncio.sleep(min(remaining, 0.05))

    async def close_all(self) -> None:
        # A task cancelled before its first step never runs, so its conversation would
        # never close: let any just added start first.
        await asyncio.sleep(0)
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
