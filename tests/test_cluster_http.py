"""HAProxy in front of two real ``voiceagent serve`` workers, as scripts/cluster.sh starts them
(deploy/haproxy/haproxy.cfg, the LLM on the shared llama.cpp server), with real callers
on loopback: aiortc peers, and a headless Chromium on the page the front serves.

Each worker takes one session at a time. The page loads through the front; a caller's offer
reaches a worker, which answers the speech over the media it carries itself; the next
caller (the browser) is sent to the other worker (the full one is out of rotation: its
/health is 503); with both full the front answers 503 with Retry-After. A worker drained
with SIGTERM says so on /health, refuses offers, keeps its session until it ends, then
exits; the front sends the next caller to the worker left.
"""

from __future__ import annotations

import asyncio
import os
import signal

import httpx
import pytest
from cluster import HAPROXY, cluster, until_gone
from playwright.async_api import async_playwright
from webrtc_harness import (
    Client,
    connect_page,
    fake_microphone,
    inbound_audio_packets,
    launch,
    until,
    wait_for_event,
)

from voiceagent.audio import load_audio
from voiceagent_eval.speechdata import load_manifest
from voiceagent_eval.wer import word_error_rate
from voiceagent_eval.webrtc_client import ClipTrack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(HAPROXY is None, reason="haproxy is needed (apt-get install haproxy)"),
]

CLIP = "harvard_sb_spk1_snt5"
PROBE_INTERVAL = 1
DRAIN = 30.0


async def sessions(workers: dict[str, str]) -> dict[str, int]:
    """Each worker's sessions, asked of the worker itself."""
    async with httpx.AsyncClient(timeout=5) as http:
        return {name: (await http.get(f"{url}/health")).json()["sessions"]
                for name, url in workers.items()}


async def test_haproxy_spreads_skips_full_workers_and_drains(speech_dir, tmp_path):
    clip = next(c for c in load_manifest(speech_dir) if c.name == CLIP)
    with cluster("--sip-workers", "0", "--http-workers", "2", "--max-sessions", "1",
                 "--probe-interval", str(PROBE_INTERVAL), "--drain-timeout", str(DRAIN),
                 "--ice-host-address", "127.0.0.1") as c:
        workers = {f"http-{i}": f"http://127.0.0.1:{c.http_port + i}" for i in (1, 2)}
        clients: list[Client] = []
        front = f"http://127.0.0.1:{c.http_port}"
        mic = fake_microphone(clip.path, tmp_path / "mic.wav", tail=40)
        async with httpx.AsyncClient(base_url=front, timeout=30) as http, \
                async_playwright() as pw:
            browser = await launch(pw, mic)
            try:
                page = await http.get("/")
                assert page.status_code == 200 and "app.js" in page.text
                assert (await http.get("/static/app.js")).status_code == 200

                # A caller speaks: a worker answers it, over media it carries itself.
                first = Client(ClipTrack(load_audio(clip.path)))
                clients.append(first)
                await first.connect(http)
                load = await sessions(workers)
                assert sorted(load.values()) == [0, 1], load
                busy = next(name for name, n in load.items() if n == 1)
                await until(lambda: any(m["type"] == "agent_text" and m.get("final")
                                        for m in first.messages), 90)
                (turn, *_) = [m for m in first.messages if m["type"] == "user_turn"]
                assert word_error_rate(clip.text, turn["text"]) <= 0.25, turn

                # The next caller, a browser on the front's page, goes to the other worker
                # (the full one is skipped), and the media flows both ways.
                page = await connect_page(browser, front)
                assert await sessions(workers) == {name: 1 for name in workers}
                await wait_for_event(page, "e.type === 'agent_text' && e.final")
                assert await inbound_audio_packets(page) > 0

                # Both full: out of rotation, and the front says when to come back.
                await asyncio.sleep(PROBE_INTERVAL + 1.0)
                refused = await http.post("/api/offer", json=await Client().offer())
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"] == "5" and "busy" in refused.json()["error"]

                # SIGTERM drains the first caller's worker: it refuses new sessions and says
                # so on /health, the session goes on; it exits once the session is over.
                os.kill(c.pid(busy), signal.SIGTERM)
                await asyncio.sleep(0.5)
                health = await http.get(f"{workers[busy]}/health")
                assert health.status_code == 503 and health.json()["status"] == "draining"
                direct = await http.post(f"{workers[busy]}/api/offer",
                                         json=await Client().offer())
                assert direct.status_code == 503 and "shutting down" in direct.json()["error"]
                assert first.pc.connectionState == "connected"
                await first.pc.close()
                await until_gone(c.pid(busy), DRAIN / 2)  # ended by its session, not the clock

                # The worker left takes the next caller once its session is over.
                await page.close()
                await asyncio.sleep(PROBE_INTERVAL + 1.0)
                third = Client()
                clients.append(third)
                await third.connect(http)
                remaining = {name: url for name, url in workers.items() if name != busy}
                assert await sessions(remaining) == {name: 1 for name in remaining}
            finally:
                await browser.close()
                for client in clients:
                    await client.pc.close()
