"""Handoffs, tasks and scenario evals on real models: Silero, Whisper, Smart Turn and Piper in
the session, and llama.cpp's OpenAI-compatible server on SmolLM2-135M as the LLM.

SmolLM2-135M does not decide to call tools by itself, so the agents force them with
``tool_choice`` (on each agent's first round); at temperature 0 its answers repeat. What it
cannot do reliably (copy spoken digits, answer sensibly after a task) is not asserted here.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm_server import llama_server
from voiceagent import Agent, function_tool
from voiceagent.audio import load_audio
from voiceagent.events import BargeInEvent
from voiceagent.session import resolve_backends
from voiceagent.testing import Conversation, judge
from voiceagent_plugins.openai_llm import OpenAILLM

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "restaurant"


@pytest.fixture(scope="module")
def server_url():
    with llama_server() as url:
        yield url


@pytest.fixture(scope="module")
def local_backends():
    return resolve_backends(Agent(""))


@pytest.fixture
async def llm(server_url):
    llm = OpenAILLM(base_url=server_url, model="smollm2", temperature=0, max_tokens=60,
                    timeout=60)
    yield llm
    await llm.aclose()


def restaurant():
    spec = importlib.util.spec_from_file_location("restaurant_agent", EXAMPLE / "agent.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_a_handoff_carries_the_conversation_over_to_the_new_agent(llm, local_backends):
    wine = Agent("You are the sommelier of Luigi's. Recommend one wine in one sentence.",
                 name="sommelier")

    @function_tool
    def transfer_to_sommelier() -> Agent:
        """Transfer the caller to the sommelier."""
        return wine

    host = Agent("You are the host of Luigi's.", name="host", tools=[transfer_to_sommelier],
                 tool_choice="transfer_to_sommelier")
    async with Conversation(host, backends={**local_backends, "llm": llm}) as chat:
        turn = await chat.say_text("We are having the lasagne tonight. Which red wine?")
        history = list(chat.session.context.history)
        assert chat.session.agent is wine
    assert turn.handoffs == ["sommelier"] and not turn.timed_out
    assert turn.called("transfer_to_sommelier") and turn.reply_text.strip()
    # the sommelier answered with the caller's words in its conversation, and its own reply
    assert history[0].role == "user" and "lasagne" in history[0].content
    assert [m.role for m in history] == ["user", "assistant"]
    assert history[1].content == turn.reply_text
    assert turn.latency_ms is not None and turn.audio.any()  # and it was spoken


async def test_a_task_returns_a_typed_value_to_the_tool_that_started_it(llm, local_backends):
    example = restaurant()
    async with Conversation(example.agent, backends={**local_backends, "llm": llm}) as chat:
        first = await chat.say_text("I would like to book a table for two tonight.")
        assert first.handoffs == ["booking", "collect_phone"]
        second = await chat.say_text("My number is 555-123-4567.")
        # the task returned to booking, whose tool started the next one at once
        assert second.handoffs == ["booking", "confirm_phone"]
        assert "5 5 5, 1 2 3, 4 5 6 7" in second.reply_text  # the PhoneNumber, read back
        third = await chat.say_text("Yes, that's right.")
        assert chat.session.agent is example.booking
        history = list(chat.session.context.history)
    assert json.loads(second.called("complete")[0].arguments) == {"digits": "5551234567"}
    assert third.handoffs == ["booking"]
    # the booking tool got both typed results and its result reached the booking agent
    result = "The phone number 5551234567 is confirmed. Tell the caller their table is booked."
    assert third.called("take_phone_number")[0].result == result
    assert [m.content for m in history if m.role == "tool"] == [result]


async def test_barge_in_on_the_new_agents_greeting_leaves_one_agent_and_a_consistent_context(
        llm, local_backends, speech_dir):
    concierge = Agent("You are the concierge of Luigi's. Answer in one short sentence.",
                      name="concierge",
                      greeting="Good evening, this is the concierge speaking. I can help you "
                               "with tables, parking, coats and anything else you may need.")

    @function_tool
    def transfer_to_concierge() -> Agent:
        """Transfer the caller to the concierge."""
        return concierge

    host = Agent("You are the host of Luigi's.", name="host", tools=[transfer_to_concierge],
                 tool_choice="transfer_to_concierge")
    async with Conversation(host, backends={**local_backends, "llm": llm}) as chat:
        await chat.session.send_text("Can I talk to the concierge?")
        while chat.session.replies.agent_state != "speaking":  # the concierge's greeting
            await chat.settle(0.05)
        greeting = chat.session.replies.active[0]
        await asyncio.sleep(1.5)  # some of its words are heard
        turn = await chat.say_audio(load_audio(speech_dir / "harvard_sb_spk1_snt1.wav"))
        assert greeting.state == "interrupted"
        assert chat.session.agent is concierge and not chat.session.replies.active
        history = list(chat.session.context.history)
    assert [e.action for e in turn.events if isinstance(e, BargeInEvent)][-1] == "interrupted"
    # one agent holds the conversation: the concierge, which answered the new turn
    assert turn.agent == "concierge" and turn.reply_text.strip()
    # its context: the caller's first words, the greeting cut to what was heard, the
    # caller's new words and the answer
    assert [m.role for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1].content == greeting.heard_text
    assert 0 < len(history[1].content) < len(concierge.greeting)
    assert "dog" in history[2].content.lower()


async def test_judge_reads_a_verdict_from_the_llm(llm):
    verdict = await judge(llm, "asks the caller for their phone number",
                          "Sure. What phone number should we use?")
    assert isinstance(verdict.passed, bool) and verdict.reason


def run_eval(scenarios: Path, server_url: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'plugins'}"}
    return subprocess.run(
        [sys.executable, "-m", "voiceagent.cli", "eval", str(EXAMPLE / "agent.py"),
         str(scenarios), "--llm", "openai", "--llm-option", f"base_url={server_url}",
         "--llm-option", "temperature=0", "--llm-option", "max_tokens=60", *extra],
        capture_output=True, text=True, env=env, timeout=600)


def test_eval_passes_the_examples_scenarios(server_url):
    done = run_eval(EXAMPLE / "scenarios.yaml", server_url, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert [s["passed"] for s in report["scenarios"]] == [True, True]
    spoken = report["scenarios"][1]["turns"]
    # audio turns: the real transcript, and the reply as heard (the agent's audio transcribed)
    assert "book a table" in spoken[0]["transcript"].lower()
    assert "phone number" in spoken[0]["reply"].lower()
    assert all(t["latency_ms"] > 0 for t in spoken)


def test_eval_fails_a_scenario_written_to_fail_and_says_why(server_url, tmp_path):
    scenarios = tmp_path / "failing.yaml"
    scenarios.write_text(
        "- name: wrong expectations\n"
        "  turns:\n"
        "    - user: I would like to book a table for two tonight.\n"
        "      handoff_to: sommelier\n"
        "      reply_contains: wine list\n"
        "      tool_called: {name: transfer_to_booking, args: {party: 12}}\n", encoding="utf-8")
    done = run_eval(scenarios, server_url)
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "FAIL" in out and "0/1 scenarios passed" in out
    assert "handoff_to 'sommelier': the conversation went to ['booking', 'collect_phone']" in out
    assert "reply_contains 'wine list': the reply was 'Sure. What phone number" in out
    assert "tool_called transfer_to_booking with {'party': 12}: called with" in out


def test_eval_reports_a_mistake_in_the_scenario_file_in_one_line(tmp_path):
    scenarios = tmp_path / "typo.yaml"
    scenarios.write_text("- name: typo\n  turns:\n    - user: hi\n      reply_contain: x\n",
                         encoding="utf-8")
    done = run_eval(scenarios, "http://127.0.0.1:9/v1")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"voiceagent: error: {scenarios}: scenario 1 (typo): turns.0.reply_contain: Extra "
        "inputs are not permitted"]


@pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp is needed (apt sip-tester)")
async def test_the_restaurant_takes_a_booking_over_the_phone(local_backends, tmp_path):
    """The same agent file over SIP: sipp calls and says the booking clip (after the
    greeting); the receptionist hands over and the phone-number task answers, on the
    embedded llama.cpp LLM (its forced tool calls too)."""
    from sip_peers import free_port, sipp_call, write_rtp_pcap

    from voiceagent.audio import PIPELINE_RATE, resample
    from voiceagent.events import Event
    from voiceagent.telephony.media import TELEPHONE_RATE
    from voiceagent.telephony.sip_server import SipOptions, SipServer

    example = restaurant()
    backends = {**local_backends, **resolve_backends(example.agent)}
    clip = load_audio(EXAMPLE / "clips" / "book_a_table.wav")
    speech = np.concatenate([np.zeros(4 * PIPELINE_RATE, np.float32), clip])  # the greeting
    pcap = write_rtp_pcap(resample(speech, PIPELINE_RATE, TELEPHONE_RATE), tmp_path / "c.pcap")
    events: list[Event] = []
    server = SipServer(example.agent, backends, SipOptions(port=free_port()),
                       subscribers=[events.append])
    await server.start()
    try:
        result = await sipp_call(f"127.0.0.1:{server.address[1]}", pcap,
                                 local_port=free_port(), media_port=free_port(),
                                 wait_after=6.0)
    finally:
        await server.close()
    assert result.ok, result.errors or result.output[-2000:]
    entered = [(e.agent, e.reason) for e in events if e.type == "agent_entered"]
    assert entered[:2] == [("booking", "handoff"), ("collect_phone", "task_started")]
    said = [e.text for e in events if e.type == "agent_text" and e.final]
    assert "What phone number should we use?" in " ".join(said)
    assert [e for e in events if e.type == "metrics" and e.metrics.voice_to_voice]


async def test_the_restaurant_takes_a_booking_from_a_browser(local_backends, tmp_path):
    """The same agent file over WebRTC: headless Chromium says the booking clip into its
    microphone (after the greeting); the handoff and the task reach the page as events."""
    from playwright.async_api import async_playwright
    from webrtc_harness import connect_page, fake_microphone, launch, running_server
    from webrtc_harness import wait_for_event

    from voiceagent.server import ServerConfig, create_app

    example = restaurant()
    backends = {**local_backends, **resolve_backends(example.agent)}
    mic = fake_microphone(EXAMPLE / "clips" / "book_a_table.wav", tmp_path / "mic.wav",
                          lead=5.0, tail=30)
    app = create_app(example.agent, backends, ServerConfig(host_addresses=["127.0.0.1"]))
    async with running_server(app) as url, async_playwright() as pw:
        browser = await launch(pw, mic)
        page = await connect_page(browser, url)
        booking = await wait_for_event(page, "e.type === 'agent_entered' && e.agent === "
                                             "'booking'")
        task = await wait_for_event(page, "e.type === 'agent_entered' && e.agent === "
                                          "'collect_phone'")
        said = await wait_for_event(page, "e.type === 'agent_text' && e.final && "
                                          "e.text.includes('phone number')")
        await browser.close()
    assert booking["reason"] == "handoff" and task["reason"] == "task_started"
    assert said["text"].startswith("Sure")
