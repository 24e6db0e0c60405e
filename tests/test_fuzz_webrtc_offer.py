"""Malformed WebRTC offers through the real ``/api/offer`` handler: each is a 400 (or 422)
with one line saying what is wrong, never a 500, and none costs a session slot, a peer
connection, a task or a thread; a good offer is answered afterwards.

The malformed offers are mutations of a real Chromium offer (tests/data/chromium_offer.sdp,
captured from the system Chromium with a fake microphone and the page's data channel) and
of a live aiortc one. The agent runs on fake backends: no model is needed to answer.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from fuzzing import fuzz_settings, mutated_lines, tried
from hypothesis import event, given
from hypothesis import strategies as st
from webrtc_harness import running_server

from voiceagent import Agent
from voiceagent.agent import AgentOptions, EndpointingOptions
from voiceagent.server import ServerConfig, create_app
from voiceagent.testing import LoudnessVAD, ScriptedLLM, ScriptedSTT, ToneTTS
from voiceagent.transports.ice import restrict_host_addresses

#: SDP lines end in CRLF, whatever a checkout does to the file's line ends.
CHROMIUM_OFFER = "\r\n".join(
    (Path(__file__).parent / "data" / "chromium_offer.sdp").read_text().splitlines()) + "\r\n"
AGENT = Agent("You answer briefly.", options=AgentOptions(
    endpointing=EndpointingOptions(mode="vad")))


#: The lines that make an m-line's transport: ICE credentials, DTLS fingerprint and role.
TRANSPORT = ("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup")


def fake_backends() -> dict[str, object]:
    return {"vad": LoudnessVAD(), "stt": ScriptedSTT("hello"), "llm": ScriptedLLM(),
            "tts": ToneTTS()}


def lines(sdp: str) -> list[str]:
    return sdp.split("\r\n")


def without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in lines(sdp) if not line.startswith(prefix))


def replaced(sdp: str, prefix: str, new: str) -> str:
    return "\r\n".join(new if line.startswith(prefix) else line for line in lines(sdp))


def malformed(offer: str) -> dict[str, str]:
    """What a broken client, a proxy that mangles SDP or a fuzzer sends, by what is wrong."""
    return {
        "no fingerprint": without(offer, "a=fingerprint"),
        "no setup": without(offer, "a=setup"),  # aiortc: AttributeError, was a 500
        "no ice-ufrag": without(offer, "a=ice-ufrag"),
        "no ice-pwd": without(offer, "a=ice-pwd"),
        "no rtcp-mux": without(offer, "a=rtcp-mux"),
        "garbage candidate": replaced(offer, "a=candidate", "a=candidate:garbage"),
        "candidate with a DNS name": replaced(
            offer, "a=candidate", "a=candidate:1 1 udp 1 attacker.example 9 typ host"),
        "m=audio with no payloads": replaced(offer, "m=audio", "m=audio 9 UDP/TLS/RTP/SAVPF"),
        "no codec we take": replaced(replaced(without(without(offer, "a=fmtp"), "a=rtcp-fb"),
                                              "a=rtpmap", "a=rtpmap:0 G729/8000"),
                                     "m=audio", "m=audio 9 UDP/TLS/RTP/SAVPF 0"),
        "short fingerprint": replaced(offer, "a=fingerprint", "a=fingerprint:sha-256 AB:CD"),
        "bad setup": replaced(offer, "a=setup", "a=setup:sideways"),
        "fmtp without rtpmap": replaced(offer, "a=rtcp-mux", "a=rtcp-mux\r\na=fmtp:120 x=1"),
        "BUNDLE of unknown mids": replaced(offer, "a=group:BUNDLE", "a=group:BUNDLE 7 8"),
        "truncated in a line": offer[:offer.index("a=fingerprint") + 20],
        "truncated mid-way": offer[:len(offer) // 2],
        "binary junk": offer + "\x00\x01\xff\xfe junk\r\n",
        "junk line": offer.replace("\r\na=mid:0", "\r\nthis is not sdp\r\na=mid:0"),
        "second v= line": offer.replace("s=-", "v=banana"),
        "only the first line": "v=0\r\n",
        # well formed, so the checks let it through: aiortc's own error becomes the 400
        "video in no codec aiortc has": offer + "\r\n".join(
            ["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=mid:v", "a=rtcp-mux", "a=rtpmap:96 X/90000"]
            + [next(line for line in lines(offer) if line.startswith(prefix))
               for prefix in TRANSPORT]) + "\r\n",
        "not SDP": "hello",
    }


def check_rejection(name: str, res: httpx.Response) -> None:
    assert res.status_code in (400, 422), (name, res.status_code, res.text)
    error = res.json()["error"]
    assert error and "\n" not in error and "Traceback" not in error, (name, error)


class Client:
    """A real aiortc peer with a (silent) microphone and the events data channel."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTrack(AudioStreamTrack())
        self.channel = self.pc.createDataChannel("events")

    async def offer(self) -> str:
        restrict_host_addresses(self.pc, ["127.0.0.1"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp


def session_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("session-")]


async def until(condition, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_malformed_offers_get_400_with_one_line_and_leave_nothing_behind():
    app = create_app(AGENT, fake_backends(), ServerConfig(host_addresses=["127.0.0.1"],
                                                          max_sessions=1, rate_limit=None))
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        client = Client()
        aiortc_offer = await client.offer()
        await asyncio.sleep(0.2)  # let the client's gathering settle before the baseline
        tasks, threads = len(asyncio.all_tasks()), threading.active_count()
        for source, offer in (("chromium", CHROMIUM_OFFER), ("aiortc", aiortc_offer)):
            for name, sdp in malformed(offer).items():
                res = await http.post("/api/offer", json={"sdp": sdp, "type": "offer"})
                check_rejection(f"{source}: {name}", res)
        await asyncio.sleep(0.2)
        assert len(app.state.registry) == 0
        assert len(asyncio.all_tasks()) <= tasks and threading.active_count() <= threads

        # The slot is free and the server answers a good offer: the client connects.
        res = await http.post("/api/offer", json={"sdp": aiortc_offer, "type": "offer"})
        assert res.status_code == 200, res.text
        await client.pc.setRemoteDescription(RTCSessionDescription(
            sdp=res.json()["sdp"], type="answer"))
        await until(lambda: client.channel.readyState == "open")
        client.channel.send('{"type": "end"}')
        await until(lambda: len(app.state.registry) == 0)
        await client.pc.close()


async def test_an_unmodified_chromium_offer_is_answered():
    app = create_app(AGENT, fake_backends(), ServerConfig(host_addresses=["127.0.0.1"],
                                                          rate_limit=None))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        res = await http.post("/api/offer", json={"sdp": CHROMIUM_OFFER, "type": "offer"})
        assert res.status_code == 200, res.text
        assert "a=setup:active" in res.json()["sdp"]
        await app.state.registry.close_all()  # at once: the server shutting down
    assert not session_tasks()


# -- fuzzing the offer path -----------------------------------------------------------------


@pytest.fixture(scope="module")
def offer_server():
    """The app on its own event loop, driven one request at a time by the fuzz test."""
    loop = asyncio.new_event_loop()
    app = create_app(AGENT, fake_backends(), ServerConfig(host_addresses=["127.0.0.1"],
                                                          max_sessions=1, rate_limit=None))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    yield loop, app, http
    loop.run_until_complete(http.aclose())
    loop.run_until_complete(app.state.registry.close_all())
    # Nothing of the sessions and peer connections is left once aiortc's own
    # connection tasks have seen their peer connections closed.
    left = loop.run_until_complete(_settled(loop))
    loop.close()
    assert not left, left


async def _settled(loop: asyncio.AbstractEventLoop, timeout: float = 10.0) -> list[str]:
    me = asyncio.current_task()
    for _ in range(int(timeout / 0.05)):
        left = [t.get_name() for t in asyncio.all_tasks(loop) if t is not me]
        if not left:
            break
        await asyncio.sleep(0.05)
    return left


@st.composite
def offers(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["chromium", "raw"]))
    if kind == "raw":
        tried("WebRTC offer: raw text")
        return "v=0\r\n" * draw(st.booleans()) + draw(st.text(max_size=400))
    tried("WebRTC offer: mutated Chromium offer")
    return "\r\n".join(draw(mutated_lines(lines(CHROMIUM_OFFER), "offer: chromium")))


@fuzz_settings(60)
@given(offers())
def test_fuzzed_offers_through_the_real_handler_are_never_a_500(offer_server, sdp):
    loop, app, http = offer_server

    async def post() -> httpx.Response:
        res = await http.post("/api/offer", json={"sdp": sdp, "type": "offer"})
        await app.state.registry.close_all()  # an answered one: hang up before the next
        return res

    res = loop.run_until_complete(post())
    event(f"offer: answered {res.status_code}")
    if res.status_code != 200:
        check_rejection("fuzzed", res)
    assert len(app.state.registry) == 0
