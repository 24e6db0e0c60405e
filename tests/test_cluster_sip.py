"""Kamailio in front of two real ``voiceagent sip`` workers, as scripts/cluster.sh starts them
(deploy/kamailio/kamailio.cfg, the LLM on the shared llama.cpp server), called by sipp and
baresip on loopback.

One cluster for the whole story, each worker taking one call at a time:
two callers at once land on different workers, and each is answered by its own (the Contact
of the 200 OK, the worker's own events: its transcript and reply; baresip hears speech); a
third caller meanwhile gets 503 with Retry-After from the front. A worker killed with SIGKILL
is skipped by the next calls once a probe has missed it; started again, it takes calls again.
A worker drained with SIGTERM finishes its call while new ones go to the other.

A second cluster probes too rarely to notice anything: the front fails over on the INVITEs'
own answers (486, none) instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cluster import KAMAILIO, REPO, cluster, until_gone
from sip_peers import (
    BARESIP,
    SCENARIOS,
    SIPP,
    SippResult,
    baresip_call,
    free_port,
    sipp_call,
    write_rtp_pcap,
)

from voiceagent.audio import PIPELINE_RATE, load_audio, resample, rms_dbfs, write_wav
from voiceagent.telephony.media import TELEPHONE_RATE
from voiceagent_eval.wer import word_error_rate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SIPP is None or BARESIP is None or KAMAILIO is None,
                       reason="sipp, baresip and kamailio are needed (apt-get install "
                              "sip-tester baresip kamailio)"),
]

CLIP = "osr_harvard_list72_part1_8khz.wav"
FIRST_SENTENCE = "A gold ring will please most any girl."
PROBE_INTERVAL = 1
#: a probe every PROBE_INTERVAL, answered within the front's PROBE_TIMEOUT (2 s)
MISSED_PROBE = PROBE_INTERVAL + 2.0 + 1.0
DRAIN = 8.0


def clip_8k(speech_dir: Path, start: float, end: float) -> np.ndarray:
    audio = load_audio(speech_dir / CLIP)
    return resample(audio[int(start * PIPELINE_RATE):int(end * PIPELINE_RATE)],
                    PIPELINE_RATE, TELEPHONE_RATE)


def answered_by(result: SippResult) -> int:
    """The port in the Contact of the 200 OK to the INVITE: the worker that answered."""
    match = re.search(r"^SIP/2\.0 200 OK.*?^Contact:\s*<sip:[^>]*:(\d+)>", result.messages,
                      re.S | re.M)
    assert match, result.messages[-3000:]
    return int(match.group(1))


def call_id(result: SippResult) -> str:
    match = re.search(r"^Call-ID:\s*(\S+)", result.messages, re.M)
    assert match
    return match.group(1)


def of(events: list[dict], kind: str, session: str) -> list[dict]:
    return [e for e in events if e["type"] == kind and e["session_id"] == session]


async def short_call(target: str, pcap: Path, wait: float = 0.5) -> SippResult:
    return await sipp_call(target, pcap, local_port=free_port(), media_port=free_port(),
                           wait_after=wait, timeout=30)


async def next_call(target: str, pcap: Path) -> SippResult:
    """A short call once the worker of the last one is back in rotation: a full worker
    answers the probes 503, so the front counts it out until its next probe after the call."""
    await asyncio.sleep(PROBE_INTERVAL + 0.5)
    return await short_call(target, pcap)


async def test_kamailio_spreads_fails_over_and_drains(speech_dir, tmp_path):
    with cluster("--sip-workers", "2", "--http-workers", "0", "--max-sessions", "1",
                 "--probe-interval", str(PROBE_INTERVAL), "--drain-timeout", str(DRAIN)) as c:
        front = f"127.0.0.1:{c.sip_port}"
        port_of = {f"sip-{i}": c.sip_port + i for i in (1, 2)}
        speech = clip_8k(speech_dir, 0.0, 4.3)
        silence = write_rtp_pcap(np.zeros(4000, np.float32), tmp_path / "silence.pcap")

        # Two callers at once: one worker each; each hears its own worker's answer.
        talk = np.concatenate([speech, np.zeros(TELEPHONE_RATE * 10, np.float32)])
        write_wav(tmp_path / "talk.wav", talk, TELEPHONE_RATE)
        phone = asyncio.ensure_future(baresip_call(
            f"sip:agent@{front}", tmp_path / "talk.wav", tmp_path / "heard.wav",
            duration=14.0, local_port=free_port(), timeout=60))
        await asyncio.sleep(1.0)
        sipp = asyncio.ensure_future(short_call(
            front, write_rtp_pcap(speech, tmp_path / "speech.pcap"), wait=9.0))
        await asyncio.sleep(2.0)
        # Both workers busy: the front says so, with when to try again.
        refused = await sipp_call(front, scenario=SCENARIOS / "uac_refused.xml",
                                  local_port=free_port(), media_port=free_port(), timeout=15)
        assert refused.ok and refused.received[-1].startswith("SIP/2.0 503"), refused.messages
        assert re.search(r"^Retry-After: *\d+", refused.messages, re.M), refused.messages
        phoned, sipped = await asyncio.gather(phone, sipp)

        assert phoned.established, phoned.log[-2000:] + c.logs()
        assert sipped.ok, sipped.errors + sipped.output[-1500:] + c.logs()
        sipp_worker = c.worker_of_call(call_id(sipped))
        assert sipp_worker is not None and answered_by(sipped) == port_of[sipp_worker]
        phone_worker = ({"sip-1", "sip-2"} - {sipp_worker}).pop()
        for worker in (sipp_worker, phone_worker):  # each worker heard and answered its call
            events = c.events(worker)
            (call,) = [e for e in events if e["type"] == "call"]
            turns = of(events, "user_turn", call["session_id"])
            assert turns and word_error_rate(FIRST_SENTENCE, turns[0]["text"]) <= 0.3, turns
            assert [e for e in of(events, "agent_text", call["session_id"]) if e["final"]]
        assert phoned.recording is not None
        assert rms_dbfs(load_audio(phoned.recording, TELEPHONE_RATE)) > -40  # its answer

        # SIGKILL one worker: once a probe has missed it, new calls go to the other at once:
        # none is sent to the dead one first (the front would log the failover).
        dead = "sip-1"
        argv = Path(f"/proc/{c.pid(dead)}/cmdline").read_bytes().split(b"\0")[:-1]
        os.kill(c.pid(dead), signal.SIGKILL)
        await asyncio.sleep(MISSED_PROBE)
        for _ in range(3):
            result = await next_call(front, silence)
            assert result.ok, result.errors + c.logs()
            assert answered_by(result) == port_of["sip-2"]
        assert "did not answer" not in c.log("kamailio"), c.log("kamailio")[-2000:]

        # Back on its port, it answers the probes and takes calls again.
        revived = subprocess.Popen([a.decode() for a in argv], cwd=REPO,
                                   env=c.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        try:
            assert "answering SIP calls" in await asyncio.to_thread(revived.stdout.readline)
            await asyncio.sleep(PROBE_INTERVAL + 1.0)
            ports = [answered_by(await next_call(front, silence)) for _ in range(2)]
            assert sorted(ports) == [port_of["sip-1"], port_of["sip-2"]], ports

            # SIGTERM the worker of a call in progress: the call goes on to its end, new
            # calls go to the other worker, the drained one exits 0.
            before = {name: len(calls(c, name)) for name in port_of}
            long_call = asyncio.ensure_future(short_call(front, silence, wait=5.0))
            await asyncio.sleep(1.5)
            busy = next(name for name in port_of if len(calls(c, name)) > before[name])
            if busy == dead:
                revived.send_signal(signal.SIGTERM)
            else:
                os.kill(c.pid(busy), signal.SIGTERM)
            await asyncio.sleep(0.5)
            for _ in range(2):
                assert answered_by(await next_call(front, silence)) != port_of[busy]
            finished = await long_call
            assert finished.ok and answered_by(finished) == port_of[busy], finished.errors
            assert finished.sent[-1].startswith("BYE ")  # the caller hung up, not the drain
            assert finished.received[-1] == "SIP/2.0 200 OK"
            if busy == dead:
                assert await asyncio.to_thread(revived.wait, DRAIN + 10) == 0
            else:
                await until_gone(c.pid(busy), DRAIN + 10)
        finally:
            if revived.poll() is None:
                revived.kill()
            revived.wait()


def calls(c, name: str) -> list[str]:
    return [e["call_id"] for e in c.events(name) if e["type"] == "call"]



async def test_kamailio_fails_over_on_busy_and_silent_workers(tmp_path):
    """With probes too rare to notice anything (60 s), the front learns from the INVITEs
    themselves: a worker answering 486 (full) passes the call to the next, and none left
    is a 503 with Retry-After; a worker that does not answer (killed) is skipped after
    PROBE_TIMEOUT, marked down at once, and sent no more calls."""
    with cluster("--sip-workers", "2", "--http-workers", "0", "--max-sessions", "1",
                 "--probe-interval", "60") as c:
        front = f"127.0.0.1:{c.sip_port}"
        silence = write_rtp_pcap(np.zeros(4000, np.float32), tmp_path / "silence.pcap")
        busy = [asyncio.ensure_future(short_call(front, silence, wait=6.0)) for _ in range(2)]
        await asyncio.sleep(2.0)
        refused = await sipp_call(front, scenario=SCENARIOS / "uac_refused.xml",
                                  local_port=free_port(), media_port=free_port(), timeout=15)
        assert refused.ok and refused.received[-1].startswith("SIP/2.0 503"), refused.messages
        assert re.search(r"^Retry-After: *\d+", refused.messages, re.M), refused.messages
        assert "failed over" in c.log("kamailio")  # the first worker's 486 went on
        held = await asyncio.gather(*busy)
        assert all(r.ok for r in held) and {answered_by(r) for r in held} == {
            c.sip_port + 1, c.sip_port + 2}

        os.kill(c.pid("sip-1"), signal.SIGKILL)
        results = []
        for _ in range(3):
            await asyncio.sleep(0.5)  # the last call's slot is free once its BYE is through
            results.append(await short_call(front, silence))
        assert all(r.ok for r in results), [r.errors for r in results]
        assert {answered_by(r) for r in results} == {c.sip_port + 2}
        log = c.log("kamailio")
        assert log.count("did not answer: marked down") == 1, log[-3000:]
        slow = [r.elapsed for r in results]
        assert max(slow) - min(slow) > 1.5, slow  # one waited out the dead worker's 2 s
