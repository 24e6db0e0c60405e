"""Who may start a call on the SIP bridge: the allow-list, the digest challenge, the
per-source rate limit and the release of a slot whose 200 OK is never acknowledged, with
real SIP peers (sipp, baresip) on loopback; the digest arithmetic on its own first.

Sources other than 127.0.0.1 are other loopback addresses (127.0.0.2): Linux routes all of
127/8 to ``lo``, so a second "host" needs no network.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import pytest
from sip_peers import (
    BARESIP,
    SCENARIOS,
    SIPP,
    baresip_call,
    free_port,
    send_udp,
    sipp_call,
    write_rtp_pcap,
)

from voiceagent import Agent
from voiceagent.audio import write_wav
from voiceagent.cli import build_parser
from voiceagent.errors import ConfigError
from voiceagent.events import Event
from voiceagent.ratelimit import RateLimitOptions
from voiceagent.session import resolve_backends
from voiceagent.telephony.serve_sip import sip_options
from voiceagent.telephony.digest import DigestChallenger, authorization, parse_challenge
from voiceagent.telephony.sip_admission import Admission, InboundAuth
from voiceagent.telephony.sip_message import parse
from voiceagent.telephony.sip_server import SipOptions, SipServer

AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")
OTHER_HOST = "127.0.0.2"
needs_peers = pytest.mark.skipif(
    SIPP is None or BARESIP is None,
    reason="sipp and baresip are needed (apt-get install sip-tester baresip)")


# --- the digest arithmetic and the allow-list, on their own -----------------------------

@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_a_challenge_answered_with_the_password_is_accepted(algorithm):
    now = [1000.0]
    challenger = DigestChallenger("2001", "secret", algorithm=algorithm, nonce_ttl=60,
                                  clock=lambda: now[0])
    challenge = parse_challenge(challenger.challenge())
    assert challenge["realm"] == "voiceagent" and challenge["qop"] == "auth"

    def answer(password: str, user: str = "2001") -> str:
        return authorization(challenge, method="INVITE", uri="sip:agent@127.0.0.1",
                             username=user, password=password)

    assert challenger.verify(answer("secret"), "INVITE") == "ok"
    assert challenger.verify(answer("wrong"), "INVITE") == "denied"
    assert challenger.verify(answer("secret", user="2002"), "INVITE") == "denied"
    assert challenger.verify(answer("secret"), "BYE") == "denied"  # method is in the hash
    assert challenger.verify(None, "INVITE") == "denied"
    assert challenger.verify("Basic Zm9vOmJhcg==", "INVITE") == "denied"
    forged = dict(challenge, nonce="5f5e100." + "0" * 32)  # a nonce we never issued
    assert challenger.verify(authorization(forged, method="INVITE", uri="sip:a@b",
                                           username="2001", password="secret"),
                             "INVITE") == "denied"
    now[0] += 61
    assert challenger.verify(answer("secret"), "INVITE") == "stale"
    assert "stale=true" in challenger.challenge(stale=True)


def test_the_allow_list_takes_networks_and_single_addresses():
    options = SipOptions(allow_from=["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    admission = Admission(allow_from=options.allow_from)
    assert admission.allowed("10.1.2.3") and admission.allowed("192.0.2.7")
    assert admission.allowed("2001:db8::1") and admission.allowed("::ffff:10.0.0.1")
    assert not admission.allowed("192.0.2.8") and not admission.allowed("127.0.0.1")
    assert not admission.allowed("not an address")
    assert Admission().allowed("203.0.113.1")  # an empty list allows everyone
    with pytest.raises(ValueError):
        SipOptions(allow_from=["10.0.0.0/33"])
    with pytest.raises(ValueError):
        SipOptions(ack_timeout=40)  # beyond Timer H


def test_the_cli_flags_make_the_options(monkeypatch):
    def options(*flags: str) -> SipOptions:
        return sip_options(build_parser().parse_args(["sip", "agent.py", *flags]))

    monkeypatch.setenv("VOICEAGENT_SIP_INBOUND_PASSWORD", "pw")
    made = options("--allow-from", "10.0.0.0/8", "--allow-from", "192.0.2.7",
                   "--inbound-user", "pbx", "--rate-limit", "60", "--rate-burst", "2",
                   "--ack-timeout", "4", "--drain-timeout", "9")
    assert [str(n) for n in made.allow_from] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert made.inbound_auth.username == "pbx" and made.inbound_auth.password == "pw"
    assert (made.rate_limit.per_minute, made.rate_limit.burst) == (60, 2)
    assert (made.ack_timeout, made.drain_timeout, made.input_timeout) == (4, 9, 30)
    assert options("--rate-limit", "0").rate_limit is None
    with pytest.raises(ConfigError, match="allow_from"):
        options("--allow-from", "10.0.0.0/33")
    monkeypatch.delenv("VOICEAGENT_SIP_INBOUND_PASSWORD")
    with pytest.raises(ConfigError, match="VOICEAGENT_SIP_INBOUND_PASSWORD"):
        options("--inbound-user", "pbx")


async def test_listening_on_every_address_without_an_allow_list_warns(caplog):
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        server = SipServer(AGENT, {}, SipOptions(host=host, port=0))
        await server.start()
        await server.close()
        assert ("takes calls from any address" in caplog.text) == warned


# --- with real peers ------------------------------------------------------------------

@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


@asynccontextmanager
async def running_bridge(backends, **options) -> AsyncIterator[SipServer]:
    events: list[Event] = []
    server = SipServer(AGENT, backends, SipOptions(port=free_port(), **options),
                       subscribers=[events.append])
    await server.start()
    server.events = events  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        await server.close()
    assert not server.calls
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("session-", "sip-"))]


def target(server: SipServer) -> str:
    return f"127.0.0.1:{server.address[1]}"


@pytest.fixture
def silence_pcap(tmp_path):
    return write_rtp_pcap(np.zeros(8000, np.float32), tmp_path / "silence.pcap")


def invite(source: tuple[str, int], formats: str = "9", call_id: str = "") -> bytes:
    """An initial INVITE by hand; G.722 only (``9``) by default, which a bridge that admits
    it answers 488 without taking a slot."""
    host, port = source
    sdp = (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
           f"m=audio {port + 2} RTP/AVP {formats}\r\n")
    return (f"INVITE sip:agent@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"From: <sip:flood@{host}>;tag=f1\r\nTo: <sip:agent@127.0.0.1>\r\n"
            f"Call-ID: {call_id or uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:flood@{host}:{port}>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}").encode()


async def statuses_from(host: str, server: SipServer, count: int) -> list:
    """``count`` INVITEs as fast as they go from one socket on ``host``: the final
    responses, in order."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.setblocking(False)
        for _ in range(count):
            await loop.sock_sendto(sock, invite(sock.getsockname()), server.address)
        finals = []
        while len(finals) < count:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65535), 5)
            msg = parse(data)
            if msg.status >= 200:
                finals.append(msg)
    return finals


