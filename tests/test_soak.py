"""Short soaks (benchmarks/soak.py runs the long ones): sessions one after another leave the
process's threads, file descriptors and asyncio tasks where they were, and every session is
answered. The figures are compared after a warm-up pass over every clip (the first use of a
clip can grow caches: a long fallback decode, the allocator's pools). Memory gets a generous
bound only; threads may grow by two, as the event loop's default executor starts its workers
lazily when calls overlap (a leak grows with the sessions instead)."""

from __future__ import annotations

import asyncio

import pytest
from cli_server import voiceagent_serve

from voiceagent import Agent
from voiceagent.session import resolve_backends
from voiceagent_eval.soak import SoakResult, file_soak, webrtc_soak
from voiceagent_eval.speechdata import load_manifest

pytestmark = pytest.mark.slow

AGENT = "You are a friendly voice assistant. Answer in one short sentence."


def short_clips(speech_dir):
    return [c for c in load_manifest(speech_dir) if c.seconds <= 3.0]


def assert_flat(result: SoakResult, sessions: int) -> None:
    assert result.samples[-1].sessions == sessions
    assert result.samples[-1].answered == sessions, result.table()
    growth = result.growth
    assert growth["fds"] <= 0 and growth["tasks"] <= 0, result.table()
    assert growth["threads"] <= 2 and growth["rss_mb"] < 150, result.table()


async def test_file_sessions_leave_nothing_behind(speech_dir):
    agent, clips = Agent(AGENT), short_clips(speech_dir)
    result = await file_soak(agent, resolve_backends(agent), clips, sessions=2 * len(clips),
                             every=len(clips))
    assert_flat(result, 2 * len(clips))


def test_webrtc_sessions_through_voiceagent_serve_leave_nothing_behind(speech_dir):
    with voiceagent_serve("examples/basic_agent.py") as (url, proc):
        result = asyncio.run(webrtc_soak(url, proc.pid, short_clips(speech_dir), sessions=8,
                                         every=4, parallel=2))
    assert_flat(result, 8)
