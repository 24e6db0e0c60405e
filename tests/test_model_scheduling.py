"""Shared models serve first audio first (issue 17, item 4), on the real SmolLM2 and Piper.

One llama.cpp model and one Piper voice serve every session of a process. A reply that is
asked for while another streams must not wait for that whole reply: the streaming generation
lends the model at its next clause boundary and resumes afterwards, exactly where it was.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from voiceagent import Agent, AgentOptions
from voiceagent.agent import EndpointingOptions
from voiceagent.backends import ChatMessage
from voiceagent.events import StageEvent
from voiceagent.session import AgentSession
from voiceagent.testing.fakes import LoudnessVAD, ScriptedSTT
from voiceagent.transports.file import FileAudioInput, FileAudioOutput

from conversation import session_tasks

pytestmark = pytest.mark.slow

STORY = "Tell me a long story about a lighthouse keeper and his dog."
QUESTION = "What is the capital of France?"


async def _chat(llm, prompt: str, stamps: list[tuple[str, float]], name: str) -> str:
    out: list[str] = []
    async for delta in llm.chat([ChatMessage("user", prompt)]):
        out.append(delta.text)
        stamps.append((name, time.monotonic()))
    return "".join(out)


async def test_a_generation_paused_for_another_resumes_exactly_where_it_was():
    """Greedy decoding: each reply is the same token for token whether it ran alone or was
    paused for the other one (they take turns by clause); the second reply's first words come
    before the first ends."""
    from voiceagent_plugins.llamacpp_llm import LlamaCppLLM

    llm = LlamaCppLLM(temperature=0.0, max_tokens=120)
    alone = [await _chat(llm, STORY, [], "a"), await _chat(llm, QUESTION, [], "b")]
    stamps: list[tuple[str, float]] = []
    story = asyncio.create_task(_chat(llm, STORY, stamps, "a"))
    while len(stamps) < 2:  # the story streams: it holds the model
        await asyncio.sleep(0.001)
    together = [await _chat(llm, QUESTION, stamps, "b"), await story]
    assert together[::-1] == alone
    order = "".join(name for name, _ in stamps)
    assert "a" in order[order.index("b"):], f"the answer waited for the whole story: {order}"
    assert not llm.model_lock.locked


def recording_llm(**options):
    """The real llama.cpp backend, noting in its worker thread when each piece of a reply is
    made (the session consumes them later, at the pace of its speech)."""
    from voiceagent_plugins.llamacpp_llm import LlamaCppLLM

    class RecordingLLM(LlamaCppLLM):
        def __init__(self) -> None:
            super().__init__(**options)
            self.made: dict[str, list[float]] = {}  # the user's prompt -> when each piece

        def _generate(self, messages, *args):
            made = self.made.setdefault(messages[-1]["content"], [])
            for delta in super()._generate(messages, *args):
                made.append(time.monotonic())
                yield delta

    return RecordingLLM()


async def test_a_second_session_hears_its_first_audio_before_the_first_reply_is_generated():
    """Two sessions share the real llama.cpp model and Piper voice. A asks for a long story;
    while it is generated, B asks a short question: B's first audio is synthesised before A's
    reply has been generated to its end (before, B's generation waited for all of A's)."""
    from voiceagent_plugins.piper_tts import PiperTTS

    llm, tts = recording_llm(max_tokens=300), PiperTTS()
    agent = Agent("You are a storyteller. Always answer with a long story of many sentences.",
                  options=AgentOptions(endpointing=EndpointingOptions(mode="vad")))
    threads_before = {t.ident for t in threading.enumerate()}

    def session() -> AgentSession:
        silence = np.zeros(120 * 16_000, np.float32)
        return AgentSession(agent, lambda rt: FileAudioInput(silence, rt),
                            lambda rt: FileAudioOutput(rt),
                            backends={"vad": LoudnessVAD(), "stt": ScriptedSTT(), "llm": llm,
                                      "tts": tts})

    a, b = session(), session()
    b_audio: list[float] = []  # when B's first audio came
    done = {"a": asyncio.Event(), "b": asyncio.Event()}

    def on_b_stage(e: StageEvent) -> None:
        if e.stage == "tts" and e.first is not None and not b_audio:
            b_audio.append(time.monotonic())

    b.events.subscribe(on_b_stage, type="stage")
    for name, s in (("a", a), ("b", b)):
        s.events.subscribe(lambda e, n=name: done[n].set() if e.final else None,
                           type="agent_text")
    await a.start()
    await b.start()
    try:
        await a.send_text(STORY)
        for _ in range(1200):  # A's reply is being generated: it holds the model
            if len(llm.made.get(STORY, [])) >= 3:
                break
            await asyncio.sleep(0.01)
        asked = time.monotonic()
        await b.send_text(QUESTION)
        await asyncio.wait_for(asyncio.gather(done["a"].wait(), done["b"].wait()), 180)
    finally:
        await a.stop()
        await b.stop()
    a_made = llm.made[STORY]
    assert b_audio and len(a_made) > 20, "a reply was not answered, or A's was too short"
    print(f"\nB's first audio {1000 * (b_audio[0] - asked):.0f} ms after it asked; A's reply "
          f"generated to its end {1000 * (a_made[-1] - asked):.0f} ms after B asked")
    assert b_audio[0] < a_made[-1], "B's first audio waited for A's whole reply"
    assert not session_tasks()
    for _ in range(100):  # a synthesis cut by the end of the session stops at its next piece
        if not (llm.model_lock.locked or tts.model_lock.locked):
            break
        await asyncio.sleep(0.05)
    assert not llm.model_lock.locked and not tts.model_lock.locked
    assert not [t for t in threading.enumerate()
                if t.ident not in threads_before and t.name == "voiceagent-worker"]


async def _prompt_evaluated(llm, messages: list[ChatMessage]) -> tuple[str, int]:
    """The reply, and how many prompt tokens llama.cpp evaluated for it (not in its cache)."""
    evaluated: list[int] = []
    real_eval = llm.llm.eval
    llm.llm.eval = lambda tokens: (evaluated.append(len(tokens)), real_eval(tokens))[1]
    try:
        reply = "".join([d.text async for d in llm.chat(messages)])
    finally:
        del llm.llm.eval
    return reply, evaluated[0]


async def test_a_conversation_takes_its_next_turn_up_where_the_context_left_it():
    """Two conversations take turns on one context. The second turn of the first starts from
    the state its first turn left (kept while the other used the context), so only what is new
    is evaluated; without the prefix cache, its whole conversation is evaluated again."""
    from voiceagent_plugins.llamacpp_llm import LlamaCppLLM

    a = [ChatMessage("system", "You are a patient tutor for a student learning geography. "
                     "Explain every answer with one fact about the place's history. " * 4),
         ChatMessage("user", "Which river flows through Vienna?")]
    b = [ChatMessage("system", "You are a chef."), ChatMessage("user", "How do I boil an egg?")]
    evaluated = {}
    for cache_mb in (256, 0):
        llm = LlamaCppLLM(temperature=0.0, max_tokens=40, prefix_cache_mb=cache_mb)
        first, _ = await _prompt_evaluated(llm, a)
        await _prompt_evaluated(llm, b)
        second = [*a, ChatMessage("assistant", first), ChatMessage("user", "And Budapest?")]
        reply, evaluated[cache_mb] = await _prompt_evaluated(llm, second)
        assert reply
    print(f"\nsecond turn's prompt evaluated: {evaluated[256]} tokens with the prefix cache, "
          f"{evaluated[0]} without")
    assert evaluated[256] < 30 < 100 < evaluated[0]


async def test_a_generation_past_its_first_clause_stops_computing_while_a_first_clause_is_spoken(
):
    """The real SmolLM2 and Piper share the CPU's cores. While a generation streams its later
    sentences, the speech of a reply's first clause (its own or another's) is urgent: the
    generation hands the cores over at its next token and makes no token until that speech
    is synthesised, then goes on to its end, keeping its model."""
    from voiceagent_plugins.piper_tts import PiperTTS

    llm = recording_llm(max_tokens=200)

    class TimedPiper(PiperTTS):
        spans: list[tuple[float, float]] = []  # each synthesis, in its worker thread

        def _chunks(self, text):
            start = time.monotonic()
            pieces = list(super()._chunks(text))
            self.spans.append((start, time.monotonic()))
            yield from pieces

    tts = TimedPiper()
    story = asyncio.create_task(_chat(llm, STORY, [], "a"))
    for _ in range(1200):  # well past its first clause
        if len(llm.made.get(STORY, [])) >= 30:
            break
        await asyncio.sleep(0.01)
    speech = [s async for s in tts.synthesize("Paris is the capital of France, and it is "
                                              "a lovely city to visit.", first_of_reply=True)]
    reply = await story
    assert speech and len(reply) > 100
    (start, end), = tts.spans
    made = llm.made[STORY]
    during = [t for t in made if start < t < end]
    print(f"\nthe first clause synthesised in {1000 * (end - start):.0f} ms; tokens made "
          f"meanwhile: {len(during)}; after it: {sum(t > end for t in made)}")
    assert len(during) <= 1, "the generation kept computing while the first clause was spoken"
    assert any(t > end for t in made)  # it went on afterwards
    assert not llm.model_lock.locked and not tts.model_lock.locked