@pytest.mark.slow
@needs_peers
async def test_an_answer_never_acknowledged_frees_its_slot(backends, silence_pcap):
    """sipp never ACKs: the 200 OK is resent, then the call is ended with a BYE and the
    only slot is free again for the next caller."""
    async with running_bridge(backends, max_calls=1, ack_timeout=1.5) as server:
        call = asyncio.ensure_future(sipp_call(
            target(server), scenario=SCENARIOS / "uac_no_ack.xml", local_port=free_port(),
            media_port=free_port(), timeout=15))
        for _ in range(100):
            if server.calls:
                break
            await asyncio.sleep(0.05)
        busy = await send_udp(target(server), invite(("127.0.0.1", 9), "0"))
        assert busy is not None and busy.startswith(b"SIP/2.0 486"), busy  # slot taken
        probe = await send_udp(target(server), invite(("127.0.0.1", 9)).replace(
            b"INVITE", b"OPTIONS"))
        assert probe is not None and probe.startswith(b"SIP/2.0 503"), probe  # full
        result = await call
        assert result.ok, result.errors + result.output[-2000:]
        assert result.received.count("SIP/2.0 200 OK") >= 2  # the answer and its resend
        assert result.received[-1].startswith("BYE ")
        assert result.elapsed < 5
        assert not server.calls
        ended = [e for e in server.events if e.type == "session" and e.state == "ended"]
        assert "no ACK" in ended[0].reason
        later = await sipp_call(target(server), silence_pcap, local_port=free_port(),
                                media_port=free_port(), wait_after=0.5, timeout=15)
        assert later.ok, later.errors + later.output[-2000:]
        assert "SIP/2.0 200 OK" in later.received


