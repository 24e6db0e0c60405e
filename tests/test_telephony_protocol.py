"""The telephony building blocks on their own: G.711, SIP messages, SDP offer/answer, RTP
packets, the jitter buffer, RFC 4733 events and digest authentication."""

from __future__ import annotations

import numpy as np
import pytest

from voiceagent.telephony import g711
from voiceagent.telephony.digest import DigestError, authorization, parse_challenge
from voiceagent.telephony.media import PCMA, PCMU
from voiceagent.telephony.rtp import JitterBuffer, RtpPacket, is_rtcp, telephone_event
from voiceagent.telephony.sdp import SDPError, build_answer, parse_offer
from voiceagent.telephony.sip_message import SipParseError, parse, response, uri_of

INVITE = (
    "INVITE sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5071;branch=z9hG4bK-1;rport\r\n"
    "v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-0\r\n"
    'From: "Alice" <sip:alice@127.0.0.1>;tag=abc\r\n'
    "t: <sip:agent@127.0.0.1>\r\n"
    "Call-ID: call-1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5071>\r\n"
    "Subject: folded\r\n  continuation\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {n}\r\n\r\n{body}")
OFFER = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         "m=audio 6000 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\n"
         "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
         "m=video 6002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n")


def invite(body: str = OFFER) -> bytes:
    return INVITE.format(n=len(body.encode()), body=body).encode()


def test_g711_known_codes_and_round_trip():
    # Silence and full scale, as in the ITU tables.
    assert g711.encode_ulaw(np.zeros(2, np.float32)) == b"\xff\xff"
    assert g711.encode_alaw(np.zeros(1, np.float32)) == b"\xd5"
    assert g711.encode_ulaw(np.array([1.0, -1.0], np.float32)) == b"\x80\x00"
    x = np.sin(np.linspace(0, 60, 8000)).astype(np.float32) * 0.5
    for codec in (PCMU, PCMA):
        y = codec.decode(codec.encode(x))
        snr = 10 * np.log10(np.sum(x ** 2) / np.sum((x - y) ** 2))
        assert snr > 30, (codec.name, snr)  # G.711 gives about 38 dB on a sine


def test_sip_request_parses_compact_folded_and_multi_valued_headers():
    msg = parse(invite())
    assert (msg.method, msg.uri, msg.call_id, msg.cseq) == (
        "INVITE", "sip:agent@127.0.0.1:5060", "call-1", (1, "INVITE"))
    assert len(msg.get_all("via")) == 2 and msg.branch == "z9hG4bK-1"
    assert msg.get("subject") == "folded continuation"
    assert uri_of(msg.get("from")) == "sip:alice@127.0.0.1"
    reply = parse(response(msg, 200, to_tag="xyz").encode())
    assert reply.status == 200 and reply.get_all("via") == msg.get_all("via")
    assert reply.get("to").endswith(";tag=xyz") and reply.get("cseq") == "1 INVITE"


