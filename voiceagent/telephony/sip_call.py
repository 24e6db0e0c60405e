"""One answered SIP call: its dialog, its RTP endpoint and the :class:`AgentSession` that
talks on it.

The call lasts until the caller sends BYE, the agent hangs up (a tool's ``end_call``, after
its goodbye has played), the caller's audio stops for ``input_timeout`` seconds, or the
session fails; in every case but the first we send the BYE. Afterwards the session, the RTP
socket and every task of the call are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..agent import Agent
from ..events import CallEvent, Event
from ..race import race
from ..session import AgentSession
from .media import CallAudioOutput
from .rtp import RtpAudioInput, RtpEndpoint
from .sdp import AudioOffer
from .sip_message import SipMessage, new_branch, uri_of

log = logging.getLogger(__name__)

#: RFC 3261 timer T1 (round-trip estimate) and T2 (longest retransmit interval), seconds.
T1, T2 = 0.5, 4.0
#: How long our BYE waits for its answer. Shorter than a transaction's 64*T1: the call is
#: over for us either way, and a bridge that is shutting down should not hang on a peer.
BYE_TIMEOUT = 4.0


@dataclass
class Dialog:
    """What a request inside the call needs (RFC 3261 12.1.1, seen from the callee)."""

    call_id: str
    local_tag: str
    local_uri: str  # the INVITE's To, without its tag
    remote_uri: str  # the INVITE's From
    remote_target: str  # the caller's Contact: where in-dialog requests go
    route_set: list[str] = field(default_factory=list)
    local_cseq: int = 0

    @classmethod
    def from_invite(cls, invite: SipMessage, local_tag: str) -> Dialog:
        contact = invite.get("contact")
        return cls(call_id=invite.call_id, local_tag=local_tag,
                   local_uri=(invite.get("to") or "").split(";tag=")[0],
                   remote_uri=invite.get("from") or "",
                   remote_target=uri_of(contact) if contact else uri_of(invite.get("from") or ""),
                   route_set=invite.get_all("record-route"))

    def request(self, method: str, via_host: str) -> SipMessage:
        self.local_cseq += 1
        msg = SipMessage(method=method, uri=self.remote_target)
        msg.add("Via", f"SIP/2.0/UDP {via_host};branch={new_branch()};rport")
        msg.add("Max-Forwards", "70")
        for route in self.route_set:
            msg.add("Route", route)
        msg.add("From", f"{self.local_uri};tag={self.local_tag}")
        msg.add("To", self.remote_uri)
        msg.add("Call-ID", self.call_id)
        msg.add("CSeq", f"{self.local_cseq} {method}")
        return msg


Send = Callable[[SipMessage, tuple[str, int]], object]
Request = Callable[[SipMessage, tuple[str, int]], Awaitable[SipMessage]]


class SipCall:
    def __init__(self, *, invite: SipMessage, source: tuple[str, int], dialog: Dialog,
                 offer: AudioOffer, endpoint: RtpEndpoint, agent: Agent,
                 backends: dict[str, object], subscribers: list[Callable[[Event], object]],
                 input_timeout: float, via_host: str, ack_timeout: float = 64 * T1) -> None:
        self.invite_branch = invite.branch  # to recognise a retransmitted INVITE
        self.source = source
        self.dialog = dialog
        self.offer = offer
        self.endpoint = endpoint
        self.via_host = via_host
        self.ack_timeout = ack_timeout
        self.answer: SipMessage | None = None  # our 200 OK, resent until the ACK
        self.acked = asyncio.Event()
        self.reason = ""
        self.caller_hung_up = False
        self._done = asyncio.Event()  # the call is over for a SIP reason (BYE, no ACK)
        self.session = AgentSession(
            agent, lambda rt: RtpAudioInput(endpoint, rt, timeout=input_timeout),
            lambda rt: CallAudioOutput(rt, offer.codec, endpoint.send), backends=backends)
        for subscriber in subscribers:
            self.session.events.subscribe(subscriber)
        endpoint.on_key = self.key_pressed

    @property
    def call_id(self) -> str:
        return self.dialog.call_id

    def key_pressed(self, key: str) -> None:
        self.session.graph.spawn(self.session.press_key(key), "dtmf")

    async def start(self) -> None:
        await self.session.start()
        self.session.events.emit(CallEvent(
            ts=self.session.runtime.clock.now(), call_id=self.call_id,
            caller=uri_of(self.dialog.remote_uri), callee=uri_of(self.dialog.local_uri),
            transport="sip", codec=self.offer.codec.name))

    def bye_received(self) -> None:
        self.caller_hung_up = True
        self.reason = self.reason or "the caller hung up"
        self._done.set()

    async def serve(self, send: Send, request: Request,
                    ended: Callable[[], object] = lambda: None) -> None:
        """The call, from the 200 OK to the end; cleans up even when cancelled. ``ended``
        runs once the session and its media are gone, before our BYE is answered."""
        try:
            await self.start()
            # the session's graph owns the resending: it ends with the session
            self.session.graph.spawn(self._resend_answer_until_acked(send), "sip-answer")
            await race(self.session.wait(), self._done.wait())
            self.reason = self.reason or self.session.end_reason
        finally:  # also when the bridge closes and cancels the call: the caller gets a BYE
            self.reason = self.reason or "the bridge closed"
            await self.session.stop(reason=self.reason)
            self.endpoint.close()
            ended()
            if not self.caller_hung_up:
                await self._send_bye(request)

    async def _resend_answer_until_acked(self, send: Send) -> None:
        """RFC 3261 13.3.1.4: the 200 OK is resent (T1, doubling to T2) until the ACK;
        with no ACK after ``ack_timeout`` (at most Timer H, 64*T1) the call is ended."""
        interval, waited = T1, 0.0
        while not self.acked.is_set():
            step = min(interval, self.ack_timeout - waited)
            try:
                await asyncio.wait_for(self.acked.wait(), step)
                return
            except TimeoutError:
                waited += step
            if waited >= self.ack_timeout - 1e-6:
                self.reason = "the caller never acknowledged the answer (no ACK)"
                self._done.set()
                return
            if self.answer is not None:
                send(self.answer, self.source)
            interval = min(interval * 2, T2)

    async def _send_bye(self, request: Request) -> None:
        bye = self.dialog.request("BYE", self.via_host)
        bye.add("Reason", f'SIP;cause=200;text="{self.reason[:80]}"')
        try:
            reply = await asyncio.wait_for(request(bye, self.source), BYE_TIMEOUT)
            if reply.status >= 300:
                log.info("call %s: BYE answered %d %s", self.call_id, reply.status, reply.reason)
        except TimeoutError:
            log.info("call %s: no answer to our BYE", self.call_id)

