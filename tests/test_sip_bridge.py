"""The SIP bridge on loopback, answering raw SIP over UDP: the standard response to every
kind of bad input, a call that never sends audio, a caller with silence suppression (comfort
noise, RTCP only), DTMF, and the agent hanging up from a tool.

Calls from real SIP peers (sipp, baresip) are in test_sip_calls.py.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid

import pytest

from voiceagent import Agent, AgentOptions
from voiceagent.audio import load_audio
from voiceagent.events import Event
from voiceagent.session import resolve_backends
from voiceagent.telephony.g711 import encode_ulaw
from voiceagent.telephony.rtp import RtpPacket
from voiceagent.telephony.sip_message import SipMessage, parse, response
from voiceagent.telephony.sip_server import SipOptions, SipServer

AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


class Peer:
    """A bare UDP socket speaking SIP by hand (and receiving RTP on a second socket)."""

    def __init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    async def send(self, data: bytes, server: tuple[str, int]) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sip, data, server)

    async def receive(self, timeout: float = 5.0) -> SipMessage | None:
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sip, 65535), timeout)
        except TimeoutError:
            return None
        return parse(data)

    async def final(self, timeout: float = 5.0) -> SipMessage:
        while True:
            msg = await self.receive(timeout)
            assert msg is not None, "no final response"
            if msg.is_request or msg.status >= 200:
                return msg

    def request(self, method: str, *, call_id: str = "", cseq: int = 1, to_tag: str = "",
                body: str = "", extra: str = "") -> bytes:
        call_id = call_id or uuid.uuid4().hex
        to = "<sip:agent@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
        content = "Content-Type: application/sdp\r\n" if body else ""
        return (f"{method} sip:agent@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                f"From: <sip:tester@127.0.0.1>;tag=t1\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContact: <sip:tester@127.0.0.1:{self.port}>\r\n"
                f"Max-Forwards: 70\r\n{extra}{content}Content-Length: {len(body)}\r\n\r\n{body}"
                ).encode()

    def offer(self, formats: str = "0 8 101", extra: str = "") -> str:
        return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {self.rtp_port} RTP/AVP {formats}\r\n"
                f"a=rtpmap:101 telephone-event/8000\r\n{extra}")


@pytest.fixture
async def bridge(backends):
    events: list[Event] = []
    agent = Agent(AGENT.instructions, options=AgentOptions())
    server = SipServer(agent, backends, SipOptions(port=0, input_timeout=2.0, max_calls=1),
                       subscribers=[events.append])
    await server.start()
    peer = Peer()
    server.events = events  # type: ignore[attr-defined]
    yield server, peer
    peer.close()
    await server.close()
    assert not server.calls
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("session-", "sip-"))]


@pytest.mark.parametrize("data, status", [
    (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKx\r\n"
     b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 BYE\r\n\r\n", 400),
    (b"FOO sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bKy\r\n"
     b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 FOO\r\n\r\n", 501),
])
async def test_malformed_and_unknown_requests_get_the_standard_response(bridge, data, status):
    server, peer = bridge
    await peer.send(data.replace(b"{port}", str(peer.port).encode()), server.address)
    reply = await peer.final()
    assert reply.status == status


async def test_bad_input_gets_standard_responses_and_the_bridge_keeps_answering(bridge):
    server, peer = bridge
    addr = server.address
    await peer.send(b"\x00\x01garbage that is not SIP\r\n\r\n", addr)  # dropped: unanswerable
    assert await peer.receive(0.5) is None
    cases = [
        (peer.request("SUBSCRIBE"), 405),
        (peer.request("BYE", to_tag="nope"), 481),
        (peer.request("INVITE", body=peer.offer("9")), 488),  # G.722 only
        (peer.request("INVITE", body=peer.offer("0").replace("RTP/AVP", "RTP/SAVP")), 488),
        (peer.request("INVITE"), 488),  # no offer
        (peer.request("INVITE", body="v=0\r\nnonsense\r\n"), 400),
        (peer.request("INVITE", body=peer.offer(), extra="Require: 100rel\r\n"), 420),
        (peer.request("OPTIONS"), 200),
    ]
    for data, status in cases:
        await peer.send(data, addr)
        reply = await peer.final()
        assert reply.status == status, (data[:40], reply.status, reply.reason)
        if status == 488:
            assert "voiceagent" in (reply.get("warning") or "")
    # A retransmitted request gets the same response, not a second transaction.
    data = peer.request("INVITE", body=peer.offer("9"))
    await peer.send(data, addr)
    first = await peer.final()
    await peer.send(data, addr)
    assert (await peer.final()).encode() == first.encode()
    assert not server.calls


async def answer_call(server: SipServer, peer: Peer, call_id: str,
                      offer: str = "") -> SipMessage:
    await peer.send(peer.request("INVITE", call_id=call_id, body=offer or peer.offer()),
                    server.address)
    ok = await peer.final()
    assert ok.status == 200, ok.reason
    assert "m=audio" in ok.body.decode()
    to_tag = ok.get("to").split("tag=")[1]
    ack = peer.request("ACK", call_id=call_id, to_tag=to_tag)
    await peer.send(ack, server.address)
    return ok


async def test_a_call_that_never_sends_audio_is_ended_with_a_bye(bridge):
    server, peer = bridge
    await answer_call(server, peer, "silent-call")
    rtp = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(peer.rtp, 2048), 5)
    assert RtpPacket.decode(rtp).payload_type == 0  # the bridge's audio flows to the caller
    # A second call while the only slot is taken: busy.
    await peer.send(peer.request("INVITE", body=peer.offer()), server.address)
    assert (await peer.final()).status == 486
    bye = await peer.final(timeout=server.options.input_timeout + 5)
    assert bye.method == "BYE" and bye.call_id == "silent-call"
    assert "no audio" in (bye.get("reason") or "")
    await peer.send(response(bye, 200).encode(), server.address)
    for _ in range(50):
        if not server.calls:
            break
        await asyncio.sleep(0.1)
    assert not server.calls
    ended = [e for e in server.events if e.type == "session" and e.state == "ended"]
    assert ended and "no audio" in ended[0].reason


async def test_dtmf_keys_become_events_and_a_caller_bye_ends_the_call(bridge):
    server, peer = bridge
    ok = await answer_call(server, peer, "dtmf-call")
    call = server.calls["dtmf-call"]
    remote = (call.endpoint.transport.get_extra_info("sockname")[0], call.endpoint.local_port)
    loop = asyncio.get_running_loop()
    silence = bytes([0xFF]) * 160
    seq, ts = 100, 0
    for i in range(60):  # 1.2 s of audio with the keys 4, 2 in the middle (RFC 4733)
        phase = i % 20  # each key: three packets sharing a timestamp, the last with E set
        key = {1: 4, 2: 2}.get(i // 20) if phase < 3 else None
        if key is not None:
            payload = bytes([key, 0x80 if phase == 2 else 0]) + (160 * (phase + 1)).to_bytes(2)
            packet = RtpPacket(101, seq, ts, 42, payload, marker=phase == 0)
        else:
            packet = RtpPacket(0, seq, ts, 42, silence)
            ts += 160
        await loop.sock_sendto(peer.rtp, packet.encode(), remote)
        seq += 1
        await asyncio.sleep(0.02)
    # RTP from an address the SDP did not name is dropped.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(RtpPacket(0, 1, 0, 7, silence).encode(), remote)
        await asyncio.sleep(0.1)
    assert call.endpoint.rejected == 1
    keys = [e.digit for e in server.events if e.type == "dtmf"]
    assert keys == ["4", "2"]
    # One entry (no key for the inter-digit time-out) reaches the LLM as a user turn.
    for _ in range(50):
        turns = [e.text for e in server.events if e.type == "user_turn"]
        if turns:
            break
        await asyncio.sleep(0.1)
    assert turns == ["(The caller pressed 4 2 on the keypad.)"]
    to_tag = ok.get("to").split("tag=")[1]
    await peer.send(peer.request("BYE", call_id="dtmf-call", cseq=2, to_tag=to_tag),
                    server.address)
    reply = await peer.final()
    assert reply.status == 200
    for _ in range(50):
        if not server.calls:
            break
        await asyncio.sleep(0.1)
    ended = [e for e in server.events if e.type == "session" and e.state == "ended"]
    assert ended and ended[0].reason == "the caller hung up"


async def test_closing_the_bridge_hangs_up_its_calls(bridge):
    server, peer = bridge
    await answer_call(server, peer, "closing-call")
    closing = asyncio.ensure_future(server.close())
    bye = await peer.final()
    assert bye.method == "BYE" and bye.call_id == "closing-call"
    assert "bridge closed" in (bye.get("reason") or "")
    await peer.send(response(bye, 200).encode(), server.address)
    await asyncio.wait_for(closing, 5)
    assert not server.calls


async def test_a_reinvite_moves_the_media_and_keeps_the_call(bridge):
    """A session refresh or a move (a phone handing over to another RTP port): the same
    codec on a new address is answered 200 with our SDP; a new codec is refused."""
    server, peer = bridge
    ok = await answer_call(server, peer, "moving-call")
    to_tag = ok.get("to").split("tag=")[1]
    moved = peer.offer("0").replace(f"m=audio {peer.rtp_port}", "m=audio 40000")
    await peer.send(peer.request("INVITE", call_id="moving-call", cseq=2, to_tag=to_tag,
                                 body=moved), server.address)
    reply = await peer.final()
    assert reply.status == 200 and "m=audio" in reply.body.decode()
    assert server.calls["moving-call"].endpoint.remote == ("127.0.0.1", 40000)
    await peer.send(peer.request("INVITE", call_id="moving-call", cseq=3, to_tag=to_tag,
                                 body=peer.offer("8")), server.address)
    assert (await peer.final()).status == 488
    assert "moving-call" in server.calls


@pytest.mark.parametrize("liveness", ["comfort-noise", "rtcp", "rtcp-mux"])
async def test_a_caller_with_silence_suppression_stays_and_is_answered(bridge, speech_dir,
                                                                        liveness):
    """A phone says a sentence, then sends no audio while it listens: only a comfort-noise
    packet (RFC 3389) or an RTCP report (on the next port, or muxed, RFC 5761) now and then,
    for more than twice the input timeout. The turn still ends (the bridge plays silence on
    the clock), the agent answers, and the call stays up."""
    server, peer = bridge
    mux = liveness == "rtcp-mux"
    offer = peer.offer("0 13 101", "a=rtcp-mux\r\n" if mux else "")
    ok = await answer_call(server, peer, f"quiet-{liveness}", offer)
    sdp = ok.body.decode()
    assert "m=audio" in sdp and " 0 101 13\r\n" in sdp and "a=rtpmap:13 CN/8000" in sdp
    assert ("a=rtcp-mux" in sdp) == mux
    rtp_port = int(sdp.split("m=audio ")[1].split()[0])
    call = server.calls[f"quiet-{liveness}"]
    loop = asyncio.get_running_loop()
    speech = load_audio(speech_dir / "osr_harvard_list72_part1_8khz.wav", 8000)[:int(4.3 * 8000)]
    payload = encode_ulaw(speech[:len(speech) // 160 * 160])
    seq = 0
    for i in range(0, len(payload), 160):  # the sentence, in real time
        await loop.sock_sendto(peer.rtp, RtpPacket(0, seq, i, 7, payload[i:i + 160]).encode(),
                               ("127.0.0.1", rtp_port))
        seq += 1
        await asyncio.sleep(0.02)
    quiet_since = time.monotonic()

    async def signs_of_life() -> None:
        nonlocal seq
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp:
            rtcp.bind(("127.0.0.1", 0))
            while True:
                await asyncio.sleep(0.7)
                if liveness == "comfort-noise":  # noise level -70 dBov
                    packet = RtpPacket(13, seq, seq * 160, 7, bytes([70])).encode()
                    await loop.sock_sendto(peer.rtp, packet, ("127.0.0.1", rtp_port))
                    seq += 1
                else:  # an empty receiver report
                    report = struct.pack("!BBHI", 0x80, 201, 1, 7)
                    sock, port = (peer.rtp, rtp_port) if mux else (rtcp, rtp_port + 1)
                    await loop.sock_sendto(sock, report, ("127.0.0.1", port))

    alive = asyncio.ensure_future(signs_of_life())
    try:
        for _ in range(300):
            if any(e.type == "agent_text" and e.final for e in server.events):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(max(0.0, quiet_since + 2.5 * server.options.input_timeout
                                - time.monotonic()))
        assert await peer.receive(0.1) is None  # no BYE
        assert f"quiet-{liveness}" in server.calls
    finally:
        alive.cancel()
        await asyncio.gather(alive, return_exceptions=True)
    assert [e.text for e in server.events if e.type == "user_turn"], "the turn never ended"
    assert any(e.type == "agent_text" and e.final and e.text for e in server.events)
    if liveness == "comfort-noise":
        assert call.endpoint.comfort_noise >= 3
    else:
        assert call.endpoint.rtcp_received >= 3
    assert call.endpoint.jitter.skipped == 0  # muxed RTCP is not taken for audio
    # ...and once the signs of life stop, the input timeout hangs up (after the reply
    # in progress has played)
    bye = await peer.final(timeout=30)
    assert bye.method == "BYE" and "no audio" in (bye.get("reason") or "")
    await peer.send(response(bye, 200).encode(), server.address)
