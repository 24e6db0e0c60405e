"""The WebRTC server's HTTP side and session limits, driven over real loopback sockets.

Offers that must be accepted come from a real aiortc peer (with an audio track and a data
channel; webrtc_harness.Client) rather than a browser, to keep these tests quick;
test_webrtc_e2e.py uses Chromium.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from cli_server import voiceagent_serve
from webrtc_harness import Client, running_server, until

from voiceagent import Agent
from voiceagent.errors import ConfigError
from voiceagent.server import ServerConfig, create_app
from voiceagent.session import resolve_backends
from voiceagent.transports.ice import parse_ice_server
from voiceagent.transports.webrtc import WebRTCAudioOutput, _frame_to_mono

AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


def session_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("session-")]


async def test_ice_server_urls_parse_into_standard_fields():
    turn = parse_ice_server("turn:alice:p%40ss@turn.example.com:3478?transport=tcp")
    assert (turn.urls, turn.username, turn.credential) == (
        "turn:turn.example.com:3478?transport=tcp", "alice", "p@ss")
    assert parse_ice_server("stun:stun.example.com:3478").username is None
    for bad in ("http://x", "turn:@host", "stun:"):
        with pytest.raises(ConfigError):
            parse_ice_server(bad)


async def test_inbound_stereo_frames_become_mono():
    import av

    stereo = av.AudioFrame.from_ndarray(
        np.array([[1000, 3000] * 960], dtype=np.int16), format="s16", layout="stereo")
    mono = _frame_to_mono(stereo)
    assert mono.shape == (960,) and np.allclose(mono, 2000 / 32768)


async def test_bad_requests_get_json_errors_and_the_server_keeps_serving(backends):
    app = create_app(AGENT, backends, ServerConfig(host_addresses=["127.0.0.1"], token=TOKEN,
                                                   max_sessions=1))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        no_audio = RTCPeerConnection()
        no_audio.createDataChannel("events")
        await no_audio.setLocalDescription(await no_audio.createOffer())
        cases = [
            ({}, b'{"sdp": "v=0"', 401),  # the token is checked first
            ({"Authorization": "Bearer wrong"}, b"{}", 401),
            (auth, b'{"sdp": ', 400),
            (auth, b'["offer"]', 400),
            (auth, json.dumps({"sdp": "v=0\r\nm=audio junk\r\n", "type": "offer"}).encode(), 400),
            (auth, json.dumps({"sdp": "hello", "type": "offer"}).encode(), 400),
            (auth, json.dumps({"sdp": no_audio.localDescription.sdp, "type": "offer"}).encode(),
             422),
            (auth, b"x" * 200_000, 413),
        ]
        await no_audio.close()
        for headers, body, status in cases:
            res = await http.post("/api/offer", content=body,
                                  headers={**headers, "Content-Type": "application/json"})
            assert res.status_code == status, (body[:40], res.text)
            assert res.json()["error"]
        assert len(app.state.registry) == 0 and not session_tasks()

        first, second = Client(), Client()
        await first.connect(http, auth)
        res = await http.post("/api/offer", json=await second.offer(), headers=auth)
        assert res.status_code == 503 and "too many" in res.json()["error"]
        health = await http.get("/health")  # full: out of a load balancer's rotation
        assert health.status_code == 503 and health.json()["status"] == "full"
        assert health.json()["sessions"] == 1 and health.json()["cpu"]["cpus"] >= 1

        # Malformed data-channel messages get an error event back; the session lives on.
        for bad in ("{not json", '{"type": "dance"}', '{"type": "text", "text": 3}', "[1]"):
            first.channel.send(bad)
        await until(lambda: sum(m["type"] == "error" for m in first.messages) >= 4)
        assert all(m["source"] == "datachannel" for m in first.messages if m["type"] == "error")
        assert len(app.state.registry) == 1

        await first.pc.close()  # hang up: the session ends and leaves nothing behind
        await until(lambda: len(app.state.registry) == 0 and not session_tasks())
        await second.pc.close()

        third = Client()
        await third.connect(http, auth)
        third.channel.send('{"type": "end"}')
        await until(lambda: len(app.state.registry) == 0 and not session_tasks())
        assert any(m["type"] == "session" and m["state"] == "ended" for m in third.messages)
        await third.pc.close()
        health = await http.get("/health")
        assert {k: v for k, v in health.json().items() if k not in ("tasks", "cpu")} == {
            "status": "ok", "sessions": 0, "max_sessions": 1}
        page = await http.get("/")
        assert page.status_code == 200 and "app.js" in page.text
        assert (await http.get("/static/app.js")).status_code == 200
        assert (await http.get("/api/config")).json()["tokenRequired"] is True


async def test_the_outbound_track_is_paced_and_a_cut_reply_fades():
    """recv() hands out one 20 ms frame per 20 ms, with continuous pts; an interruption
    fades the held-back tail instead of cutting it."""
    from voiceagent.clock import SessionClock
    from voiceagent.events import EventBus
    from voiceagent.frames import AgentAudioFrame, InterruptionFrame, ReplyStartedFrame
    from voiceagent.metrics import MetricsTracker
    from voiceagent.runtime import SessionRuntime
    from voiceagent.transports.webrtc import AgentAudioTrack

    bus = EventBus("t")
    rt = SessionRuntime("t", SessionClock(), bus, MetricsTracker(bus))
    out = WebRTCAudioOutput(rt)
    track = AgentAudioTrack(out, rt.clock)
    await out.on_system(ReplyStartedFrame(reply_id=1))
    tone = (0.5 * np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000)).astype(np.float32)
    await out.process(AgentAudioFrame(samples=tone, sample_rate=48_000, reply_id=1, text="hi",
                                      chunk_end=True))
    start = rt.clock.now()
    frames = [await track.recv() for _ in range(10)]
    elapsed = rt.clock.now() - start
    assert [f.pts for f in frames] == [960 * i for i in range(10)]
    assert all(f.samples == 960 and f.sample_rate == 48_000 for f in frames)
    assert 0.17 <= elapsed <= 0.6  # ten frames take ~180 ms after the first: no burst
    await out.on_system(InterruptionFrame(reason="test"))
    after = np.concatenate([f.to_ndarray()[0] for f in [await track.recv() for _ in range(2)]])
    fade = after[:480].astype(np.float32) / 32768
    assert np.abs(fade[-20:]).max() < 0.03 and np.abs(fade[:120]).max() > 0.2  # faded, not cut
    assert not after[480:].any()  # then silence


async def test_the_first_audio_after_silence_does_not_wait_for_the_next_tick():
    """Audio queued while the track sends silence goes out at once (the timeline restarts
    there), and a pause fades what was playing."""
    from voiceagent.clock import SessionClock
    from voiceagent.events import EventBus
    from voiceagent.frames import AgentAudioFrame, PlayoutPauseFrame, ReplyStartedFrame
    from voiceagent.metrics import MetricsTracker
    from voiceagent.runtime import SessionRuntime
    from voiceagent.transports.webrtc import AgentAudioTrack

    bus = EventBus("t")
    rt = SessionRuntime("t", SessionClock(), bus, MetricsTracker(bus))
    out = WebRTCAudioOutput(rt)
    track = AgentAudioTrack(out, rt.clock)
    sent: list[tuple[float, bool]] = []
    out.taps.append(lambda samples, ts: sent.append((ts, bool(samples.any()))))
    await out.on_system(ReplyStartedFrame(reply_id=1))
    for _ in range(3):
        await track.recv()  # silence
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.004)  # the next tick is ~16 ms away
    tone = (0.5 * np.sin(np.arange(48_000) * 2 * np.pi * 440 / 48_000)).astype(np.float32)
    await out.process(AgentAudioFrame(samples=tone, sample_rate=48_000, reply_id=1, text="hi",
                                      chunk_end=True))
    await waiting
    (quiet, _), (loud, audible) = sent[-2:]
    assert audible and loud - quiet < 0.016  # the tick alone: 0.02
    await out.on_system(PlayoutPauseFrame(paused=True))
    paused = (await track.recv()).to_ndarray()[0].astype(np.float32) / 32768
    assert np.abs(paused[:120]).max() > 0.2 and np.abs(paused[460:480]).max() < 0.03
    assert not paused[480:].any()


def test_voiceagent_serve_cli_serves_and_logs_events(tmp_path):
    """The command line as the README gives it: models load, the page is served, and every
    session's events land in --events tagged with their session id."""
    log = tmp_path / "events.jsonl"
    with voiceagent_serve("examples/basic_agent.py", "--events", str(log)) as (url, _):
        async def one_session() -> str:
            client = Client()
            async with httpx.AsyncClient(base_url=url) as http:
                await client.connect(http)
                client.channel.send('{"type": "end"}')
                await until(lambda: any(m["type"] == "session" and m["state"] == "ended"
                                        for m in client.messages))
            await client.pc.close()
            return client.messages[0]["session_id"]

        sid = asyncio.run(one_session())
        logged = [json.loads(line) for line in log.read_text().splitlines()]
        assert {e["session_id"] for e in logged} == {sid}
        assert [e["state"] for e in logged if e["type"] == "session"] == ["started", "ended"]

