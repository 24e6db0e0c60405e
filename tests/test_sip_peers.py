"""The SIP test harness itself (sip_peers.py), against sipp playing the server.

The telephony tests trust what sipp and baresip report, so the harness is checked on its own
first: a harness bug would otherwise read as a server bug. CI installs sipp and baresip; the
tests skip only where a binary is missing.
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import time

import numpy as np
import pytest
from sip_peers import (
    SCENARIOS,
    UAC_UNSUPPORTED_CODEC,
    baresip_call,
    free_port,
    pcap_duration,
    send_udp,
    sipp_call,
    sipp_uas,
    write_rtp_pcap,
)

from voiceagent.audio import load_audio
from voiceagent.telephony.g711 import decode_alaw, decode_ulaw

CLIP = "osr_harvard_list72_part1_8khz.wav"
needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="sipp not installed (Debian package sip-tester)")
needs_baresip = pytest.mark.skipif(shutil.which("baresip") is None,
                                   reason="baresip not installed (Debian package baresip)")


@pytest.fixture(scope="module")
def speech(speech_dir) -> np.ndarray:
    """Three seconds of telephone speech at 8 kHz."""
    return load_audio(speech_dir / CLIP, 8000)[:3 * 8000]


@pytest.fixture
def pcap(speech, tmp_path):
    return write_rtp_pcap(speech, tmp_path / "speech.pcap")


def level_db(samples: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(samples, dtype=np.float64)) + 1e-12))


@pytest.mark.parametrize("payload_type, decode", [(0, decode_ulaw), (8, decode_alaw)])
def test_rtp_pcap_layout(speech, tmp_path, payload_type, decode):
    path = write_rtp_pcap(speech[:1000], tmp_path / "a.pcap", payload_type=payload_type)
    data = path.read_bytes()
    assert struct.unpack_from("<IHHiIII", data)[::6] == (0xA1B2C3D4, 1)  # magic, Ethernet
    offset, packets = 24, []
    while offset < len(data):
        sec, usec, caplen, length = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16:offset + 16 + caplen]
        assert caplen == length == 14 + 20 + 8 + 12 + 160
        packets.append((sec * 1_000_000 + usec, frame[42:]))
        offset += 16 + caplen
    assert len(packets) == 7  # 1000 samples: six full packets and a padded one
    assert [t for t, _ in packets] == [i * 20_000 for i in range(7)]
    headers = [struct.unpack("!BBHII", rtp[:12]) for _, rtp in packets]
    assert [h[1] for h in headers] == [0x80 | payload_type] + [payload_type] * 6  # marker
    assert [h[2] for h in headers] == list(range(7))
    assert [h[3] for h in headers] == [i * 160 for i in range(7)]
    assert len({h[4] for h in headers}) == 1
    decoded = np.concatenate([decode(rtp[12:]) for _, rtp in packets])[:1000]
    assert np.max(np.abs(decoded - speech[:1000])) < 0.02
    assert pcap_duration(path) == pytest.approx(0.14)


async def test_send_udp_returns_the_reply_or_none():
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data.upper(), addr)

    port = free_port()
    server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
    try:
        assert await send_udp(f"127.0.0.1:{port}", b"garbage") == b"GARBAGE"
    finally:
        server.close()
    assert await send_udp(f"127.0.0.1:{port}", b"garbage", timeout=0.5) is None


class RtpSink(asyncio.DatagramProtocol):
    def __init__(self):
        self.packets: list[tuple[float, tuple, bytes]] = []

    def datagram_received(self, data, addr):
        self.packets.append((time.monotonic(), addr, data))


@pytest.mark.slow
@needs_sipp
@pytest.mark.parametrize("hangup", ["caller", "callee"])
async def test_sipp_call(speech, pcap, tmp_path, hangup):
    """The call flow both ways, and the pcap's audio arriving intact and in real time (the
    stand-in server's SDP points the RTP at a socket of this test)."""
    sink = RtpSink()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: sink, local_addr=("127.0.0.1", 0))
    rtp_port = transport.get_extra_info("sockname")[1]
    scenario = SCENARIOS / ("uas_answer.xml" if hangup == "caller" else "uas_hangup.xml")
    redirected = tmp_path / scenario.name
    redirected.write_text(scenario.read_text().replace("m=audio [media_port]",
                                                       f"m=audio {rtp_port}"))
    port, media_port = free_port(), free_port()
    try:
        async with sipp_uas(redirected, port=port, media_port=free_port(), pause=3.5) as uas:
            result = await sipp_call(f"127.0.0.1:{port}", pcap, local_port=free_port(),
                                     media_port=media_port, hangup=hangup, wait_after=0.5,
                                     timeout=20)
            server = await uas
    finally:
        transport.close()
    assert result.ok, result.errors + result.output[-2000:]
    assert server.ok, server.errors + server.output[-2000:]
    assert result.sent[0].startswith("INVITE sip:agent@127.0.0.1:")
    assert "RTP/AVP 0 8 101" in result.messages
    if hangup == "caller":
        assert [line.split()[0] for line in result.sent] == ["INVITE", "ACK", "BYE"]
        assert result.received[-1] == "SIP/2.0 200 OK"
        assert 3.4 < result.elapsed < 8
    else:
        assert [line.split()[0] for line in result.sent] == ["INVITE", "ACK", "SIP/2.0"]
        assert result.received[-1].startswith("BYE ")

    assert len(sink.packets) == 150  # 3 s
    assert {addr for _, addr, _ in sink.packets} == {("127.0.0.1", media_port)}
    assert 2.7 < sink.packets[-1][0] - sink.packets[0][0] < 3.3
    heard = np.concatenate([decode_ulaw(data[12:]) for _, _, data in sink.packets])
    assert np.corrcoef(heard, speech)[0, 1] > 0.99


