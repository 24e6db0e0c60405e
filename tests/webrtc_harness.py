"""A real browser talking to an in-process server: shared by the WebRTC tests and benchmark.

The server is uvicorn on 127.0.0.1 in the caller's event loop (so its sessions and tasks can
be inspected); the browser is the system's headless Chromium driven by Playwright, with a
real speech clip as its fake microphone, or, where a test needs a client it controls, a real
aiortc peer (:class:`Client`). Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
import uvicorn
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from playwright.async_api import Browser, Page, Playwright
from starlette.applications import Starlette

from cli_server import free_port

from voiceagent.audio import load_audio
from voiceagent.transports.ice import restrict_host_addresses

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
]
MIC_RATE = 48_000

# Every 10 ms: the page time and the levels (dBFS) of the microphone and the agent's track.
LEVEL_PROBE = """() => {
  const c = window.voiceagent, ctx = c.audio || (c.audio = new AudioContext());
  const probe = (stream) => {
    const a = ctx.createAnalyser(); a.fftSize = 512;
    ctx.createMediaStreamSource(stream).connect(a);
    const buf = new Float32Array(a.fftSize);
    return () => { a.getFloatTimeDomainData(buf); let s = 0; for (const v of buf) s += v * v;
                   return 10 * Math.log10(s / buf.length + 1e-10); };
  };
  const mic = probe(c.localStream), agent = probe(c.remoteStream);
  window.levels = [];
  const now = () => performance.now() / 1000;
  const push = c.events.push.bind(c.events);  // each event stamped when the page got it
  c.events.push = (e) => push({...e, page_time: now()});
  window.levelTimer = setInterval(() => levels.push([now(), mic(), agent()]), 10);
}"""


def fake_microphone(clip: Path, out: Path, *, lead: float = 1.0, tail: float = 8.0) -> Path:
    """The clip as Chromium's fake capture file: 48 kHz PCM16 mono, with silence before it
    and a long silence after (Chromium loops the file), so each loop is one user turn."""
    speech = load_audio(clip, MIC_RATE)
    audio = np.concatenate([np.zeros(int(lead * MIC_RATE), np.float32), speech,
                            np.zeros(int(tail * MIC_RATE), np.float32)])
    sf.write(out, audio, MIC_RATE, subtype="PCM_16")
    return out


@asynccontextmanager
async def running_server(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port in this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on", proxy_headers=False))  # as serve
    task = asyncio.create_task(server.serve(), name="test-uvicorn")
    while not server.started:
        if task.done():
            await task
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def launch(pw: Playwright, microphone: Path) -> Browser:
    return await pw.chromium.launch(
        executable_path=CHROMIUM, headless=True,
        args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={microphone}"])


async def connect_page(browser: Browser, base_url: str, *, token: str = "") -> Page:
    page = await browser.new_page()
    await page.goto(f"{base_url}/?token={token}" if token else base_url)
    await page.wait_for_function("window.voiceagent && window.voiceagent.config")
    await page.click("#connect")
    await page.wait_for_function(
        "window.voiceagent.pc && window.voiceagent.pc.connectionState === 'connected'"
        " && window.voiceagent.dc.readyState === 'open'", timeout=20_000)
    return page


async def events(page: Page) -> list[dict[str, Any]]:
    return await page.evaluate("window.voiceagent.events")


async def wait_for_event(page: Page, predicate: str, timeout: float = 90) -> dict[str, Any]:
    """The first event ``e`` for which the JS expression ``predicate`` holds."""
    handle = await page.wait_for_function(
        f"window.voiceagent.events.find((e) => {predicate})", timeout=timeout * 1000,
        polling=100)
    return await handle.json_value()


async def inbound_audio_packets(page: Page) -> int:
    return await page.evaluate("""async () => {
      let n = 0;
      (await window.voiceagent.pc.getStats()).forEach((r) => {
        if (r.type === 'inbound-rtp' && r.kind === 'audio') n += r.packetsReceived; });
      return n; }""")


@dataclass
class Turn:
    speech_end: float  # page time the microphone went quiet
    agent_audio: float | None  # page time the agent's voice first reached the page

    @property
    def latency(self) -> float | None:
        return None if self.agent_audio is None else self.agent_audio - self.speech_end


def turns_from_levels(levels: list[list[float]], *, speech_db: float = -45.0,
                      agent_db: float = -50.0, min_gap: float = 1.0) -> list[Turn]:
    """User turns in the level trace: speech bursts merged across pauses under ``min_gap``;
    for each, when the agent's voice next rose from quiet (before the user spoke again).
    A turn the agent was already talking over when it ended has no latency."""
    t = np.array([row[0] for row in levels])
    mic = np.array([row[1] for row in levels]) > speech_db
    agent = np.array([row[2] for row in levels]) > agent_db
    onset = agent & ~np.concatenate([[False], agent[:-1]])
    spans: list[list[int]] = []
    for i in np.flatnonzero(mic):
        if spans and t[i] - t[spans[-1][1]] < min_gap:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    turns = []
    for k, (_, end) in enumerate(spans):
        limit = spans[k + 1][0] if k + 1 < len(spans) else len(t)
        after = end + np.flatnonzero(onset[end:limit])
        answered = not agent[end] and len(after) > 0
        turns.append(Turn(float(t[end]), float(t[after[0]]) if answered else None))
    return turns


async def until(condition, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")


class Client:
    """A real WebRTC peer: a microphone track (silent unless given one) and the events data
    channel."""

    def __init__(self, microphone: MediaStreamTrack | None = None) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTrack(microphone or AudioStreamTrack())
        self.channel = self.pc.createDataChannel("events")
        self.messages: list[dict] = []
        self.channel.on("message", lambda m: self.messages.append(json.loads(m)))

    async def offer(self) -> dict:
        restrict_host_addresses(self.pc, ["127.0.0.1"])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def connect(self, http: httpx.AsyncClient, headers: dict | None = None) -> None:
        res = await http.post("/api/offer", json=await self.offer(), headers=headers or {})
        assert res.status_code == 200, res.text
        await self.pc.setRemoteDescription(RTCSessionDescription(**{
            k: res.json()[k] for k in ("sdp", "type")}))
        await until(lambda: self.channel.readyState == "open")
