"""The SIP bridge: a small asyncio SIP user agent over UDP that answers calls with an agent.

It is a user agent server for INVITE, ACK, BYE, CANCEL, OPTIONS and INFO (DTMF relay), and a
client for the BYE that ends a call and for REGISTER. Each request gets the response RFC 3261
prescribes: ``400`` for malformed messages it can answer, ``405``/``501`` for methods it
does not serve, ``481`` for requests outside any call, ``486`` when ``max_calls`` are in
progress, ``488`` for offers without PCMU or PCMA. Retransmitted requests get the same
response again; our own requests are retransmitted until answered (timers T1/T2).

New INVITEs pass the admission checks first (allow-list, rate limit, digest challenge: see
:mod:`.sip_admission`). While the bridge drains (SIGTERM) new INVITEs and OPTIONS probes get
``503``, as OPTIONS does when every call slot is taken, so a front proxy sends calls elsewhere.
Every OPTIONS response carries the bridge's load (``X-Voiceagent-Load``: calls, capacity,
CPU) for whoever watches the workers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field, IPvAnyNetwork

from ..agent import Agent
from ..events import DTMF_KEYS, Event
from ..load import CpuMeter, WorkerLoad
from ..ratelimit import RateLimitOptions
from ..tasks import TaskSet
from .rtp import RTP_INPUT_TIMEOUT, JitterBuffer, RtpEndpoint, open_rtp
from .sdp import AudioOffer, SDPError, build_answer, parse_offer
from .sip_admission import Admission, InboundAuth
from .sip_call import T1, T2, Dialog, SipCall
from .sip_message import (
    SipMessage,
    SipParseError,
    new_branch,
    new_tag,
    parse,
    response,
    tag_of,
)
from .sip_register import RegistrationOptions, Registrar

log = logging.getLogger(__name__)

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO"
#: Methods of SIP and its common extensions: answered 405 (known, not served here) rather
#: than 501 (unknown).
KNOWN_METHODS = {"REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER",
                 "UPDATE"}
#: How long a response is kept to answer retransmissions of its request (64*T1).
RESPONSE_CACHE_SECONDS = 32.0
MAX_CACHED_RESPONSES = 10_000


class SipOptions(BaseModel):
    """Where the bridge listens and how it treats calls."""

    host: str = "127.0.0.1"
    port: int = Field(5060, ge=0, le=65535)
    #: the address put in Contact and SDP (default: ``host``, or when that is a wildcard,
    #: the local address that routes to the caller)
    public_address: str | None = None
    max_calls: int = Field(4, ge=1)
    #: a call whose caller sends neither RTP nor RTCP for this long is ended (seconds);
    #: long, as phones with silence suppression send little while they listen
    input_timeout: float = Field(RTP_INPUT_TIMEOUT, gt=0)
    #: packets the jitter buffer holds before playing (20 ms each); adaptive, where it
    #: starts, then three times the measured interarrival jitter (at least one packet)
    jitter_packets: int = Field(3, ge=1, le=25)
    #: follow the network's jitter (RFC 3550's estimate) instead of a fixed depth
    adaptive_jitter: bool = True
    #: take RTP from wherever the caller's first packet comes from (callers behind a NAT);
    #: off, only the address in the caller's SDP is accepted
    latch_rtp: bool = False
    registration: RegistrationOptions | None = None
    #: networks INVITEs are taken from (the PBX, the trunk); empty: from anywhere
    allow_from: list[IPvAnyNetwork] = []
    #: credentials inbound INVITEs must prove (digest); None: no challenge
    inbound_auth: InboundAuth | None = None
    #: new calls per source address; None: unlimited
    rate_limit: RateLimitOptions | None = Field(default_factory=RateLimitOptions)
    #: a 200 OK not acknowledged this long ends its call (RFC 3261 Timer H is 64*T1 = 32 s)
    ack_timeout: float = Field(64 * T1, gt=0, le=64 * T1)
    #: on SIGTERM, how long calls in progress may go on before they get a BYE (seconds)
    drain_timeout: float = Field(20.0, ge=0)


class SipServer(asyncio.DatagramProtocol):
    def __init__(self, agent: Agent, backends: dict[str, object], options: SipOptions, *,
                 subscribers: Sequence[Callable[[Event], object]] = ()) -> None:
        self.agent = agent
        self.backends = backends
        self.options = options
        self.subscribers = list(subscribers)
        self.transport: asyncio.DatagramTransport | None = None
        self.calls: dict[str, SipCall] = {}
        self._tasks = TaskSet()
        self._pending: dict[str, asyncio.Future[SipMessage]] = {}  # our requests, by branch
        self._responses: OrderedDict[tuple[str, str, str], tuple[float, bytes]] = OrderedDict()
        self._starting: set[str] = set()  # Call-IDs whose INVITE is being answered
        self.registrar: Registrar | None = None
        self.admission = Admission(allow_from=options.allow_from,
                                   rate_limit=options.rate_limit, auth=options.inbound_auth)
        self.draining = False
        self._cpu = CpuMeter()

    # -- lifetime -------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(self.options.host,
                                                                      self.options.port))
        if not self.options.allow_from and not _is_loopback(self.options.host):
            log.warning("SIP bridge on %s takes calls from any address: set allow_from "
                        "(--allow-from) to your PBX or trunk, or inbound_auth", self.options.host)
        if self.options.registration is not None:
            self.registrar = Registrar(
                self.options.registration, self.request,
                lambda peer: f"{self._contact_host(peer)}:{self.address[1]}")
            self._tasks.spawn(self.registrar.run(), "register")

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    async def drain(self, timeout: float | None = None) -> None:
        """Stop taking calls (new INVITEs and OPTIONS get 503) and wait until the calls in
        progress are over, for up to ``timeout`` seconds (default ``drain_timeout``); then
        :meth:`close` hangs up those still going."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.options.drain_timeout if timeout is None else timeout)
        while busy := [t for t in self._tasks
                       if t.get_name().startswith(("sip-call", "sip-answer"))]:
            if (remaining := deadline - loop.time()) <= 0:
                break
            await asyncio.wait(busy, timeout=remaining)

    @property
    def full(self) -> bool:
        return len(self.calls) + len(self._starting) >= self.options.max_calls

    def load(self) -> WorkerLoad:
        return WorkerLoad.measure(sessions=len(self.calls), capacity=self.options.max_calls,
                                  full=self.full, draining=self.draining, meter=self._cpu)

    async def close(self) -> None:
        """Hang up every call (BYE), unregister, and leave no task or socket behind."""
        calls = [t for t in self._tasks if t.get_name().startswith("sip-call")]
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        if self.registrar is not None:
            await self.registrar.unregister()
        await self._tasks.cancel_all()
        if self.transport is not None:
            self.transport.close()

    # -- the wire -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, msg: SipMessage, addr: tuple[str, int]) -> bytes:
        data = msg.encode()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)
        return data

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        source = (addr[0], addr[1])
        if not data.strip():
            return  # a keep-alive (RFC 5626 CRLF ping)
        try:
            msg = parse(data)
        except SipParseError as exc:
            log.info("bad SIP message from %s:%d: %s", *source, exc)
            if exc.partial is not None and exc.partial.method != "ACK":
                self._reply(exc.partial, source, exc.status, str(exc)[:100])
            return
        if msg.is_request:
            self._on_request(msg, source)
        else:
            self._on_response(msg)

    def _reply(self, request: SipMessage, addr: tuple[str, int], status: int,
               reason: str = "", *, headers: Sequence[tuple[str, str]] = (), to_tag: str = "",
               body: bytes = b"", content_type: str = "") -> None:
        """Send a response and remember it to answer retransmissions of the request."""
        msg = response(request, status, reason, to_tag=to_tag, body=body,
                       content_type=content_type)
        for name, value in headers:
            msg.add(name, value)
        if status == 405:
            msg.add("Allow", ALLOW)
        data = self.send(msg, addr)
        if status >= 200:
            self._remember(request, data)

    def _remember(self, request: SipMessage, data: bytes) -> None:
        """Cache a final response; oldest first out, by age or beyond the size bound (a
        flood of requests cannot grow it without limit)."""
        now = time.monotonic()
        cache = self._responses
        while cache and (len(cache) >= MAX_CACHED_RESPONSES
                         or now - next(iter(cache.values()))[0] > RESPONSE_CACHE_SECONDS):
            cache.popitem(last=False)
        cache[(request.call_id, request.branch, request.method)] = (now, data)

    # -- requests -------------------------------------------------------------------------

    def _on_request(self, msg: SipMessage, source: tuple[str, int]) -> None:
        cached = self._responses.get((msg.call_id, msg.branch, msg.method))
        if cached is not None and msg.method != "ACK":
            if self.transport is not None:
                self.transport.sendto(cached[1], source)  # a retransmission
            return
        handler = {"INVITE": self._on_invite, "ACK": self._on_ack, "BYE": self._on_bye,
                   "CANCEL": self._on_cancel, "OPTIONS": self._on_options,
                   "INFO": self._on_info}.get(msg.method)
        if handler is not None:
            handler(msg, source)
        elif msg.method in KNOWN_METHODS:
            self._reply(msg, source, 405)
        else:
            self._reply(msg, source, 501, f"{msg.method[:30]} Not Implemented")

    def _on_invite(self, msg: SipMessage, source: tuple[str, int]) -> None:
        call = self.calls.get(msg.call_id)
        if tag_of(msg.get("to") or ""):
            if call is None:
                self._reply(msg, source, 481)
            else:
                self._on_reinvite(call, msg, source)
            return
        if call is not None or msg.call_id in self._starting:
            if call is not None and call.invite_branch == msg.branch and call.answer:
                self.send(call.answer, source)  # a retransmitted INVITE
            return
        refusal = self.admission.check(msg, source[0])
        if refusal is not None:
            if refusal.status != 401:
                log.info("INVITE from %s:%d refused: %d %s", *source, refusal.status,
                         refusal.reason)
            self._reply(msg, source, refusal.status, refusal.reason, headers=refusal.headers)
            return
        if self.draining:
            self._reply(msg, source, 503, "Service Unavailable (shutting down)")
            return
        if msg.get("require"):
            self._reply(msg, source, 420, headers=[("Unsupported", msg.get("require") or "")])
            return
        if self.full:
            self._reply(msg, source, 486, f"Busy Here (at most {self.options.max_calls} calls)")
            return
        try:
            if (msg.get("content-type") or "").split(";")[0].strip().lower() != "application/sdp":
                raise SDPError("an SDP offer is required in the INVITE")
            offer = parse_offer(msg.body.decode("utf-8", "replace"))
        except SDPError as exc:
            self._reply(msg, source, exc.status,
                        headers=[("Warning", f'304 voiceagent "{str(exc)[:120]}"')])
            return
        self.send(response(msg, 100), source)
        self._starting.add(msg.call_id)
        self._tasks.spawn(self._answer(msg, source, offer), f"sip-answer-{msg.call_id[:16]}")

    async def _answer(self, invite: SipMessage, source: tuple[str, int],
                      offer: AudioOffer) -> None:
        host = self._contact_host(source)
        contact = ("Contact", f"<sip:voiceagent@{host}:{self.address[1]}>")
        endpoint = RtpEndpoint((offer.address, offer.port), offer.codec, offer.payload_type,
                               offer.dtmf_payload_type, latch=self.options.latch_rtp,
                               jitter=JitterBuffer(self.options.jitter_packets,
                                                   adaptive=self.options.adaptive_jitter),
                               comfort_noise_payload_type=offer.comfort_noise_payload_type)
        try:
            await open_rtp(endpoint, self.options.host, rtcp=not offer.rtcp_mux)
            call = SipCall(invite=invite, source=source,
                           dialog=Dialog.from_invite(invite, new_tag()), offer=offer,
                           endpoint=endpoint, agent=self.agent, backends=self.backends,
                           subscribers=self.subscribers,
                           input_timeout=self.options.input_timeout,
                           ack_timeout=self.options.ack_timeout,
                           via_host=f"{host}:{self.address[1]}")
        except Exception as exc:
            log.exception("could not answer call %s", invite.call_id)
            endpoint.close()
            self._reply(invite, source, 500, f"Server Internal Error: {type(exc).__name__}")
            return
        finally:
            self._starting.discard(invite.call_id)
        sdp = build_answer(offer, host, endpoint.local_port,
                           rtcp_port=endpoint.rtcp_port).encode()
        answer = response(invite, 200, to_tag=call.dialog.local_tag, body=sdp,
                          content_type="application/sdp")
        answer.add(*contact)
        answer.add("Allow", ALLOW)
        call.answer = answer
        self.calls[call.call_id] = call
        self.send(answer, source)
        self._tasks.spawn(self._run_call(call), f"sip-call-{call.call_id[:16]}")

    async def _run_call(self, call: SipCall) -> None:
        try:
            # the slot is free as soon as the call is over, before our BYE is answered
            await call.serve(self.send, self.request,
                             ended=lambda: self.calls.pop(call.call_id, None))
        finally:
            self.calls.pop(call.call_id, None)

    def _on_reinvite(self, call: SipCall, msg: SipMessage, source: tuple[str, int]) -> None:
        """A session refresh or hold: the same answer again, a new RTP address if any."""
        try:
            offer = parse_offer(msg.body.decode("utf-8", "replace")) if msg.body else call.offer
        except SDPError as exc:
            self._reply(msg, source, exc.status)
            return
        if offer.codec != call.offer.codec:
            self._reply(msg, source, 488, "Not Acceptable Here (the codec cannot change)")
            return
        call.endpoint.remote = (offer.address, offer.port)
        host = self._contact_host(source)
        sdp = build_answer(call.offer, host, call.endpoint.local_port,
                           version=call.dialog.local_cseq + 2,
                           rtcp_port=call.endpoint.rtcp_port).encode()
        self._reply(msg, source, 200, to_tag=call.dialog.local_tag, body=sdp,
                    content_type="application/sdp",
                    headers=[("Contact", f"<sip:voiceagent@{host}:{self.address[1]}>")])

    def _on_ack(self, msg: SipMessage, source: tuple[str, int]) -> None:
        call = self.calls.get(msg.call_id)
        if call is not None and tag_of(msg.get("to") or "") == call.dialog.local_tag:
            call.acked.set()
        # anything else: the ACK of a failure response, or stray; ACKs are never answered

    def _on_bye(self, msg: SipMessage, source: tuple[str, int]) -> None:
        call = self.calls.get(msg.call_id)
        if call is None or tag_of(msg.get("to") or "") != call.dialog.local_tag:
            self._reply(msg, source, 481)
            return
        self._reply(msg, source, 200)
        call.bye_received()

    def _on_cancel(self, msg: SipMessage, source: tuple[str, int]) -> None:
        # Calls are answered at once, so a CANCEL finds its INVITE already answered: 200
        # for the CANCEL and nothing else (RFC 3261 9.2); the caller sends BYE next.
        known = msg.call_id in self.calls or msg.call_id in self._starting
        self._reply(msg, source, 200 if known else 481)

    def _on_options(self, msg: SipMessage, source: tuple[str, int]) -> None:
        """A probe (a proxy's dispatcher, a trunk's keep-alive): 503 when no call would
        be taken now, so the prober sends calls elsewhere."""
        load = ("X-Voiceagent-Load", self.load().as_header())
        if self.draining or self.full:
            self._reply(msg, source, 503, "Service Unavailable ("
                        + ("shutting down)" if self.draining else "every call slot is taken)"),
                        headers=[load])
            return
        self._reply(msg, source, 200, headers=[
            ("Allow", ALLOW), ("Accept", "application/sdp, application/dtmf-relay"), load])

    def _on_info(self, msg: SipMessage, source: tuple[str, int]) -> None:
        """DTMF sent as SIP INFO (application/dtmf-relay, ``Signal=5``), which some phones
        and PBXs use instead of RFC 4733."""
        call = self.calls.get(msg.call_id)
        if call is None:
            self._reply(msg, source, 481)
            return
        if (msg.get("content-type") or "").lower().startswith("application/dtmf-relay"):
            for line in msg.body.decode("utf-8", "replace").splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal" and value.strip():
                    key = value.strip()[0].upper()
                    if key in DTMF_KEYS:
                        call.key_pressed(key)
        self._reply(msg, source, 200)

    # -- our requests ---------------------------------------------------------------------

    async def request(self, msg: SipMessage, addr: tuple[str, int]) -> SipMessage:
        """Send a non-INVITE request and return its final response, retransmitting (T1
        doubling to T2) until it comes; :class:`TimeoutError` after 64*T1."""
        branch = msg.branch or new_branch()
        future: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self._pending[branch] = future
        interval, deadline = T1, time.monotonic() + 64 * T1
        try:
            while True:
                self.send(msg, addr)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no response to {msg.method}")
                try:
                    return await asyncio.wait_for(asyncio.shield(future),
                                                  min(interval, remaining))
                except TimeoutError:
                    interval = min(interval * 2, T2)
        finally:
            self._pending.pop(branch, None)

    def _on_response(self, msg: SipMessage) -> None:
        future = self._pending.get(msg.branch)
        if future is not None and not future.done() and msg.status >= 200:
            future.set_result(msg)

    def _contact_host(self, peer: tuple[str, int]) -> str:
        """The address peers can reach us at: configured, bound, or routed to ``peer``."""
        if self.options.public_address:
            return self.options.public_address
        host = self.options.host
        if host not in ("0.0.0.0", "::", ""):
            return host
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((peer[0], 9))  # no packet is sent: only the route is looked up
            return probe.getsockname()[0]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
