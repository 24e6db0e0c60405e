"""Fault drills with real parts: the LLM server crashes mid-reply and comes back; the real
recogniser or voice fails or hangs. Each fault has a bounded, reported outcome, and the next
turn of the same session is answered."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from llm_server import LlamaServer

from conversation import replies, session_tasks, two_turns
from voiceagent import Agent, AgentOptions
from voiceagent.backends import STT, STTStream, Transcript
from voiceagent.events import AgentStateEvent, ErrorEvent, Event
from voiceagent.runner import converse_with_file
from voiceagent.session import resolve_backends
from voiceagent_plugins.openai_llm import OpenAILLM

pytestmark = pytest.mark.slow

STORYTELLER = ("You are a storyteller. Always answer with a long story of at least six "
               "sentences.")


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(Agent(STORYTELLER))


async def test_llm_server_killed_mid_reply_then_restarted(speech_dir, backends):
    """The llama.cpp server dies while it streams the first reply: the session reports it and
    speaks its apology; a supervisor restarts the server and the next turn is answered."""
    server = LlamaServer()
    server.start()
    restarted = threading.Event()
    killed: list[float] = []

    def crash_when_the_agent_speaks(event: Event) -> None:
        if isinstance(event, AgentStateEvent) and event.state == "speaking" and not killed:
            killed.append(event.ts)
            server.kill()  # mid-stream: the story is far from told when its first clause plays

            def restart() -> None:
                server.start()
                restarted.set()
            threading.Thread(target=restart, daemon=True).start()

    try:
        llm = OpenAILLM(base_url=server.base_url, model="smollm2", max_tokens=200)
        agent = Agent(STORYTELLER, llm=llm)
        # 12 s between the turns: the restart (a fresh process loading the model) fits in it
        result = await converse_with_file(agent, two_turns(speech_dir, gap=12.0),
                                          subscribers=[crash_when_the_agent_speaks],
                                          backends={**backends, "llm": llm})
    finally:
        server.stop()
    assert killed and restarted.is_set()
    assert result.fatal_error is None
    errors = result.of_type(ErrorEvent)
    assert len(errors) == 1 and errors[0].source == "llm", errors
    said = replies(result)
    assert len(said) == 2, said
    assert said[0].text.endswith(agent.options.error_reply)
    assert said[1].text.strip() and agent.options.error_reply not in said[1].text
    assert not session_tasks()


class FailingSTT:
    """The real recogniser, whose first turn's final decode crashes or never returns."""

    def __init__(self, real: STT, mode: str) -> None:
        self.real, self.mode, self.sample_rate = real, mode, real.sample_rate
        self.failed = False

    def stream(self) -> STTStream:
        return _FailingStream(self, self.real.stream())


class _FailingStream:
    def __init__(self, owner: FailingSTT, real: STTStream) -> None:
        self.owner, self.real = owner, real

    async def push(self, samples: np.ndarray) -> Transcript | None:
        return await self.real.push(samples)

    async def pause(self) -> Transcript | None:
        return await self.real.pause()

    async def finish(self) -> Transcript:
        if not self.owner.failed:
            self.owner.failed = True
            if self.owner.mode == "hang":
                await asyncio.sleep(3600)
            raise RuntimeError("decoder crashed")
        return await self.real.finish()

    async def aclose(self) -> None:
        await self.real.aclose()


@pytest.mark.parametrize("mode, cause", [("raise", "decoder crashed"),
                                         ("hang", "no result within 2 s")])
async def test_stt_failure_drops_one_turn_and_the_next_is_heard(mode, cause, speech_dir,
                                                                backends):
    stt = FailingSTT(backends["stt"], mode)
    agent = Agent("You are a friendly voice assistant. Answer in one short sentence.",
                  options=AgentOptions(stt_timeout=2.0))
    result = await converse_with_file(agent, two_turns(speech_dir), speed=1.0,
                                      backends={**backends, "stt": stt})
    assert stt.failed and result.fatal_error is None
    errors = result.of_type(ErrorEvent)
    assert len(errors) == 1 and errors[0].source == "stt" and cause in errors[0].message
    said = replies(result)
    assert len(said) == 1 and said[0].text.strip(), "the second turn is answered"
    users = [m.content for m in result.history if m.role == "user"]
    # harvard_sb_spk1_snt5 alone: the failed turn left nothing behind in a fresh stream
    assert len(users) == 1 and "sunday" in users[0].lower() and "weather" not in users[0].lower()
    assert not session_tasks()


class HangingTTS:
    """The real voice, stuck on its first sentence."""

    def __init__(self, real) -> None:
        self.real, self.sample_rate, self.hung = real, real.sample_rate, False

    async def synthesize(self, text: str):
        if not self.hung:
            self.hung = True
            await asyncio.sleep(3600)
        async for piece in self.real.synthesize(text):
            yield piece


async def test_tts_hang_skips_one_sentence_and_the_reply_goes_on(speech_dir, backends):
    tts = HangingTTS(backends["tts"])
    agent = Agent("You are a friendly voice assistant. Answer in two or three sentences.",
                  options=AgentOptions(tts_timeout=2.0))
    result = await converse_with_file(agent, two_turns(speech_dir), speed=1.0,
                                      backends={**backends, "tts": tts})
    assert tts.hung and result.fatal_error is None
    errors = result.of_type(ErrorEvent)
    assert errors and all(e.source == "tts" and "within 2.0 s" in e.message for e in errors)
    assert len(errors) == 1
    assert len(replies(result)) == 2
    speaking = [e for e in result.of_type(AgentStateEvent) if e.state == "speaking"]
    assert speaking, "the agent was heard after the stuck sentence"
    assert not session_tasks()
