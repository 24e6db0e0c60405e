"""The server's live sessions: at most ``max_sessions``, each served by a task it owns."""

from __future__ import annotations

import asyncio
import logging

from ..transports.webrtc_peer import WebRTCPeer

log = logging.getLogger(__name__)


class SessionRegistry:
    def __init__(self, max_sessions: int) -> None:
        self.max_sessions = max_sessions
        self.peers: dict[str, WebRTCPeer] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._reserved = 0  # offers being answered: they count against the limit

    def __len__(self) -> int:
        return len(self.peers)

    def reserve(self) -> bool:
        """Claim a place for a session about to be created; False when full."""
        if len(self.peers) + self._reserved >= self.max_sessions:
            return False
        self._reserved += 1
        return True

    def release(self) -> None:
        self._reserved -= 1

    def add(self, peer: WebRTCPeer) -> None:
        """Serve an accepted peer until it ends; then it leaves the registry."""
        sid = peer.session_id
        assert sid is not None
        self.peers[sid] = peer
        task = asyncio.create_task(peer.serve(), name=f"session-{sid}:peer")
        self._tasks[sid] = task
        task.add_done_callback(lambda t: self._forget(sid, t))

    def _forget(self, sid: str, task: asyncio.Task) -> None:
        self.peers.pop(sid, None)
        self._tasks.pop(sid, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("session %s failed", sid, exc_info=task.exception())

    async def close_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
