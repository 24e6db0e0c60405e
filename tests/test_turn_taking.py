"""Turn-taking on real speech: the hybrid endpointer waits through unfinished sentences,
barge-in stops the agent, backchannels and noises do not, the context keeps only heard words,
protected speech is not interrupted, and an interrupted generation's tool calls never run."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from voiceagent import Agent, AgentOptions, function_tool
from voiceagent.agent import EndpointingOptions
from voiceagent.audio import PIPELINE_RATE, load_audio, rms_dbfs
from voiceagent.backends import LLMDelta, ToolCall
from voiceagent.clock import SessionClock
from voiceagent.events import (
    AgentTextEvent,
    BargeInEvent,
    EventBus,
    ToolCallEvent,
    UserSpeakingEvent,
    UserTurnEvent,
)
from voiceagent.frames import (
    AudioFrame,
    EndOfTurnFrame,
    SpeechStarted,
    SpeechStopped,
    TranscriptFrame,
)
from voiceagent.graph import Graph
from voiceagent.metrics import MetricsTracker
from voiceagent.backchannel import without_phrases
from voiceagent.nodes.endpointer import EndpointerNode
from voiceagent.runtime import SessionRuntime
from voiceagent.runner import converse_with_file
from voiceagent.session import AgentSession, resolve_backends
from voiceagent.transports.file import FileAudioOutput
from voiceagent.text import normalize
from voiceagent.turn_features import UNMEASURED
from voiceagent.turn_policy import audio_needed, required_silence
from voiceagent.testing.harness import Harness, make_runtime
from voiceagent_eval.turn_eval import Pause, ScriptedUserInput, decision, silent_from

STORY = "You are a storyteller. Always answer with a long story of at least six sentences."


# -- the policy, as logic --------------------------------------------------------------------


def test_required_silence_adapts_to_the_scores():
    o = EndpointingOptions()
    assert required_silence(o, 0.99, None) == o.incomplete_silence  # audio alone: wait
    eager = o.model_copy(update={"confident_audio": 0.9})
    assert required_silence(eager, 0.99, None) == o.complete_silence  # unless trusted
    assert required_silence(o, 0.99, 0.99) == o.complete_silence
    assert required_silence(o, 0.0, 0.0) == o.incomplete_silence
    between = (o.complete_score + o.incomplete_score) / 2
    middle = required_silence(o, between, between)
    assert o.complete_silence < middle < o.incomplete_silence
    assert required_silence(o.model_copy(update={"mode": "vad"}), 1.0, 1.0) == o.silence_timeout


def test_the_audio_score_is_needed_only_where_it_can_change_the_wait():
    o = EndpointingOptions()
    assert not audio_needed(o, None)  # it cannot decide alone by default
    assert audio_needed(o.model_copy(update={"confident_audio": 0.9}), None)
    assert not audio_needed(o, 0.999) and not audio_needed(o, 0.1)  # the text settles it
    assert required_silence(o, None, 0.999) == o.complete_silence
    between = (o.complete_score + o.incomplete_score) / 2
    assert audio_needed(o, between)  # the audio could tip it either way: wait for it
    assert required_silence(o, None, between) == o.incomplete_silence
    assert audio_needed(o.model_copy(update={"mode": "model"}), 0.999)
    assert not audio_needed(o.model_copy(update={"mode": "vad"}), None)


async def test_the_audio_model_runs_only_when_the_transcript_leaves_the_turn_open():
    events = EventBus()
    runtime = SessionRuntime("s", SessionClock(), events, MetricsTracker(events))
    opts = EndpointingOptions()
    between = (opts.complete_score + opts.incomplete_score) / 2
    audio_model = FixedScore(1.0)
    graph = Graph("g")
    node = graph.add(EndpointerNode(AgentOptions(endpointing=opts), runtime, audio_model,
                                    FixedScore(0.0)))
    try:
        for start, end_probability in ((0.0, 0.999), (2.0, between)):
            await node.process(SpeechStarted(ts=start))
            await node.process(SpeechStopped(ts=start + 1.0))
            await asyncio.sleep(0.05)
            asked = len(audio_model.asked)
            await node.process(TranscriptFrame(text="I would like a table", final=False,
                                               turn_id=node._turn_id, at_pause=True,
                                               end_probability=end_probability))
            await asyncio.sleep(0.05)
            assert len(audio_model.asked) == asked + (end_probability == between)
        assert asked == 0  # nothing before the transcript; the clear case never asked
        # its score counts: the wait is shorter than with the transcript's score alone
        assert node.required_silence() == required_silence(opts, 1.0, between)
        assert node.required_silence() < opts.incomplete_silence
    finally:
        await graph.stop(graceful=False)


async def test_a_turn_ends_when_its_score_arrives_if_the_silence_is_already_long_enough():
    runtime = make_runtime()
    silence = np.zeros(320, np.float32)  # 20 ms frames
    async with Harness(EndpointerNode(AgentOptions(), runtime, FixedScore(0.0),
                                      FixedScore(0.0)), runtime=runtime) as h:
        node = h.nodes[0]
        await h.send(SpeechStarted(ts=0.0))
        await h.send(SpeechStopped(ts=1.0))
        for i in range(15):  # 0.3 s of silence: longer than a complete turn needs
            await h.send(AudioFrame(ts=1.0 + i * 0.02, samples=silence, sample_rate=16_000))
        await h.settle()
        assert not h.broadcasts(EndOfTurnFrame)  # no score yet: it waits as for an open turn
        await h.send(TranscriptFrame(text="A table for two.", final=False, at_pause=True,
                                     turn_id=node._turn_id, end_probability=0.999))
        await h.settle()
        ended = h.broadcasts(EndOfTurnFrame)  # with no further audio frame
        assert [(e.ts, e.speech_end_ts) for e in ended] == [(pytest.approx(1.3), 1.0)]


def test_the_benchmark_replay_ends_the_turn_when_the_score_arrives_as_the_endpointer_does():
    opts = EndpointingOptions()
    # the VAD reported the pause 64 ms in; the transcript and its score came 250 ms later,
    # between two frames, with more silence than a complete turn needs
    pause = Pause(speech_end=1.0, reported=1.064, resumed=math.inf, audio_score=0.0,
                  audio_latency=0.0, text="A table for two.", end_probability=0.999,
                  decode_latency=0.25, completeness_score=0.0, completeness_latency=0.0,
                  prosody=UNMEASURED, speech_seconds=1.0)
    assert decision(pause, opts) == pytest.approx(1.314)
    early = replace(pause, decode_latency=0.05)  # before the silence is long enough
    assert decision(early, opts) == pytest.approx(1.204)  # the first frame past 0.2 s
    unsure = replace(pause, end_probability=0.5)
    assert decision(unsure, opts) == pytest.approx(1.0 + opts.incomplete_silence, abs=0.02)


class FixedScore:
    """A stand-in turn model for the logic test below: one score, and what it was asked."""

    def __init__(self, score: float) -> None:
        self.score, self.asked = score, []

    def probability(self, x) -> float:
        self.asked.append(x)
        return self.score


@pytest.mark.parametrize("signal", ["stt", "completeness"])
async def test_only_the_transcript_decoded_at_the_pause_is_judged(signal: str):
    events = EventBus()
    runtime = SessionRuntime("s", SessionClock(), events, MetricsTracker(events))
    text_model = FixedScore(1.0)
    # the text score alone decides here: this is about which transcript is judged
    options = AgentOptions(endpointing=EndpointingOptions(text_signal=signal, audio_weight=0.0))
    graph = Graph("g")
    node = graph.add(EndpointerNode(options, runtime, FixedScore(0.0), text_model))
    try:
        await node.process(SpeechStarted(ts=0.0))
        await node.process(SpeechStopped(ts=1.0))
        turn = node._turn_id
        # a partial decoded while the user spoke, delivered after the pause: not judged
        await node.process(TranscriptFrame(text="I want to book", final=False, turn_id=turn))
        await asyncio.sleep(0.05)
        assert text_model.asked == [] and node.required_silence() == node._opts.incomplete_silence
        await node.process(TranscriptFrame(text="I want to book a table for", final=False,
                                           turn_id=turn, at_pause=True, end_probability=0.02))
        await asyncio.sleep(0.05)
        if signal == "stt":  # Whisper's own probability: the turn is not over
            assert text_model.asked == []
            assert node.required_silence() == node._opts.incomplete_silence
        else:  # the text model, which says it is
            assert text_model.asked == ["I want to book a table for"]
            assert node.required_silence() < node._opts.incomplete_silence
    finally:
        await graph.stop(graceful=False)


def test_backchannel_phrases_are_removed_whole():
    phrases = [normalize(p) for p in ("mm-hmm", "i see", "yeah")]
    assert without_phrases(normalize("Yeah, I see."), phrases) == []
    assert without_phrases(normalize("yeah stop please"), phrases) == ["stop", "please"]


# -- real sessions ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(Agent(STORY))


@pytest.fixture(scope="module")
def speech(speech_dir):
    return lambda name: load_audio(speech_dir / f"{name}.wav")


async def scripted(agent: Agent, backends, first: np.ndarray, second: np.ndarray,
                   after: float = 1.0, before_start=None):
    script = ScriptedUserInput(first, second, after=after)
    session = AgentSession(agent, script.node, lambda rt: FileAudioOutput(rt),
                           backends=backends)
    events: list = []
    session.events.subscribe(events.append)
    await session.start()
    try:
        if before_start is not None:
            await before_start(session)
        assert await session.wait(120)
    finally:
        await session.stop()
    return session, script, events


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


pytestmark = pytest.mark.slow


async def test_a_pause_mid_sentence_does_not_end_the_turn(speech, backends):
    audio = speech("harvard_sb_spk1_snt2")  # "Drop the two when you | add the figures."
    stt = backends["stt"]
    words = await asyncio.to_thread(stt.timed_words, audio)
    you = next(w for w in words if normalize(w.text) == ["you"])
    cut = int(you.end * PIPELINE_RATE) + 800
    gapped = np.concatenate([audio[:cut], np.zeros(PIPELINE_RATE, np.float32), audio[cut:]])
    result = await converse_with_file(Agent(STORY), gapped, backends=backends)
    turns = of(result.events, UserTurnEvent)
    assert len(turns) == 1, [t.text for t in turns]
    assert normalize(turns[0].text)[-2:] == ["the", "figures"]


async def test_the_hybrid_endpointer_ends_a_complete_turn_sooner_than_its_long_wait(
        speech, backends):
    result = await converse_with_file(Agent(STORY), speech("harvard_sb_spk1_snt2"),
                                      backends=backends)
    turn = of(result.events, UserTurnEvent)[0]
    assert turn.text_score is not None and turn.text_score > 0.85  # Whisper: finished (0.95+)
    # Smart Turn was asked only if its score could have changed the wait
    assert (turn.audio_score is not None) == audio_needed(EndpointingOptions(), turn.text_score)
    delay = result.metrics[0].end_of_turn
    assert delay is not None and delay < EndpointingOptions().incomplete_silence


async def test_barge_in_stops_the_agent_and_keeps_only_heard_words(speech, backends):
    session, script, events = await scripted(
        Agent(STORY), backends, speech("azure_whats_the_weather_like"),
        speech("harvard_sb_spk1_snt3"))
    actions = [e.action for e in of(events, BargeInEvent)]
    assert actions[:2] == ["paused", "interrupted"]
    onset = next(e.ts for e in of(events, UserSpeakingEvent)
                 if e.speaking and e.ts >= script.second_at - 0.1)
    out = session.output.audio
    before = out[int((script.second_at - 0.8) * 16000):int(script.second_at * 16000)]
    assert rms_dbfs(before) > -50  # the agent was talking
    silent = silent_from(out, script.second_at, hold=1.5)
    assert silent is not None and silent - onset < 0.6  # and went silent at once
    cut = [e for e in of(events, AgentTextEvent) if e.interrupted]
    assert len(cut) == 1 and cut[0].text
    first_reply = [m for m in session.context.history if m.role == "assistant"][0]
    assert first_reply.content == cut[0].text  # the context holds what was heard
    handle = session.replies.get(cut[0].turn_id)  # and so does the reply's handle
    assert handle.state == "interrupted" and handle.heard_text == cut[0].text
    users = [m.content for m in session.context.history if m.role == "user"]
    assert len(users) == 2 and "air" in users[1].lower()  # and the barge-in was answered


async def test_a_backchannel_pauses_then_resumes_the_agent(speech, backends):
    # A synthetic "Mm." from the backchannel set (there is none in the shared recordings);
    # tests/test_backchannels.py runs the whole set through the recogniser and the filter.
    mm = load_audio(Path(__file__).parent / "data" / "backchannels" / "mm_hibari.wav")
    session, script, events = await scripted(Agent(STORY), backends,
                                             speech("azure_whats_the_weather_like"), mm)
    actions = [e.action for e in of(events, BargeInEvent)]
    assert "interrupted" not in actions
    assert actions == ["paused", "resumed"]
    assert not [e for e in of(events, AgentTextEvent) if e.interrupted]
    first = session.replies.get(of(events, UserTurnEvent)[0].reply_id)
    assert first.state == "done" and first.heard_text  # it went on to the end
    assert len(of(events, UserTurnEvent)) == 1  # "yeah" is not a turn
    resumed = next(e.ts for e in of(events, BargeInEvent) if e.action == "resumed")
    out = session.output.audio
    assert rms_dbfs(out[int((resumed + 0.1) * 16000):int((resumed + 1.5) * 16000)]) > -50


async def test_a_noise_without_words_resumes_the_agent(speech, backends):
    rng = np.random.default_rng(0)
    burst = (rng.standard_normal(int(0.35 * PIPELINE_RATE)) * 0.3).astype(np.float32)
    noise = np.concatenate([burst, np.zeros(int(0.5 * PIPELINE_RATE), np.float32)])
    session, script, events = await scripted(Agent(STORY), backends,
                                             speech("azure_whats_the_weather_like"), noise)
    assert "interrupted" not in [e.action for e in of(events, BargeInEvent)]
    assert not [e for e in of(events, AgentTextEvent) if e.interrupted]
    assert len(of(events, UserTurnEvent)) == 1


async def test_protected_speech_is_not_interrupted(speech, backends):
    notice = ("Before we begin, please note that this call may be recorded for quality "
              "purposes, and that you can ask for a human agent at any time.")

    said = []

    async def say_notice(session):
        said.append(await session.say(notice, allow_interruptions=False))

    session, script, events = await scripted(
        Agent(STORY), backends, np.zeros(int(0.2 * PIPELINE_RATE), np.float32),
        speech("harvard_sb_spk1_snt4"), before_start=say_notice)
    assert not of(events, BargeInEvent)
    texts = [e for e in of(events, AgentTextEvent) if e.final]
    assert not any(e.interrupted for e in texts)
    assert of(events, UserTurnEvent)  # the user was heard and answered afterwards
    assert not said[0].allow_interruptions
    assert said[0].state == "done" and said[0].heard_text == notice  # heard in full


ran: list[str] = []


@function_tool
async def slow_lookup(query: str) -> str:
    """Look something up (slowly)."""
    await asyncio.sleep(4)
    ran.append(query)
    return "found it"


class ToolThenTalkLLM:
    """Asks for a tool on the first call, then talks: to test who owns tool calls."""

    async def chat(self, messages, tools=()) -> AsyncIterator[LLMDelta]:
        if tools and not any(m.role == "tool" for m in messages):
            yield LLMDelta(tool_call=ToolCall("call_1", "slow_lookup", '{"query": "x"}'))
            return
        yield LLMDelta(text="Here is what I found.")


async def test_an_interrupted_generation_never_runs_its_tool_calls_later(speech, backends):
    ran.clear()
    llm = ToolThenTalkLLM()
    agent = Agent(STORY, tools=[slow_lookup], llm=llm)
    session = AgentSession(agent, lambda rt: ScriptedUserInput(
        speech("azure_whats_the_weather_like"), np.zeros(1, np.float32)).node(rt),
        lambda rt: FileAudioOutput(rt), backends={**backends, "llm": llm})
    events: list = []
    session.events.subscribe(events.append)
    await session.start()
    try:
        for _ in range(400):
            if session.replies.agent_state == "thinking":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # the tool is running now
        await session.interrupt()
        await asyncio.sleep(5)  # longer than the tool would take
    finally:
        await session.stop()
    assert ran == []
    assert not of(events, ToolCallEvent)
    assert not [m for m in session.context.history if m.tool_calls or m.role == "tool"]


def test_options_validate():
    with pytest.raises(ValueError):
        AgentOptions(endpointing={"mode": "telepathy"})


async def test_endless_speech_is_cut_at_the_maximum_turn_length(speech, backends):
    # Speech with no pause long enough to end a turn (here: none shorter than 3 s), like a TV
    # or hold music with vocals.
    talk = np.concatenate([speech("librispeech_1089-134686-0000")] * 2)
    endpointing = EndpointingOptions(max_turn=4.0, complete_silence=3.0, incomplete_silence=3.0)
    agent = Agent(STORY, options=AgentOptions(endpointing=endpointing))
    result = await converse_with_file(agent, talk, speed=2, backends=backends, max_tail=10)
    turns = of(result.events, UserTurnEvent)
    assert turns and turns[0].reason == "max_turn"
    first_end = next(m.end_of_turn for m in result.metrics if m.turn_id == turns[0].turn_id)
    assert first_end is not None
    start = next(e.ts for e in of(result.events, UserSpeakingEvent) if e.speaking)
    assert turns[0].ts - start < 4.0 + 3.0  # cut at 4 s of turn, plus the final decode