@pytest.mark.slow
@needs_sipp
async def test_sipp_unsupported_codec_expects_488():
    port = free_port()
    async with sipp_uas("uas_reject.xml", port=port, media_port=free_port()) as uas:
        result = await sipp_call(f"127.0.0.1:{port}", local_port=free_port(),
                                 media_port=free_port(), scenario=UAC_UNSUPPORTED_CODEC,
                                 timeout=10)
        server = await uas
    assert result.ok and server.ok, result.errors + server.errors
    assert "RTP/AVP 9\r\n" in result.messages or "RTP/AVP 9\n" in result.messages
    assert result.received[-1].startswith("SIP/2.0 488")
    assert [line.split()[0] for line in result.sent] == ["INVITE", "ACK"]


@pytest.mark.slow
@needs_sipp
@needs_baresip
async def test_baresip_call_hears_the_echo(speech_dir, tmp_path):
    port = free_port()
    heard = tmp_path / "heard.wav"
    async with sipp_uas("uas_answer.xml", port=port, media_port=free_port(),
                        rtp_echo=True) as uas:
        result = await baresip_call(f"sip:agent@127.0.0.1:{port}", speech_dir / CLIP, heard,
                                    duration=4.0, local_port=free_port(), timeout=20)
        server = await uas
    assert result.established and result.hangup_by == "caller", result.log
    assert result.returncode == 0, result.log
    assert server.ok, server.errors + server.output[-2000:]
    assert "BYE " in server.messages
    assert result.recording == heard
    audio = load_audio(heard, 8000)
    assert 3.0 < len(audio) / 8000 < 4.5
    sent = load_audio(speech_dir / CLIP, 8000)[:len(audio)]
    assert level_db(audio) > level_db(sent) - 3  # the echo is the speech, not silence
    assert 3.9 < result.elapsed < 10


@pytest.mark.slow
@needs_sipp
@needs_baresip
async def test_baresip_call_server_hangs_up(speech_dir, tmp_path):
    port = free_port()
    async with sipp_uas("uas_hangup.xml", port=port, media_port=free_port(), pause=2.0) as uas:
        result = await baresip_call(f"sip:agent@127.0.0.1:{port}", speech_dir / CLIP,
                                    tmp_path / "heard.wav", duration=30.0,
                                    local_port=free_port(), hangup_by_caller=False,
                                    timeout=20)
        server = await uas
    assert result.established and result.hangup_by == "callee", result.log
    assert result.close_reason == "Connection reset by peer"
    assert server.ok, server.errors + server.output[-2000:]
    assert result.elapsed < 6


@pytest.mark.slow
@needs_sipp
@needs_baresip
async def test_baresip_call_rejected(speech_dir, tmp_path):
    port = free_port()
    async with sipp_uas("uas_reject.xml", port=port, media_port=free_port()) as uas:
        result = await baresip_call(f"sip:agent@127.0.0.1:{port}", speech_dir / CLIP,
                                    tmp_path / "heard.wav", duration=5.0,
                                    local_port=free_port(), timeout=10)
        server = await uas
    assert not result.established and result.hangup_by is None, result.log
    assert result.close_reason.startswith("488"), result.log
    assert result.recording is None
    assert server.ok, server.errors
