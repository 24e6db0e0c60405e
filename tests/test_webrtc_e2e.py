"""Talking to the agent from a real browser: headless Chromium, a real speech clip as its
microphone, the real models behind an in-process server, all on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright
from webrtc_harness import (
    LEVEL_PROBE,
    connect_page,
    events,
    fake_microphone,
    inbound_audio_packets,
    launch,
    running_server,
    turns_from_levels,
    wait_for_event,
)

from voiceagent import Agent
from voiceagent.server import ServerConfig, create_app
from voiceagent.session import resolve_backends
from voiceagent_eval.speechdata import load_manifest
from voiceagent_eval.wer import word_error_rate

pytestmark = pytest.mark.slow

AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")
FINAL = "e.type === 'user_transcript' && e.final && e.text"


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


@pytest.fixture(scope="module")
def clips(speech_dir: Path) -> dict[str, tuple[Path, str]]:
    return {c.name: (c.path, c.text) for c in load_manifest(speech_dir)}


def session_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("session-")]


async def all_gone(app, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if len(app.state.registry) == 0 and not session_tasks():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"left behind: {len(app.state.registry)} sessions, {session_tasks()}")


def serve(backends, **options):
    return create_app(AGENT, backends, ServerConfig(host_addresses=["127.0.0.1"], **options))


async def test_a_browser_talks_types_and_hangs_up(backends, clips, tmp_path):
    clip, text = clips["harvard_sb_spk1_snt5"]
    mic = fake_microphone(clip, tmp_path / "mic.wav", tail=40)  # one spoken turn in this test
    app = serve(backends)
    async with running_server(app) as url, async_playwright() as pw:
        browser = await launch(pw, mic)
        page = await connect_page(browser, url)
        await page.evaluate(LEVEL_PROBE)
        heard = await wait_for_event(page, FINAL)
        assert word_error_rate(text, heard["text"]) <= 0.25, heard["text"]
        turn = await wait_for_event(
            page, f"e.type === 'user_turn' && e.turn_id === {heard['turn_id']}")
        reply = await wait_for_event(page, "e.type === 'agent_text' && e.final")
        assert reply["text"] and reply["turn_id"] == turn["reply_id"]  # its reply (a draft's id)
        await wait_for_event(page, "e.type === 'metrics' && e.metrics.voice_to_voice !== null")
        await wait_for_event(page, "e.type === 'agent_state' && e.state === 'listening'")
        await asyncio.sleep(0.5)
        assert await inbound_audio_packets(page) > 100
        turns = turns_from_levels(await page.evaluate("window.levels"))
        assert turns and turns[0].latency is not None and 0 < turns[0].latency < 10, turns

        # The page sends: junk, then a typed turn, which the agent answers.
        await page.evaluate("window.voiceagent.dc.send('{oops')")
        await wait_for_event(page, "e.type === 'error' && e.source === 'datachannel'")
        await page.fill("#text", "What color is the sky on a clear day?")
        await page.click("#send")
        typed = await wait_for_event(page, "e.type === 'user_turn' && e.text.includes('sky')")
        answer = await wait_for_event(
            page, f"e.type === 'agent_text' && e.final && e.turn_id === {typed['turn_id']}")
        assert answer["text"]
        assert await page.locator("#conversation li.agent").count() >= 2
        await page.screenshot(path=tmp_path / "page.png")

        await page.close()
        await all_gone(app)
        await browser.close()


async def test_two_browsers_at_once_each_get_their_own_conversation(backends, clips, tmp_path):
    names = ["harvard_sb_spk1_snt1", "azure_whats_the_weather_like"]
    app = serve(backends)
    async with running_server(app) as url, async_playwright() as pw:
        browsers = [await launch(pw, fake_microphone(clips[n][0], tmp_path / f"{n}.wav", tail=40))
                    for n in names]
        pages = [await connect_page(b, url) for b in browsers]
        assert len(app.state.registry) == 2
        for page, name in zip(pages, names):
            heard = await wait_for_event(page, FINAL, timeout=120)
            assert word_error_rate(clips[name][1], heard["text"]) <= 0.25, (name, heard)
            await wait_for_event(page, "e.type === 'agent_text' && e.final", timeout=120)
        ids = [{e["session_id"] for e in await events(p)} for p in pages]
        assert len(ids[0]) == len(ids[1]) == 1 and ids[0] != ids[1]
        for browser in browsers:
            await browser.close()
        await all_gone(app)


async def test_a_client_vanishing_mid_reply_ends_its_session_cleanly(backends, clips, tmp_path):
    clip, text = clips["harvard_sb_spk1_snt2"]
    mic = fake_microphone(clip, tmp_path / "mic.wav", tail=40)
    app = serve(backends, max_sessions=1)
    async with running_server(app) as url, async_playwright() as pw:
        browser = await launch(pw, mic)
        page = await connect_page(browser, url)
        await wait_for_event(page, "e.type === 'agent_state' && e.state === 'speaking'")
        await browser.close()  # no goodbye: the browser process is gone
        await all_gone(app, timeout=40)

        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).json()["sessions"] == 0
        browser = await launch(pw, mic)  # and the server still serves a new conversation
        page = await connect_page(browser, url)
        heard = await wait_for_event(page, FINAL)
        assert word_error_rate(text, heard["text"]) <= 0.25, heard["text"]
        await browser.close()
        await all_gone(app, timeout=40)
