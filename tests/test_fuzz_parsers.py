"""Property-based fuzzing of the telephony parsers: SIP messages, SIP's SDP offers, RTP and
RFC 4733 packets, the jitter buffer and the media-stream JSON of every provider.

The property is the parsers' contract: any input gives a result or the parser's documented
error (:class:`SipParseError`, :class:`SDPError`, ``ValueError`` for RTP,
:class:`MessageError`), never another exception; and what parses can be answered (a SIP
response, an SDP answer) and parses again. Inputs are valid messages mutated line by line
and field by field, and raw bytes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from fuzzing import SIP_OFFER, fuzz_settings, junk_text, mutated_lines, sip_lines, tried
from hypothesis import example, given
from hypothesis import strategies as st

from voiceagent.events import DTMF_KEYS
from voiceagent.telephony.media import PCMU
from voiceagent.telephony.rtp import JitterBuffer, RtpEndpoint, RtpPacket, telephone_event
from voiceagent.telephony.sdp import SDPError, build_answer, parse_offer
from voiceagent.telephony.serializers import (
    SERIALIZERS,
    MessageError,
    StreamDTMF,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
)
from voiceagent.telephony.sip_message import SipParseError, parse, response, uri_of

METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "REGISTER", "PRACK"]


@st.composite
def sip_datagrams(draw: st.DrawFn) -> bytes:
    """Mutated requests and responses, SDP bodies mutated inside valid INVITEs, raw bytes."""
    kind = draw(st.sampled_from(["request", "response", "sdp-body", "raw"]))
    if kind == "raw":
        tried("SIP message: raw bytes")
        return draw(st.binary(max_size=2000))
    if kind == "sdp-body":
        tried("SIP message: INVITE with a mutated SDP body")
        body = draw(mutated_lines(SIP_OFFER.split("\r\n"), "sip: INVITE with its SDP"))
        text = "\r\n".join(body)
        head = sip_lines("INVITE")[:-3] + [f"Content-Length: {len(text.encode())}"]
        return ("\r\n".join(head) + "\r\n\r\n" + text).encode("utf-8", "surrogatepass")
    lines = sip_lines(draw(st.sampled_from(METHODS)))
    if kind == "response":
        lines[0] = f"SIP/2.0 {draw(st.sampled_from(['100', '200', '401', '486']))} Reason"
    tried(f"SIP message: mutated {kind}")
    mutated = draw(mutated_lines(lines, f"sip: {kind}"))
    separator = draw(st.sampled_from(["\r\n", "\n"]))
    return separator.join(mutated).encode("utf-8", "surrogatepass")


def _sip(replace: str, by: str) -> bytes:
    return "\r\n".join(sip_lines("OPTIONS")).replace(replace, by).encode()


@fuzz_settings(400)
@given(sip_datagrams())
# each raised ValueError: found by this test (the unclosed '<', which made answering an
# INVITE fail), or by reading the parser for what it should try (the digits)
@example(_sip("Contact: <sip:alice@127.0.0.1:5071>", "Contact: <"))
@example(_sip("Content-Length: 0", "Content-Length: \u00b2"))
@example(_sip("OPTIONS sip:agent@127.0.0.1:5060 SIP/2.0", "SIP/2.0 \u00b2\u00b2\u00b2 OK"))
def test_sip_parser_raises_only_sip_parse_errors_and_what_parses_can_be_answered(data):
    try:
        msg = parse(data)
    except SipParseError as exc:
        assert 400 <= exc.status < 600
        if exc.partial is not None:  # the server answers these: it must be able to
            parse(response(exc.partial, exc.status).encode())
        return
    again = parse(msg.encode())
    assert (again.method, again.status, again.body) == (msg.method, msg.status, msg.body)
    if msg.is_request:
        reply = parse(response(msg, 200, to_tag="t1").encode())
        assert reply.call_id == msg.call_id and reply.cseq == msg.cseq
    for name in ("from", "to", "contact"):
        uri_of(msg.get(name) or "")


@st.composite
def sip_offers(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        tried("SIP SDP offer: raw text")
        return draw(st.text(max_size=500))
    tried("SIP SDP offer: mutated")
    lines = draw(mutated_lines(SIP_OFFER.split("\r\n"), "sdp"))
    return draw(st.sampled_from(["\r\n", "\n"])).join(lines)


def _sip_offer(audio: str, connection: str = "IN IP4 127.0.0.1") -> str:
    return f"v=0\r\nc={connection}\r\nm=audio {audio}\r\na=rtpmap:0 PCMU/8000\r\n"


@fuzz_settings(400)
@given(sip_offers())
# found by reading the parser for what this test should try: each raised ValueError, made
# an answer no RTP packet could carry, or would make the bridge look a name up in DNS
@example(_sip_offer("\u00b2 RTP/AVP 0"))
@example(_sip_offer("6000 RTP/AVP 0 \u00b2"))
@example(_sip_offer("99999 RTP/AVP 0"))
@example(_sip_offer("6000 RTP/AVP 999").replace("rtpmap:0", "rtpmap:999"))
@example(_sip_offer("6000 RTP/AVP 0", "IN IP4 pbx.example.com"))
def test_sip_sdp_offers_raise_only_sdp_errors_and_what_parses_is_answerable(sdp):
    try:
        offer = parse_offer(sdp)
    except SDPError as exc:
        assert exc.status in (400, 488)
        return
    assert 0 < offer.port <= 65535 and 0 <= offer.payload_type < 128
    assert offer.dtmf_payload_type is None or 0 <= offer.dtmf_payload_type < 128
    answer = parse_offer(build_answer(offer, "127.0.0.1", 4000))
    assert (answer.codec, answer.port) == (offer.codec, 4000)


@st.composite
def rtp_packets(draw: st.DrawFn) -> bytes:
    """Raw bytes, or a valid packet's header bits flipped (CSRC count, extension, padding)
    and its tail cut."""
    if draw(st.booleans()):
        tried("RTP/RFC 4733 packet: raw bytes")
        return draw(st.binary(max_size=300))
    tried("RTP/RFC 4733 packet: mutated header, cut short")
    data = bytearray(RtpPacket(draw(st.integers(0, 127)), draw(st.integers(0, 0xFFFF)),
                               draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1)),
                               draw(st.binary(max_size=200))).encode())
    data[0] = (data[0] & 0xC0) | draw(st.integers(0, 0x3F))  # padding, extension, CSRCs
    if draw(st.booleans()) and len(data) > 12:
        data[-1] = draw(st.integers(0, 255))  # what the padding byte claims
    return bytes(data[:draw(st.integers(0, len(data)))])


@fuzz_settings(500)
@given(rtp_packets())
def test_rtp_and_rfc4733_parsers_raise_only_value_errors(data):
    try:
        packet = RtpPacket.decode(data)
    except ValueError:
        return
    assert 0 <= packet.payload_type < 128 and len(packet.payload) <= len(data) - 12
    key = telephone_event(packet.payload)
    assert key is None or (len(key[0]) == 1 and isinstance(key[1], bool))
    assert RtpPacket.decode(packet.encode()).payload == packet.payload


@st.composite
def rtp_streams(draw: st.DrawFn) -> list[bytes]:
    """What a caller's RTP port receives: audio, RFC 4733 events (keys, repeats, ends,
    events that are not keys), comfort noise, other payload types, SSRC changes, junk."""
    tried("RTP/RFC 4733 stream: 1-40 datagrams into a call's endpoint")
    packets = []
    for _ in range(draw(st.integers(1, 40))):
        if draw(st.integers(0, 9)) == 0:
            packets.append(draw(rtp_packets()))
            continue
        pt = draw(st.sampled_from([0, 101, 13, 8, 127]))
        payload = (bytes([draw(st.integers(0, 255)), draw(st.integers(0, 255))]) + b"\x00\xa0"
                   if pt == 101 else draw(st.binary(max_size=320)))
        packets.append(RtpPacket(pt, draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 99)),
                                 draw(st.sampled_from([1, 2])), payload).encode())
    return packets


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@fuzz_settings(200)
@given(rtp_streams())
def test_a_calls_rtp_endpoint_takes_any_datagram(loop, packets):
    keys: list[str] = []
    endpoint = RtpEndpoint(("127.0.0.1", 6000), PCMU, 0, 101, on_key=keys.append)

    async def receive() -> None:
        for data in packets:
            endpoint.datagram_received(data, ("127.0.0.1", 6000))
            while endpoint.jitter.pop() is not None:
                pass

    loop.run_until_complete(receive())
    # from the caller's address, each datagram is RTP, muxed RTCP (RFC 5761) or malformed
    assert endpoint.received + endpoint.rtcp_received + endpoint.malformed == len(packets)
    assert not endpoint.rejected
    assert all(key in DTMF_KEYS for key in keys)
    assert len(endpoint.jitter._packets) <= endpoint.jitter.max_depth


@fuzz_settings(200)
@given(st.lists(st.one_of(st.integers(0, 0xFFFF), st.none()), max_size=300),
       st.integers(1, 10))
def test_jitter_buffer_takes_any_sequence_and_stays_bounded(ops, depth):
    """Any order of arrivals (numbers) and 20 ms ticks (None): no error, no growth."""
    tried("jitter buffer: arrivals and ticks in any order")
    buffer = JitterBuffer(depth, max_depth=2 * depth + 2)
    for op in ops:
        if op is None:
            buffer.pop()
        else:
            buffer.push(op, b"x")
        assert len(buffer._packets) <= buffer.max_depth


def _twilio_messages() -> list[dict[str, Any]]:
    payload = base64.b64encode(b"\xff" * 160).decode()
    return [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
         "start": {"streamSid": "MZ1", "callSid": "CA1", "accountSid": "AC1",
                   "tracks": ["inbound"], "customParameters": {"from": "+1555"},
                   "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                   "channels": 1}}},
        {"event": "media", "sequenceNumber": "2", "streamSid": "MZ1",
         "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": payload}},
        {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "5"}},
        {"event": "mark", "streamSid": "MZ1", "mark": {"name": "reply-1"}},
        {"event": "stop", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}},
    ]


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(children, max_size=3),
                     st.dictionaries(st.text(max_size=8), children, max_size=3))


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | junk_text,
                            _containers, max_leaves=8)


@st.composite
def mutated_json(draw: st.DrawFn, message: dict[str, Any]) -> dict[str, Any]:
    """One field somewhere in the message removed or given another value or type."""
    message = json.loads(json.dumps(message))
    path = [message]
    while isinstance(path[-1], dict) and path[-1] and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(path[-1])))
        if not isinstance(path[-1][key], dict):
            break
        path.append(path[-1][key])
    node = path[-1]
    if node:
        key = draw(st.sampled_from(sorted(node)))
        if draw(st.booleans()):
            del node[key]
        else:
            node[key] = draw(_json_values)
    else:
        node[draw(st.text(max_size=8))] = draw(_json_values)
    return message


@st.composite
def media_stream_texts(draw: st.DrawFn, provider: str) -> str:
    kind = draw(st.sampled_from(["mutated", "raw", "nested"]))
    tried(f"media-stream JSON ({provider}): {kind}")
    if kind == "raw":
        return draw(st.text(max_size=300))
    if kind == "nested":  # deep nesting: json's recursion limit
        return "[" * draw(st.integers(1, 100_000))
    return json.dumps(draw(mutated_json(draw(st.sampled_from(_twilio_messages())))))


_INBOUND = (StreamStart, StreamMedia, StreamDTMF, StreamMark, StreamStop, type(None))


@fuzz_settings(300)
@given(st.data())
def test_media_stream_json_raises_only_message_errors_for_every_provider(data):
    for name, serializer in SERIALIZERS.items():
        text = data.draw(media_stream_texts(name))
        try:
            parsed = serializer().parse(text)
        except MessageError as exc:
            assert exc.close_code in (1003, 1007, 1008, 1009) and str(exc)
            continue
        assert isinstance(parsed, _INBOUND)


@given(junk_text)
@fuzz_settings(50)
def test_uri_of_takes_any_header_value(value):
    tried("SIP header value: junk (uri_of)")
    assert isinstance(uri_of(value), str)