@pytest.mark.parametrize("data, status, answerable", [
    (b"hello world", 400, False),
    (b"INVITE sip:a@b SIP/3.0\r\nVia: x\r\n\r\n", 505, False),
    (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n", 400, False),
    (invite().replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400, True),
    (invite().replace(b"Content-Length: ", b"Content-Length: 9"), 400, True),
    (b"\xff\xfe" * 10 + b"\r\n\r\n", 400, False),
])
def test_malformed_sip_is_rejected_with_what_is_needed_to_answer(data, status, answerable):
    with pytest.raises(SipParseError) as err:
        parse(data)
    assert err.value.status == status
    assert (err.value.partial is not None) == answerable


def test_sdp_offer_picks_pcma_keeps_dtmf_and_refuses_video_in_the_answer():
    offer = parse_offer(OFFER)
    assert (offer.codec, offer.payload_type, offer.dtmf_payload_type) == (PCMA, 8, 101)
    assert (offer.address, offer.port) == ("127.0.0.1", 6000)
    answer = build_answer(offer, "127.0.0.1", 7000)
    assert "m=audio 7000 RTP/AVP 8 101" in answer and "a=rtpmap:8 PCMA/8000" in answer
    assert "m=video 0 RTP/AVP 96" in answer and answer.count("m=") == 2


@pytest.mark.parametrize("formats, rtpmap, cn", [
    ("0 13", "", 13),  # the static payload type, no rtpmap needed
    ("0 118", "a=rtpmap:118 CN/8000\r\n", 118),  # a dynamic one
    ("0 118", "a=rtpmap:118 CN/16000\r\n", None),  # not for an 8 kHz call
    ("0", "", None),
])
def test_sdp_answer_takes_comfort_noise_and_rtcp_mux_as_offered(formats, rtpmap, cn):
    sdp = ("v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           f"m=audio 6000 RTP/AVP {formats}\r\n{rtpmap}")
    offer = parse_offer(sdp)
    assert offer.comfort_noise_payload_type == cn and not offer.rtcp_mux
    answer = build_answer(offer, "127.0.0.1", 7000, rtcp_port=7001)
    assert f"m=audio 7000 RTP/AVP 0{f' {cn}' if cn else ''}\r\n" in answer
    assert ("CN/8000" in answer) == bool(cn) and "rtcp" not in answer
    assert "a=rtcp:7003" in build_answer(offer, "127.0.0.1", 7000, rtcp_port=7003)
    muxed = parse_offer(sdp + "a=rtcp-mux\r\n")
    assert muxed.rtcp_mux
    assert "a=rtcp-mux" in build_answer(muxed, "127.0.0.1", 7000, rtcp_port=7003)


@pytest.mark.parametrize("sdp, status", [
    (OFFER.replace(" 9 8 0 101", " 9 101"), 488),  # only G.722
    (OFFER.replace("RTP/AVP 9 8 0 101", "RTP/SAVP 0"), 488),  # SRTP
    ("v=0\r\nm=video 5 RTP/AVP 96\r\n", 488),  # no audio
    ("hello", 400),
    (OFFER.replace("c=IN IP4 127.0.0.1", "c=garbage"), 400),
])
def test_sdp_offers_we_cannot_take(sdp, status):
    with pytest.raises(SDPError) as err:
        parse_offer(sdp)
    assert err.value.status == status


def test_rtp_packet_round_trip_and_telephone_event():
    packet = RtpPacket(101, 65535, 4000, 0xDEADBEEF, bytes([11, 0x80 | 10, 0, 160]), True)
    back = RtpPacket.decode(packet.encode())
    assert back == packet
    assert telephone_event(back.payload) == ("#", True)
    with pytest.raises(ValueError):
        RtpPacket.decode(b"\x00" * 20)  # version 0
    # RTCP muxed on the RTP port is told apart by its packet type (RFC 5761 4)
    assert is_rtcp(bytes([0x80, 201, 0, 1]) + bytes(4)) and not is_rtcp(packet.encode())
    assert not is_rtcp(RtpPacket(0, 1, 2, 3, bytes(160), True).encode())


def test_jitter_buffer_reorders_conceals_losses_and_drops_late_packets():
    jb = JitterBuffer(depth=3, max_depth=6)
    for seq in (65534, 0, 65535):  # out of order, across the wrap
        jb.push(seq, bytes([seq & 0xFF]))
    assert [jb.pop() for _ in range(3)] == [b"\xfe", b"\xff", b"\x00"]
    jb.push(3, b"\x03")  # 1 and 2 are missing; 3 is waiting
    assert jb.pop() is None and jb.pop() is None and jb.pop() == b"\x03"
    assert jb.lost == 2
    jb.push(2, b"\x02")  # too late now
    assert jb.late == 1 and jb.pop() is None  # nothing due: an underrun, not a loss
    for seq in range(4, 14):  # a sender running ahead cannot build up delay
        jb.push(seq, b"x")
    assert len(jb._packets) <= 6


def test_digest_matches_rfc_2617_example_and_refuses_unknown_algorithms():
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    header = authorization(challenge, method="GET", uri="/dir/index.html", username="Mufasa",
                           password="Circle Of Life", cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    with pytest.raises(DigestError):
        authorization({"algorithm": "MD5-sess-x"}, method="REGISTER", uri="sip:x",
                      username="u", password="p")


async def test_rtp_input_takes_packets_of_any_length_in_real_time():
    """A phone sending 30 ms packets: every 20 ms tick gets 20 ms of its audio, in order,
    so the input keeps to real time instead of falling behind."""
    from voiceagent.clock import SessionClock
    from voiceagent.events import EventBus
    from voiceagent.metrics import MetricsTracker
    from voiceagent.runtime import SessionRuntime
    from voiceagent.telephony.rtp import RtpAudioInput, RtpEndpoint

    events = EventBus("s")
    runtime = SessionRuntime("s", SessionClock(), events, MetricsTracker(events))
    endpoint = RtpEndpoint(("127.0.0.1", 9), PCMU, 0, None, jitter=JitterBuffer(depth=2))
    source = RtpAudioInput(endpoint, runtime)
    ramp = np.linspace(-0.5, 0.5, 240 * 4, dtype=np.float32)
    for i in range(4):
        endpoint.jitter.push(i, PCMU.encode(ramp[i * 240:(i + 1) * 240]))
    frames = [await source.receive() for _ in range(6)]
    assert all(rate == 8000 and len(f) == 160 for f, rate in frames)
    got = np.concatenate([f for f, _ in frames])
    assert np.allclose(got, PCMU.decode(PCMU.encode(ramp)), atol=1e-6)


def test_an_adaptive_jitter_buffer_follows_the_network():
    """A steady feed plays one packet behind; a jittery one is measured as such and kept
    deeper, which spares gaps in its playout."""
    steady = JitterBuffer(depth=3, max_depth=12, adaptive=True)
    for n in range(50):
        steady.observe(n * 160, 100.0 + n * 0.02 + 0.0003 * (n % 3))
    assert steady.depth == 1 and steady.jitter < 0.001
    rng = np.random.default_rng(1)
    # 0-40 ms of delay each (the first three on time, so playback starts early)
    arrivals = [n * 0.02 + (0.0 if n < 3 else float(rng.uniform(0, 0.04))) for n in range(400)]
    jittery = JitterBuffer(depth=1, max_depth=12, adaptive=True)
    for n in range(400):
        jittery.observe(n * 160, arrivals[n])
    assert 2 <= jittery.depth <= 6 and 0.008 < jittery.jitter < 0.03

    def gaps(depth: int) -> int:
        """Silent ticks in the middle of the feed played on a 20 ms clock."""
        buffer, played, i = JitterBuffer(depth, 12), [], 0
        order = sorted(range(400), key=arrivals.__getitem__)
        for tick in range(460):
            while i < 400 and arrivals[order[i]] <= tick * 0.02 + 1e-9:
                buffer.push(order[i], b"x")
                i += 1
            played.append(buffer.pop() is not None)
        first, last = played.index(True), len(played) - played[::-1].index(True)
        return played[first:last].count(False)

    assert gaps(jittery.depth) < gaps(1)
    # timestamps wrap at 2**32 without a jump in the estimate
    wrap = JitterBuffer(adaptive=True)
    for n in range(20):
        wrap.observe((0xFFFFFF00 + n * 160) & 0xFFFFFFFF, n * 0.02)
    assert wrap.jitter < 1e-6 and wrap.depth == 1
