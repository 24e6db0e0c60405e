"""Run awaitables together until the first one finishes; the rest are cancelled and awaited.

A conversation lasts until whichever comes first: the session drains, the caller hangs up,
the socket closes. Every such wait leaves no task behind, also when it is cancelled itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable


async def race(*aws: Awaitable[object], timeout: float | None = None
               ) -> asyncio.Future[object] | None:
    """The first of ``aws`` to finish (its result or exception is the caller's to read), or
    None after ``timeout`` seconds. Either way the others are cancelled and awaited."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return next((task for task in tasks if task in done), None)
