"""One media-stream WebSocket, one :class:`AgentSession`: a phone call that a cloud telephony
provider (Twilio's ``<Connect><Stream>``) streams to the server.

The provider opens the socket and sends ``start`` (which call, which audio format, the
parameters the call was set up with), then the caller's audio in 20 ms messages. The agent's
voice goes back the same way while it speaks; a ``mark`` follows each reply's audio (the
provider echoes it once that audio has played: a ``playout_mark`` event), and a barge-in sends
``clear`` so the provider drops the audio it has buffered. Keypad presses reach
:meth:`AgentSession.press_key`.

The call ends at ``stop``, when the socket closes, when the agent hangs up, or when the
caller's audio stops; afterwards none of its tasks is left. A broken message during the call
is an ``error`` event and the call goes on; before ``start`` the socket is closed with a code
that says why (see :class:`~voiceagent.telephony.serializers.MessageError`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Sequence

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..agent import Agent
from ..events import CallEvent, ErrorEvent, Event, PlayoutMarkEvent
from ..race import race
from ..runtime import SessionRuntime
from ..session import AgentSession
from .media import CODECS, PCMU, TELEPHONE_RATE, CallAudioOutput, Codec, PushedAudioInput
from .serializers import (
    Inbound,
    MediaStreamSerializer,
    MessageError,
    StreamDTMF,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
)

log = logging.getLogger(__name__)

#: A media message is a few hundred bytes, a ``start`` with parameters a few kilobytes.
MAX_MESSAGE = 64 * 1024
#: The longest WebSocket close reason, in bytes (RFC 6455 5.5: a control frame's 125 less
#: the code).
MAX_REASON = 123


class MediaStreamCall:
    """Construct with an accepted WebSocket; :meth:`start` waits for the provider's ``start``
    and starts the session (False: the stream was refused and the socket closed, or the
    provider left); :meth:`serve` then lasts as long as the call.

    With a ``token``, the stream must carry it as the ``token`` parameter (Twilio:
    ``<Parameter name="token" value="..."/>``), since the provider cannot send headers.
    """

    #: how long the provider may take to send ``start`` once connected (seconds)
    start_timeout: float = 10.0

    def __init__(self, websocket: WebSocket, serializer: MediaStreamSerializer, agent: Agent,
                 backends: dict[str, object], *, token: str | None = None,
                 subscribers: Sequence[Callable[[Event], object]] = ()) -> None:
        self.ws = websocket
        self.serializer = serializer
        self.agent = agent
        self.backends = backends
        self.token = token
        self.subscribers = list(subscribers)
        self.stream: StreamStart | None = None
        self.session: AgentSession | None = None
        self.session_id: str | None = None
        self.reason = ""
        self._codec: Codec = PCMU
        self._input: PushedAudioInput | None = None
        self._replying = False  # agent audio went out since the last mark
        self._reply: int | None = None  # the reply that audio belongs to

    # -- set-up ---------------------------------------------------------------------------

    async def start(self) -> bool:
        """Wait for ``start`` and start the session on it: False when the stream is refused
        (the socket is closed with the reason) or the provider left first."""
        try:
            stream = await asyncio.wait_for(self._first_message(), self.start_timeout)
            if stream is None:
                return False
            self._codec = self._accept(stream)
        except TimeoutError:
            await self._close_socket(1008, f"no start message within {self.start_timeout:g} s")
            return False
        except MessageError as exc:
            await self._close_socket(exc.close_code, str(exc))
            return False
        self.stream = stream
        session = AgentSession(self.agent, self._make_input, self._make_output,
                               backends=self.backends)
        self.session, self.session_id = session, session.id
        for subscriber in self.subscribers:
            session.events.subscribe(subscriber)
        try:
            await session.start()
        except BaseException:
            await self.close("the session failed to start", code=1011)
            raise
        session.events.emit(CallEvent(
            ts=session.runtime.clock.now(), call_id=stream.call_id,
            caller=stream.parameters.get("from", ""), callee=stream.parameters.get("to", ""),
            transport=self.serializer.name, codec=self._codec.name))
        return True

    async def _first_message(self) -> StreamStart | None:
        message = await self._receive()
        if message is None or isinstance(message, StreamStart):
            return message
        kind = type(message).__name__.removeprefix("Stream").lower()
        raise MessageError(f"{kind} before start", 1008)

    def _accept(self, stream: StreamStart) -> Codec:
        """The codec of an acceptable stream, or :class:`MessageError`."""
        if self.token is not None and not hmac.compare_digest(
                stream.parameters.get("token", "").encode(), self.token.encode()):
            raise MessageError("a valid token parameter is required", 1008)
        fmt = stream.media_format
        codec = CODECS.get(fmt.encoding)
        if codec is None or fmt.sample_rate != TELEPHONE_RATE or fmt.channels != 1:
            raise MessageError(f"unsupported media format {fmt.encoding}, {fmt.sample_rate} Hz, "
                               f"{fmt.channels} channels: expected 8 kHz mono G.711", 1003)
        return codec

    def _make_input(self, runtime: SessionRuntime) -> PushedAudioInput:
        self._input = PushedAudioInput(runtime)
        return self._input

    def _make_output(self, runtime: SessionRuntime) -> CallAudioOutput:
        return CallAudioOutput(runtime, self._codec, self._send_audio, self._clear)

    # -- lifetime -------------------------------------------------------------------------

    async def serve(self) -> None:
        """Until the call is over, then close everything (also when cancelled)."""
        assert self.session is not None
        try:
            first = await race(self._read(), self.session.wait())
            assert first is not None
            first.result()  # a failure surfaces, after the clean-up below
        finally:
            await self.close(self.reason or self.session.end_reason)

    async def close(self, reason: str, *, code: int = 1000) -> None:
        """End the session and close the socket; safe to call more than once."""
        self.reason = self.reason or reason
        if self.session is not None:
            await self.session.stop(reason=self.reason)
        await self._close_socket(code, self.reason)

    # -- the socket -----------------------------------------------------------------------

    async def _read(self) -> None:
        session, source = self.session, self._input
        assert session is not None and source is not None
        while True:
            try:
                message = await self._receive()
            except MessageError as exc:
                self._report(str(exc))
                continue
            match message:
                case None:
                    return
                case StreamStop():
                    self.reason = self.reason or "the stream stopped (the caller hung up)"
                    return
                case StreamMedia(payload=payload):
                    source.push(self._codec.decode(payload))
                case StreamDTMF(digit=digit):
                    session.graph.spawn(session.press_key(digit), "dtmf")
                case StreamMark(name=name):
                    session.events.emit(PlayoutMarkEvent(ts=session.runtime.clock.now(),
                                                         name=name))
                case StreamStart():
                    self._report("a second start message was ignored")

    async def _receive(self) -> Inbound | None:
        """The next message that means something to the call; None once the socket closed."""
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.reason = self.reason or (
                    f"the socket closed (code {message.get('code', 1005)})")
                return None
            text = message.get("text")
            if text is None:
                raise MessageError("binary messages are not part of the protocol", 1003)
            if len(text) > MAX_MESSAGE:
                raise MessageError(f"message over {MAX_MESSAGE} characters", 1009)
            inbound = self.serializer.parse(text)
            if inbound is not None:
                return inbound

    def _report(self, message: str) -> None:
        assert self.session is not None
        log.info("%s: bad media-stream message: %s", self.session_id, message)
        self.session.events.emit(ErrorEvent(ts=self.session.runtime.clock.now(),
                                            source="media-stream", message=message))

    async def _send_audio(self, payload: bytes, speaking: bool) -> None:
        """CallAudioOutput's frames: the agent's voice goes out, the silence between replies
        does not; a mark follows each stretch of speech, named after its reply."""
        assert self.stream is not None and self.session is not None
        if speaking:
            self._replying = True
            self._reply = min((r.id for r in self.session.replies.active), default=self._reply)
            await self._send(self.serializer.media(self.stream.stream_id, payload))
        elif self._replying:
            self._replying = False
            await self._send(self.serializer.mark(self.stream.stream_id, f"reply-{self._reply}"))

    async def _clear(self) -> None:
        assert self.stream is not None
        await self._send(self.serializer.clear(self.stream.stream_id))

    def _open(self) -> bool:
        return (self.ws.client_state is WebSocketState.CONNECTED
                and self.ws.application_state is WebSocketState.CONNECTED)

    async def _send(self, text: str) -> None:
        """Send if the socket is still open; a socket that just went away is noticed by the
        reader, which ends the call."""
        if not self._open():
            return
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("%s: send failed: %s", self.session_id, exc)

    async def _close_socket(self, code: int, reason: str) -> None:
        if not self._open():
            return
        if code != 1000:
            log.info("closing a media stream (%d): %s", code, reason)
        try:
            await self.ws.close(code, reason.encode()[:MAX_REASON].decode(errors="ignore"))
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            log.debug("close failed: %s", exc)
