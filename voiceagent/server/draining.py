"""uvicorn for ``voiceagent serve``, with SIGTERM draining the sessions instead of cutting
them: the way a worker leaves a cluster (a rolling update, scaling in) without dropping
anyone's conversation."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

import uvicorn

from .registry import SessionRegistry


class DrainingServer(uvicorn.Server):
    """The first SIGTERM drains: the server keeps answering HTTP (``/health`` and offers
    say 503, so the load balancer moves on) while the sessions in progress go on for up to
    ``drain_timeout`` seconds; then it shuts down as usual (the rest are ended) and the
    process exits 0. A second SIGTERM, or Ctrl-C, stops at once."""

    def __init__(self, config: uvicorn.Config, registry: SessionRegistry,
                 drain_timeout: float) -> None:
        super().__init__(config)
        self.registry = registry
        self.drain_timeout = drain_timeout
        self._drain_asked = False  # set in the signal handler, acted on by the loop
        self._drain: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self._drain_asked:
            # not recorded as a captured signal: uvicorn would raise it again at the end,
            # and the process would die of it instead of exiting 0
            self._drain_asked = True
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self._drain_asked and self._drain is None:
            self._drain = asyncio.create_task(self._drain_then_exit(), name="serve-drain")
        return await super().on_tick(counter)

    async def _drain_then_exit(self) -> None:
        print(f"voiceagent: draining: no new sessions; {len(self.registry)} in progress get "
              f"up to {self.drain_timeout:g} s", flush=True)
        await self.registry.drain(self.drain_timeout)
        self.should_exit = True

    async def shutdown(self, sockets: list | None = None) -> None:
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
        await super().shutdown(sockets)
