"""Phone audio at the session's edges, shared by the SIP bridge and the media streams.

A call carries 8 kHz G.711. The caller's audio is decoded by the transport and handed to a
:class:`~voiceagent.transports.base.LiveAudioInput` (which converts it once to 16 kHz); the
agent's voice is converted once to 8 kHz by :class:`CallAudioOutput`, which paces it out in
20 ms frames and gives each, encoded, to the transport's ``send``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from ..frames import InterruptionFrame, SystemFrame
from ..runtime import SessionRuntime
from ..transports.base import AudioSinkNode, LiveAudioInput
from . import g711

log = logging.getLogger(__name__)

TELEPHONE_RATE = 8000
#: Samples in one 20 ms frame at 8 kHz (one RTP packet, one media message).
FRAME_SAMPLES = 160
#: A call's audio flows all the time, silence included; this long without any means the
#: caller's side is gone or broken.
INPUT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Codec:
    name: str
    payload_type: int  # the static RTP payload type (RFC 3551)
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]


PCMU = Codec("PCMU", 0, g711.encode_ulaw, g711.decode_ulaw)
PCMA = Codec("PCMA", 8, g711.encode_alaw, g711.decode_alaw)
CODECS = {c.name: c for c in (PCMU, PCMA)}


class PushedAudioInput(LiveAudioInput):
    """Caller audio that a transport pushes in as it arrives (a media-stream WebSocket).

    At most ``max_queued`` pieces wait (the oldest go first when the session falls behind);
    the input ends after ``timeout`` seconds with nothing pushed (the transport ends the
    session itself when the caller hangs up).
    """

    peer = "the caller"
    transport = "media_stream"

    def __init__(self, runtime: SessionRuntime, *, rate: int = TELEPHONE_RATE,
                 timeout: float = INPUT_TIMEOUT, max_queued: int = 100) -> None:
        super().__init__(runtime, input_timeout=timeout)
        self.rate = rate
        self._queue: asyncio.Queue[np.ndarray] = asyncio.Queue(max_queued)

    def push(self, samples: np.ndarray) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(samples)

    async def receive(self) -> tuple[np.ndarray, int] | None:
        return await self._queue.get(), self.rate


class CallAudioOutput(AudioSinkNode):
    """The agent's voice at 8 kHz, one encoded 20 ms frame at a time, paced on the session
    clock. ``send(payload, speaking)`` gets every frame (``speaking`` is False for the
    silence between replies, which RTP sends and a media stream may skip); ``on_cut()`` runs
    when a reply is interrupted, for transports that must flush audio the far end buffered.
    """

    paced = True

    def __init__(self, runtime: SessionRuntime, codec: Codec,
                 send: Callable[[bytes, bool], Awaitable[None] | None],
                 on_cut: Callable[[], Awaitable[None] | None] | None = None) -> None:
        super().__init__(TELEPHONE_RATE, runtime)
        self.codec = codec
        self._send = send
        self._on_cut = on_cut

    async def write(self, samples: np.ndarray, ts: float) -> None:
        speaking = self.activity.speaking or bool(np.any(samples))
        result = self._send(self.codec.encode(samples), speaking)
        if result is not None:
            await result

    async def on_system(self, frame: SystemFrame) -> None:
        cut = isinstance(frame, InterruptionFrame) and bool(self.activity.affected(frame))
        await super().on_system(frame)
        if cut and self._on_cut is not None:
            result = self._on_cut()
            if result is not None:
                await result
