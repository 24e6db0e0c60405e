"""SIGTERM drains the real ``voiceagent serve`` process: /health turns 503 "draining", new
offers are refused with 503, the session in progress goes on until the drain deadline and is
then ended, and the process exits 0. A real aiortc caller; the embedded models."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest
from cli_server import voiceagent_serve
from webrtc_harness import Client, until

pytestmark = pytest.mark.slow

DRAIN = 4.0


async def test_sigterm_drains_voiceagent_serve():
    with voiceagent_serve("examples/basic_agent.py", "--max-sessions", "2", "--drain-timeout",
                          str(DRAIN), "--input-timeout", "60") as (url, proc):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            caller = Client()
            try:
                await caller.connect(http)
                health = (await http.get("/health")).json()
                assert (health["status"], health["sessions"]) == ("ok", 1)
                assert health["cpu"]["cpus"] >= 1 and health["cpu"]["process"] >= 0

                proc.send_signal(signal.SIGTERM)
                terminated = time.monotonic()
                await asyncio.sleep(0.5)
                health = await http.get("/health")
                assert health.status_code == 503 and health.json()["status"] == "draining"
                refused = await http.post("/api/offer", json=await Client().offer())
                assert refused.status_code == 503, refused.text
                assert "shutting down" in refused.json()["error"]
                assert caller.pc.connectionState == "connected"  # the session goes on

                returncode = await asyncio.to_thread(proc.wait, DRAIN + 15)
                exited = time.monotonic() - terminated
                assert returncode == 0
                assert DRAIN - 0.5 < exited < DRAIN + 10, exited  # ended at the deadline
                await until(lambda: any(m["type"] == "session" and m["state"] == "ended"
                                        for m in caller.messages), 5)
            finally:
                await caller.pc.close()
