"""SIGTERM drains the real ``voiceagent sip`` process: it stops taking calls (INVITE and
OPTIONS get 503), a call that ends by itself within the drain deadline ends normally, the
one still going at the deadline gets our BYE, and the process exits 0.

The peers are real phones on loopback: sipp (hangs up by itself) and baresip (waits for the
bridge to hang up). The agent is examples/basic_agent.py with the embedded models.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

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

from voiceagent.audio import write_wav

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SIPP is None or BARESIP is None,
                       reason="sipp and baresip are needed (apt-get install sip-tester baresip)"),
]

ROOT = Path(__file__).resolve().parent.parent
DRAIN = 5.0


def options_request(port: int) -> bytes:
    return (f"OPTIONS sip:agent@127.0.0.1:{port} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe" + str(time.monotonic_ns()) +
            "\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:agent@127.0.0.1>\r\n"
            f"Call-ID: probe-{time.monotonic_ns()}\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()


def calls_started(events: Path) -> int:
    if not events.exists():
        return 0
    return sum(json.loads(line).get("type") == "call"
               for line in events.read_text().splitlines() if line.strip())


async def test_sigterm_drains_the_bridge_process(tmp_path):
    port = free_port()
    events = tmp_path / "events.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "plugins"), os.environ.get("PYTHONPATH", "")])}
    bridge = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from voiceagent.cli import main; sys.exit(main())",
        "sip", str(ROOT / "examples" / "basic_agent.py"), "--port", str(port),
        "--drain-timeout", str(DRAIN), "--events", str(events), cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert bridge.stdout is not None
    target = f"127.0.0.1:{port}"
    try:
        ready = await asyncio.wait_for(bridge.stdout.readline(), 120)
        assert b"answering SIP calls" in ready, ready
        probe = await send_udp(target, options_request(port))
        assert probe is not None and probe.startswith(b"SIP/2.0 200"), probe
        assert b"X-Voiceagent-Load: calls=0; max=4; status=ok; cpu=" in probe, probe

        pcap = write_rtp_pcap(np.zeros(8000, np.float32), tmp_path / "silence.pcap")
        talk = tmp_path / "talk.wav"
        write_wav(talk, np.zeros(8000, np.float32), 8000)
        # sipp hangs up 4 s after its answer: within the drain deadline
        finishing = asyncio.ensure_future(sipp_call(
            target, pcap, local_port=free_port(), media_port=free_port(), wait_after=3.0,
            timeout=30))
        # baresip stays until the bridge hangs up
        staying = asyncio.ensure_future(baresip_call(
            f"sip:agent@{target}", talk, tmp_path / "heard.wav", duration=60,
            local_port=free_port(), hangup_by_caller=False, timeout=40))
        for _ in range(200):
            if calls_started(events) == 2:
                break
            await asyncio.sleep(0.05)
        assert calls_started(events) == 2, events.read_text() if events.exists() else ""

        bridge.send_signal(signal.SIGTERM)
        terminated = time.monotonic()
        draining = await asyncio.wait_for(bridge.stdout.readline(), 5)
        assert b"draining" in draining and b"2 in progress" in draining, draining
        probe = await send_udp(target, options_request(port))
        assert probe is not None and probe.startswith(b"SIP/2.0 503"), probe
        assert b"X-Voiceagent-Load: calls=2; max=4; status=draining;" in probe, probe
        refused = await sipp_call(target, scenario=SCENARIOS / "uac_refused.xml",
                                  local_port=free_port(), media_port=free_port(), timeout=10)
        assert refused.ok and refused.received[-1].startswith("SIP/2.0 503"), refused.errors

        finished, stayed = await asyncio.gather(finishing, staying)
        returncode = await asyncio.wait_for(bridge.wait(), DRAIN + 10)
        exited = time.monotonic() - terminated
    finally:
        if bridge.returncode is None:
            bridge.kill()
            await bridge.wait()
    output = (await bridge.stdout.read()).decode(errors="replace")
    assert returncode == 0, output
    assert finished.ok and finished.sent[-1].startswith("BYE "), finished.errors
    assert finished.received[-1] == "SIP/2.0 200 OK"  # it hung up; the bridge did not
    assert stayed.established and stayed.hangup_by == "callee", stayed.log[-2000:]
    assert DRAIN - 0.5 < exited < DRAIN + 5, exited  # the BYE came at the deadline
    ended = [json.loads(line) for line in events.read_text().splitlines()
             if json.loads(line).get("type") == "session"
             and json.loads(line).get("state") == "ended"]
    assert sorted(e["reason"] for e in ended) == ["the bridge closed", "the caller hung up"]
