"""RTP for one call (RFC 3550): packets, a jitter buffer, RFC 4733 telephone-events, and
the UDP endpoint that sends the agent's voice and receives the caller's.

Only packets from the address the caller's SDP named are taken (RTP from anywhere else is
counted and dropped), unless ``latch`` is on, for callers behind a NAT, in which case the
first source heard becomes the only one.

A caller with silence suppression sends little or nothing while it listens: a comfort-noise
packet (RFC 3389) now and then, RTCP reports every few seconds. Both are signs of life: comfort
noise plays as silence, and RTCP, on the next port or muxed with the RTP (RFC 5761), is only
counted (we read no statistics from it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..events import DTMF_KEYS
from ..pacer import Pacer
from ..runtime import SessionRuntime
from ..transports.base import FRAME_SECONDS, RESYNC_SECONDS, LiveAudioInput
from .media import FRAME_SAMPLES, TELEPHONE_RATE, Codec

log = logging.getLogger(__name__)

#: Comfort noise (RFC 3389): the caller's side is silent.
COMFORT_NOISE = 13
#: Seconds without RTP or RTCP after which the caller is taken to be gone: longer than a
#: phone with silence suppression may send nothing but RTCP (every ~5 s) or a rare
#: comfort-noise update.
RTP_INPUT_TIMEOUT = 30.0
#: RFC 5761 4: a packet whose second byte is in this range is RTCP (RTP payload types
#: 64-95 are not used, so muxed RTCP cannot be mistaken for RTP).
RTCP_SECOND_BYTE = range(192, 224)


def is_rtcp(data: bytes) -> bool:
    return len(data) >= 8 and data[0] >> 6 == 2 and data[1] in RTCP_SECOND_BYTE


@dataclass
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    def encode(self) -> bytes:
        return struct.pack("!BBHII", 0x80, (0x80 if self.marker else 0) | self.payload_type,
                           self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF,
                           self.ssrc) + self.payload

    @classmethod
    def decode(cls, data: bytes) -> RtpPacket:
        """One datagram as an RTP packet; ``ValueError``, and no other exception, for
        anything that is not one."""
        if len(data) < 12 or data[0] >> 6 != 2:
            raise ValueError("not an RTP version 2 packet")
        first, second, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        offset = 12 + 4 * (first & 0x0F)  # CSRCs
        if first & 0x10:  # a header extension
            if len(data) < offset + 4:
                raise ValueError("truncated RTP header extension")
            offset += 4 + 4 * struct.unpack("!H", data[offset + 2:offset + 4])[0]
        end = len(data)
        if first & 0x20:  # padding: the last byte counts it
            end -= data[-1]
        if offset > end:
            raise ValueError("truncated RTP packet")
        return cls(second & 0x7F, seq, ts, ssrc, data[offset:end], bool(second & 0x80))


def telephone_event(payload: bytes) -> tuple[str, bool] | None:
    """(key, end of event) from an RFC 4733 payload; None for events that are not keys."""
    if len(payload) < 4 or payload[0] >= len(DTMF_KEYS):
        return None
    return DTMF_KEYS[payload[0]], bool(payload[1] & 0x80)


#: packets a burst may queue above the depth before the oldest are skipped (80 ms): a burst
#: after a stall of the network or of the event loop plays out instead of being cut
_BURST = 4
#: ticks (1 s) an adaptive buffer must hold more than its depth before it drops a packet
_SHRINK_AFTER = 50


class JitterBuffer:
    """Reorders packets by sequence number and releases one per 20 ms tick.

    Playback starts once ``depth`` packets are queued, which absorbs that much network
    jitter. A missing packet with later ones waiting is declared lost (silence in its
    place); late and duplicate packets are dropped. Delay cannot build up: past twice
    ``depth``, and at least ``depth`` + 4 (packets that came before playback began, a sender
    whose clock runs fast; a burst after a stall plays out), the oldest are skipped down to
    ``depth``, and past ``max_depth`` they are dropped on arrival.

    ``adaptive``: the depth follows the network instead of staying fixed. Each audio packet's
    arrival time against its RTP timestamp updates RFC 3550's interarrival jitter estimate
    (6.4.1, A.8), and the depth becomes the packets that cover three times it, one at least
    (``min_depth``) and half ``max_depth`` at most. A buffer that has held more than that for
    a whole second drops one packet, so the delay comes down to the depth. A steady feed (a
    LAN, loopback) then plays within 20 ms of its arrival instead of 60 ms; a jittery one
    keeps the depth it needs (an underrun adds a packet's delay by itself).
    """

    def __init__(self, depth: int = 3, max_depth: int = 10, *, adaptive: bool = False,
                 min_depth: int = 1, clock_rate: int = TELEPHONE_RATE) -> None:
        self.depth, self.max_depth = depth, max_depth
        self.adaptive, self.min_depth, self.clock_rate = adaptive, min_depth, clock_rate
        self._start_depth = depth
        self._packets: dict[int, bytes | None] = {}
        self._next: int | None = None
        self.lost = self.late = self.skipped = 0
        self.jitter = 0.0  # seconds: RFC 3550's interarrival jitter estimate
        self._excess = 0  # ticks in a row that found more than ``depth`` packets
        self._last: tuple[float, int] | None = None  # (arrival, timestamp) of the last audio

    def fresh(self) -> JitterBuffer:
        """An empty buffer with this one's settings (a new source: nothing carries over)."""
        return JitterBuffer(self._start_depth, self.max_depth, adaptive=self.adaptive,
                            min_depth=self.min_depth, clock_rate=self.clock_rate)

    def observe(self, timestamp: int, arrival: float) -> None:
        """An audio packet's RTP ``timestamp`` and its ``arrival`` (seconds, any clock):
        update the jitter estimate and, when adaptive, the depth."""
        if self._last is not None:
            last_arrival, last_timestamp = self._last
            sent = _signed32(timestamp - last_timestamp) / self.clock_rate
            self.jitter += (abs((arrival - last_arrival) - sent) - self.jitter) / 16
            if self.adaptive:
                wanted = math.ceil(3 * self.jitter / FRAME_SECONDS - 1e-9)
                self.depth = min(max(wanted, self.min_depth), max(self.max_depth // 2, 1))
        self._last = (arrival, timestamp)

    def push(self, sequence: int, payload: bytes | None) -> None:
        """``payload`` None: a packet that holds no audio (a telephone-event, comfort
        noise) but takes its place in the sequence."""
        if self._next is not None and _before(sequence, self._next):
            self.late += 1
            return
        self._packets[sequence] = payload
        while len(self._packets) > self.max_depth:
            self._skip_oldest()

    def _skip_oldest(self) -> None:
        oldest = min(self._packets, key=self._age)
        del self._packets[oldest]
        self._next = (oldest + 1) & 0xFFFF
        self.skipped += 1

    def pop(self) -> bytes | None:
        """The next packet's payload, or None (nothing due yet, or lost: play silence)."""
        if self._next is None:
            if len(self._packets) < self.depth:
                return None
            self._next = min(self._packets, key=self._age)
        if len(self._packets) > self.depth + max(self.depth, _BURST):
            while len(self._packets) > self.depth:
                self._skip_oldest()
        elif self.adaptive:  # more than the depth held for a whole second: one packet less
            self._excess = self._excess + 1 if len(self._packets) > self.depth else 0
            if self._excess >= _SHRINK_AFTER:
                self._skip_oldest()
                self._excess = 0
        if self._next in self._packets:
            payload = self._packets.pop(self._next)
        elif any(_before(self._next, s) for s in self._packets):
            self.lost += 1  # later packets are here: this one is not coming
            payload = None
        else:
            return None  # nothing has arrived yet: wait for it
        self._next = (self._next + 1) & 0xFFFF
        return payload

    def _age(self, sequence: int) -> int:
        anchor = self._next if self._next is not None else next(iter(self._packets))
        return _distance(sequence, anchor)


def _distance(sequence: int, anchor: int) -> int:
    """Signed distance from ``anchor`` to ``sequence`` in 16-bit sequence space."""
    return ((sequence - anchor + 0x8000) & 0xFFFF) - 0x8000


def _before(a: int, b: int) -> bool:
    return _distance(a, b) < 0


def _signed32(value: int) -> int:
    """A difference of 32-bit RTP timestamps, across their wrap."""
    return ((value + 0x80000000) & 0xFFFFFFFF) - 0x80000000


class RtpEndpoint(asyncio.DatagramProtocol):
    """One call's UDP socket: packets from the caller go to the jitter buffer (audio and
    comfort noise) or ``on_key`` (telephone-events); :meth:`send` sends one 20 ms frame of
    agent audio. RTCP, muxed on this socket or on the RTCP socket :func:`open_rtp` adds,
    only keeps the call alive (``last_received``)."""

    def __init__(self, remote: tuple[str, int], codec: Codec, payload_type: int,
                 dtmf_payload_type: int | None, *, on_key: Callable[[str], None] | None = None,
                 latch: bool = False, jitter: JitterBuffer | None = None,
                 comfort_noise_payload_type: int | None = None) -> None:
        self.remote = remote
        self.codec = codec
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.comfort_noise_payload_type = comfort_noise_payload_type
        self.on_key = on_key
        self.latch = latch
        self.jitter = jitter or JitterBuffer()
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self.received = self.rejected = self.malformed = 0
        self.comfort_noise = self.rtcp_received = 0
        self.last_received: float | None = None
        self._latched = False
        self._ssrc_in: int | None = None
        self._key_timestamp: int | None = None
        self._ssrc = secrets.randbits(32)
        self._seq = secrets.randbits(16)
        self._ts = secrets.randbits(32)
        self._was_speaking = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    @property
    def rtcp_port(self) -> int:
        """Where the caller's RTCP goes when it is not muxed."""
        if self.rtcp_transport is None:
            return self.local_port + 1
        return self.rtcp_transport.get_extra_info("sockname")[1]

    def rtcp_heard(self, data: bytes, addr: tuple) -> None:
        """An RTCP packet from the caller's host: alive. RTCP comes from the port after its
        RTP or a port of its own (RFC 3605), so only the host is checked."""
        host = self.remote[0] if (self._latched or not self.latch) else addr[0]
        if addr[0] != host or not is_rtcp(data):
            self.rejected += 1
            return
        self.rtcp_received += 1
        self.last_received = asyncio.get_running_loop().time()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        source = (addr[0], addr[1])
        if is_rtcp(data):  # muxed RTCP (RFC 5761)
            self.rtcp_heard(data, addr)
            return
        if source != self.remote:
            if not (self.latch and not self._latched):
                if not self.rejected:
                    log.warning("RTP from unexpected source %s:%d dropped (expected %s:%d)",
                                *source, *self.remote)
                self.rejected += 1
                return
            self.remote = source
        self._latched = True
        try:
            packet = RtpPacket.decode(data)
        except ValueError:
            self.malformed += 1
            return
        self.received += 1
        self.last_received = asyncio.get_running_loop().time()
        if packet.ssrc != self._ssrc_in:
            self._ssrc_in = packet.ssrc
            self.jitter = self.jitter.fresh()
        if packet.payload_type == self.payload_type:
            self.jitter.observe(packet.timestamp, self.last_received)
            self.jitter.push(packet.sequence, packet.payload)
        else:  # comfort noise plays as silence; a telephone-event is not audio either
            self.comfort_noise += packet.payload_type == self.comfort_noise_payload_type
            self.jitter.push(packet.sequence, None)
            if packet.payload_type == self.dtmf_payload_type:
                self._telephone_event(packet)

    def _telephone_event(self, packet: RtpPacket) -> None:
        """One key per event: its first packet counts, the repeats and end packets that
        share its timestamp do not."""
        event = telephone_event(packet.payload)
        if event is None or packet.timestamp == self._key_timestamp:
            return
        self._key_timestamp = packet.timestamp
        if self.on_key is not None:
            self.on_key(event[0])

    def send(self, payload: bytes, speaking: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        packet = RtpPacket(self.payload_type, self._seq, self._ts, self._ssrc, payload,
                           marker=speaking and not self._was_speaking)
        self._was_speaking = speaking
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME_SAMPLES) & 0xFFFFFFFF
        self.transport.sendto(packet.encode(), self.remote)

    def close(self) -> None:
        for transport in (self.transport, self.rtcp_transport):
            if transport is not None:
                transport.close()


class _RtcpSocket(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.endpoint.rtcp_heard(data, addr)


async def open_rtp(endpoint: RtpEndpoint, host: str, *, rtcp: bool = True,
                   tries: int = 20) -> RtpEndpoint:
    """Bind ``endpoint`` on ``host`` and, with ``rtcp``, a socket for the caller's RTCP:
    on the next port when it is free (RFC 3550 11, what every peer assumes), else on any
    port (announced with ``a=rtcp``, RFC 3605)."""
    loop = asyncio.get_running_loop()

    async def bind(protocol: Callable[[], asyncio.DatagramProtocol], port: int
                   ) -> asyncio.DatagramTransport:
        transport, _ = await loop.create_datagram_endpoint(protocol, local_addr=(host, port))
        return transport

    for attempt in range(tries + 1 if rtcp else 1):
        rtp = await bind(lambda: endpoint, 0)
        if not rtcp:
            return endpoint
        try:  # the last attempt takes any port for RTCP
            endpoint.rtcp_transport = await bind(
                lambda: _RtcpSocket(endpoint), endpoint.local_port + 1 if attempt < tries else 0)
            return endpoint
        except (OSError, OverflowError):
            rtp.close()  # the next port is taken: a new pair
            if attempt == tries:
                raise
    raise AssertionError("unreachable")


class RtpAudioInput(LiveAudioInput):
    """The caller's audio, taken from the jitter buffer every 20 ms on the session clock
    (silence where packets are missing, so the session's time moves on and a turn ends while
    a caller with silence suppression sends nothing). Packets of another length (a phone
    sending 30 ms) are taken by their audio, not their count, so the input never drifts from
    real time. Ends after ``timeout`` seconds without an RTP or RTCP packet: a call that
    never sends audio, or a caller that vanished without a BYE."""

    transport = "sip"
    fills_gaps = False  # the jitter buffer already plays silence on the clock

    def __init__(self, endpoint: RtpEndpoint, runtime: SessionRuntime, *,
                 timeout: float = RTP_INPUT_TIMEOUT) -> None:
        super().__init__(runtime)
        self.endpoint = endpoint
        self.timeout = timeout
        self._pacer = Pacer(runtime.clock, FRAME_SECONDS, RESYNC_SECONDS)
        self._started: float | None = None
        self._backlog = np.zeros(0, np.float32)  # decoded, not yet sent on

    async def receive(self) -> tuple[np.ndarray, int] | None:
        await self._pacer.tick()
        ep = self.endpoint
        loop_now = asyncio.get_running_loop().time()
        if self._started is None:
            self._started = loop_now
        last = ep.last_received if ep.last_received is not None else self._started
        if loop_now - last > self.timeout:
            self.end_reason = f"no audio from the caller for {self.timeout:g} s"
            return None
        pieces = [self._backlog]
        have = len(self._backlog)
        while have < FRAME_SAMPLES and (payload := ep.jitter.pop()) is not None:
            pieces.append(ep.codec.decode(payload))
            have += len(pieces[-1])
        if have < FRAME_SAMPLES:  # missing or late: silence in its place
            pieces.append(np.zeros(FRAME_SAMPLES - have, np.float32))
        audio = np.concatenate(pieces)
        frame, self._backlog = audio[:FRAME_SAMPLES], audio[FRAME_SAMPLES:]
        return frame, TELEPHONE_RATE
