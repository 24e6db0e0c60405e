"""One browser, one peer connection, one :class:`AgentSession`.

:meth:`WebRTCPeer.accept` answers the browser's offer and starts the session;
:meth:`WebRTCPeer.serve` then lasts as long as the conversation: until the connection fails
or closes, the microphone track ends, or the page sends ``end``. Afterwards the session and
the peer connection are closed and none of their tasks is left.

The data channel the page opens carries JSON both ways: every session event goes to the page
(its pydantic JSON), and the page sends ``text``, ``mute``, ``interrupt`` and ``end``
messages (see docs/webrtc.md). A malformed message gets an ``error`` event back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from ..agent import Agent
from ..events import ErrorEvent, Event
from ..race import race
from ..session import AgentSession
from .ice import restrict_host_addresses
from .webrtc import (
    INPUT_TIMEOUT,
    AgentAudioTrack,
    WebRTCAudioInput,
    WebRTCAudioOutput,
    release_packets_promptly,
)
from .webrtc_offer import OfferError, check_offer

log = logging.getLogger(__name__)

#: Longest typed turn accepted from the page, in characters.
MAX_TEXT = 2000


class WebRTCPeer:
    def __init__(self, agent: Agent, backends: dict[str, object], *,
                 ice_servers: Sequence[RTCIceServer] = (),
                 host_addresses: Sequence[str] = (),
                 subscribers: Sequence[Callable[[Event], object]] = (),
                 session_id: str | None = None, input_timeout: float = INPUT_TIMEOUT) -> None:
        self.agent = agent
        self.input_timeout = input_timeout
        self.backends = backends
        self.host_addresses = list(host_addresses)
        self.subscribers = list(subscribers)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))
        self.session: AgentSession | None = None
        self.session_id = session_id
        self._done = asyncio.Event()
        self._reason = ""
        self._channel: RTCDataChannel | None = None
        self._unsent: list[str] = []  # events before the data channel opened
        self._mic: MediaStreamTrack | None = None
        self.pc.on("track", self._on_track)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("connectionstatechange", self._on_connection_state)

    # -- signalling -----------------------------------------------------------------------

    async def accept(self, sdp: str) -> RTCSessionDescription:
        """Answer the browser's offer (ICE gathered, no trickle) and start the session.

        :class:`OfferError` for an offer that cannot be answered; the caller closes the
        peer either way."""
        check_offer(sdp)
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # what check_offer missed: aiortc raises anything on it
            raise _refused(exc) from exc
        if self._mic is None:
            raise OfferError("the offer sends no audio (its audio m-line is recvonly or "
                             "inactive): add a microphone track", 422)
        for transceiver in self.pc.getTransceivers():
            if transceiver.kind == "audio":  # before any packet arrives
                release_packets_promptly(transceiver.receiver)
        restrict_host_addresses(self.pc, self.host_addresses)
        session = AgentSession(self.agent, self._make_input, WebRTCAudioOutput,
                               session_id=self.session_id, backends=self.backends)
        self.session, self.session_id = session, session.id
        for subscriber in self.subscribers:
            session.events.subscribe(subscriber)
        session.events.subscribe(self._send_event)
        self.pc.addTrack(AgentAudioTrack(session.output, session.runtime.clock))  # type: ignore[arg-type]
        try:
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except Exception as exc:
            raise _refused(exc) from exc
        await session.start()
        return self.pc.localDescription

    def _make_input(self, runtime: Any) -> WebRTCAudioInput:
        assert self._mic is not None
        return WebRTCAudioInput(self._mic, runtime, timeout=self.input_timeout)

    # -- lifetime -------------------------------------------------------------------------

    async def serve(self) -> None:
        """Until the conversation is over, then close everything (also when cancelled)."""
        assert self.session is not None
        try:
            await race(self.session.wait(), self._done.wait())
        finally:
            await self.close(self._reason or self.session.end_reason)

    async def close(self, reason: str = "closed") -> None:
        """Stop the session and the peer connection; safe to call more than once."""
        self.end(reason)
        if self.session is not None:
            await self.session.stop(reason=reason)
        await self.pc.close()

    def end(self, reason: str) -> None:
        if not self._done.is_set():
            self._reason = reason
            self._done.set()

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self.end(f"connection {self.pc.connectionState}")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._mic is None:
            self._mic = track

    # -- the data channel -----------------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self._channel = channel
        channel.on("message", self._on_message)
        channel.on("open", self._flush)
        if channel.readyState == "open":
            self._flush()

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        for message in unsent:
            self._send(message)

    def _send_event(self, event: Event) -> None:
        self._send(event.model_dump_json())

    def _send(self, message: str) -> None:
        channel = self._channel
        if channel is None or channel.readyState == "connecting":
            self._unsent.append(message)
        elif channel.readyState == "open":
            channel.send(message)

    def _on_message(self, message: str | bytes) -> None:
        try:
            self._handle(json.loads(message))
        except (ValueError, TypeError, KeyError) as exc:
            self._reject(f"bad message: {exc}")

    def _handle(self, msg: Any) -> None:
        session = self.session
        if not isinstance(msg, dict) or session is None:
            raise ValueError("expected a JSON object with a 'type'")
        kind = msg.get("type")
        if kind == "text":
            text = msg["text"]
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                raise ValueError(f"'text' must be a non-empty string of at most {MAX_TEXT} "
                                 "characters")
            self._run_soon(session.send_text(text))
        elif kind == "mute":
            muted = msg["muted"]
            if not isinstance(muted, bool):
                raise ValueError("'muted' must be true or false")
            session.input.muted = muted  # type: ignore[attr-defined]
        elif kind == "interrupt":
            self._run_soon(session.interrupt("interrupted by the user"))
        elif kind == "end":
            self.end("ended by the user")
        else:
            raise ValueError(f"unknown message type {kind!r}")

    def _run_soon(self, coro: Any) -> None:
        """Control from the page, as a task the session's graph owns (so stop awaits it)."""
        assert self.session is not None
        self.session.graph.spawn(coro, "control")

    def _reject(self, message: str) -> None:
        assert self.session is not None
        self.session.events.emit(ErrorEvent(ts=self.session.runtime.clock.now(),
                                            source="datachannel", message=message))


def _refused(exc: Exception) -> OfferError:
    """aiortc's own refusal of an offer, as one line (its messages can be empty)."""
    log.info("aiortc refused an SDP offer", exc_info=exc)
    detail = str(exc).splitlines()[0][:120] if str(exc).strip() else ""
    return OfferError(f"unusable SDP offer: {type(exc).__name__}"
                      + (f": {detail}" if detail else ""))
