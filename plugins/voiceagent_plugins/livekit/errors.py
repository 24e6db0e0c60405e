"""voiceagent failures as LiveKit's error types, so LiveKit's retry and error reporting
(the ``error`` event, ``recoverable``) treat them as they treat a provider's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from livekit.agents import APIConnectionError, APIError, APITimeoutError


@asynccontextmanager
async def as_api_errors(what: str, timeout: float, *,
                        retryable: bool) -> AsyncIterator[None]:
    """Bound the block by ``timeout`` seconds and raise what fails in it as an ``APIError``
    naming ``what`` (``retryable``: whether a fresh attempt may succeed). Cancellation
    passes through untouched."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except APIError:
        raise
    except TimeoutError:
        raise APITimeoutError(f"{what} gave no result within {timeout:g} s",
                              retryable=retryable) from None
    except Exception as exc:  # noqa: BLE001 (a backend may raise anything)
        raise APIConnectionError(f"{what} failed: {type(exc).__name__}: {exc}",
                                 retryable=retryable) from exc