@pytest.mark.slow
@needs_peers
async def test_digest_credentials_let_a_caller_in_and_their_absence_keeps_it_out(
        backends, speech_dir, tmp_path):
    """sipp and baresip with the password are challenged, answer and are answered; without
    it they get 401 and no call."""
    auth = InboundAuth(username="caller", password="s3cret")
    talk = tmp_path / "talk.wav"
    write_wav(talk, np.zeros(8000 * 3, np.float32), 8000)
    async with running_bridge(backends, inbound_auth=auth) as server:
        with_password = await sipp_call(
            target(server), scenario=SCENARIOS / "uac_auth.xml", local_port=free_port(),
            media_port=free_port(), wait_after=0.5, timeout=15,
            extra_args=["-au", "caller", "-ap", "s3cret"])
        without = await sipp_call(target(server), scenario=SCENARIOS / "uac_refused.xml",
                                  local_port=free_port(), media_port=free_port(), timeout=10)
        phone = await baresip_call(f"sip:agent@{target(server)}", talk, tmp_path / "heard.wav",
                                   duration=1.5, local_port=free_port(), timeout=15,
                                   auth_pass="s3cret")
        stranger = await baresip_call(f"sip:agent@{target(server)}", talk,
                                      tmp_path / "heard2.wav", duration=1.5,
                                      local_port=free_port(), timeout=10)
        calls = [e for e in server.events if e.type == "call"]
    assert with_password.ok, with_password.errors + with_password.output[-2000:]
    assert with_password.received[-2:] == ["SIP/2.0 200 OK"] * 2  # the INVITE, the BYE
    assert "SIP/2.0 401 Unauthorized" in with_password.received
    assert without.ok and without.received[-1] == "SIP/2.0 401 Unauthorized", without.errors
    assert phone.established and phone.hangup_by == "caller", phone.log[-2000:]
    assert not stranger.established and "401" in (stranger.close_reason or ""), stranger.log
    assert len(calls) == 2  # sipp's and baresip's authenticated calls, nobody else's


@pytest.mark.slow
@needs_peers
async def test_a_source_outside_the_allow_list_is_refused(backends):
    async with running_bridge(backends, allow_from=[f"{OTHER_HOST}/32", "10.0.0.0/8"]
                              ) as server:
        refused = await sipp_call(target(server), scenario=SCENARIOS / "uac_refused.xml",
                                  local_port=free_port(), media_port=free_port(), timeout=10)
        (allowed,) = await statuses_from(OTHER_HOST, server, 1)
    assert refused.ok and refused.received[-1].startswith("SIP/2.0 403"), refused.errors
    assert allowed.status == 488  # admitted, then turned down for its G.722-only offer


@pytest.mark.slow
@needs_peers
async def test_a_flood_from_one_source_is_rate_limited_while_another_gets_in(
        backends, silence_pcap):
    async with running_bridge(backends, rate_limit=RateLimitOptions(per_minute=6, burst=3)
                              ) as server:
        flood = await statuses_from(OTHER_HOST, server, 12)
        caller = await sipp_call(target(server), silence_pcap, local_port=free_port(),
                                 media_port=free_port(), wait_after=0.5, timeout=15)
    assert [m.status for m in flood] == [488] * 3 + [503] * 9
    assert all(int(m.get("retry-after")) >= 1 for m in flood[3:])
    assert caller.ok, caller.errors + caller.output[-2000:]
    assert "SIP/2.0 200 OK" in caller.received
