"""The offline agent end to end on the real models and real speech.

Speech goes in through the file transport as a live microphone would; the agent's audio that
comes out is transcribed back with the real STT to show it is speech.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voiceagent import Agent, AgentOptions
from voiceagent.audio import PIPELINE_RATE, load_audio, rms_dbfs
from voiceagent.backends import LLM, ChatMessage, LLMDelta
from voiceagent.errors import BackendError
from voiceagent.events import (
    AgentTextEvent,
    DraftEvent,
    ErrorEvent,
    LatencyBreakdownEvent,
    UserTurnEvent,
)
from voiceagent.runner import converse_with_file
from voiceagent.session import AgentSession, resolve_backends
from voiceagent.transports.file import FileAudioInput, FileAudioOutput
from voiceagent_eval.wer import word_error_rate

from conversation import finals, replies, session_tasks, two_turns

REPO = Path(__file__).resolve().parents[1]
INSTRUCTIONS = "You are a friendly voice assistant. Answer in one short sentence."

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(Agent(INSTRUCTIONS))


async def transcribe(stt, audio: np.ndarray) -> str:
    stream = stt.stream()
    for i in range(0, len(audio), 320):
        await stream.push(audio[i:i + 320])
    return (await stream.finish()).text


# -- the CLI, as the README runs it --------------------------------------------------------


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voiceagent.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_jfk_through_voiceagent_run_gets_a_spoken_english_reply(tmp_path, backends):
    out, log = tmp_path / "agent.wav", tmp_path / "events.jsonl"
    proc = run_cli("run", "examples/basic_agent.py", "--input", "examples/jfk.wav",
                   "--output", str(out), "--events", str(log))
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    types = {e["type"] for e in events}
    assert {"session", "user_speaking", "user_transcript", "user_turn", "agent_state",
            "agent_text", "metrics"} <= types
    heard = " ".join(e["text"] for e in events if e["type"] == "user_transcript" and e["final"])
    assert word_error_rate(
        "And so my fellow Americans, ask not what your country can do for you, "
        "ask what you can do for your country.", heard) < 0.35
    assert any(e["type"] == "user_transcript" and not e["final"] for e in events)
    v2v = [e["metrics"]["voice_to_voice"] for e in events
           if e["type"] == "metrics" and e["metrics"]["voice_to_voice"] is not None]
    assert v2v and all(0 < v < 10 for v in v2v)

    audio, rate = sf.read(out, dtype="float32")
    assert rate == PIPELINE_RATE
    assert len(audio) >= 11 * rate  # the whole input timeline, and the reply after it
    assert rms_dbfs(audio) > -45  # there is agent speech in it
    words = asyncio.run(transcribe(backends["stt"], audio)).split()
    assert len(words) >= 2, words
    assert sum(w.strip(".,!?'\"").isalpha() for w in words) >= 2  # English words, not noise


@pytest.mark.parametrize("content, message", [
    (b"this is not audio at all", "not a readable audio file"),
    (b"", "empty"),
])
def test_cli_rejects_unusable_input_with_one_clear_line(tmp_path, content, message):
    bad = tmp_path / "user.wav"
    bad.write_bytes(content)
    proc = run_cli("run", "examples/basic_agent.py", "--input", str(bad), timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def test_cli_rejects_nan_samples(tmp_path):
    bad = tmp_path / "nan.wav"
    samples = np.zeros(16000, np.float32)
    samples[100:200] = np.nan
    sf.write(bad, samples, 16000, subtype="FLOAT")
    proc = run_cli("run", "examples/basic_agent.py", "--input", str(bad), timeout=60)
    assert proc.returncode == 2 and "NaN" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_reports_a_missing_agent_file_and_bad_backend(tmp_path):
    proc = run_cli("run", "nope.py", "--input", "examples/jfk.wav", timeout=60)
    assert proc.returncode == 2 and "no such agent file" in proc.stderr
    proc = run_cli("run", "examples/basic_agent.py", "--input", "examples/jfk.wav",
                   "--llm", "nosuch", timeout=60)
    assert proc.returncode == 2 and "no llm backend named 'nosuch'" in proc.stderr


# -- in-process sessions ----------------------------------------------------------------------


async def test_stereo_44k_input_is_converted_and_understood(tmp_path, speech_dir, backends):
    mono = load_audio(speech_dir / "harvard_sb_spk1_snt1.wav", rate=44_100)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([mono, mono * 0.5], axis=1), 44_100)
    samples = load_audio(path)
    assert samples.ndim == 1 and abs(len(samples) / PIPELINE_RATE - len(mono) / 44_100) < 0.01
    result = await converse_with_file(Agent(INSTRUCTIONS), samples, speed=2, backends=backends)
    assert result.fatal_error is None
    assert word_error_rate("The child almost hurt the small dog.", " ".join(finals(result))) < 0.3


async def test_two_turns_keep_context_and_leave_no_task_or_thread(speech_dir, backends):
    threads_before = {t.ident for t in threading.enumerate()}
    result = await converse_with_file(Agent(INSTRUCTIONS), two_turns(speech_dir), speed=2,
                                      backends=backends)
    assert result.fatal_error is None
    assert len(finals(result)) == 2
    users = [m.content for m in result.history if m.role == "user"]
    assert len(users) == 2 and "weather" in users[0].lower()
    assert len([m for m in result.history if m.role == "assistant" and m.content]) >= 1
    assert not session_tasks()
    await asyncio.sleep(0.1)
    leftover = [t for t in threading.enumerate()
                if t.ident not in threads_before and t.name == "voiceagent-worker"]
    assert not leftover


async def test_preemptive_drafts_answer_real_speech_and_only_committed_ones_count(
        speech_dir, backends):
    """On real speech and models (default options: hybrid endpointing, preemptive on), the
    turns are answered by drafts started at the pause; only committed drafts reach the
    conversation and are heard."""
    result = await converse_with_file(Agent(INSTRUCTIONS), two_turns(speech_dir),
                                      backends=backends)
    assert result.fatal_error is None
    drafts = result.of_type(DraftEvent)
    committed = {e.reply_id for e in drafts if e.action == "committed"}
    discarded = {e.reply_id for e in drafts if e.action == "discarded"}
    turns = result.of_type(UserTurnEvent)
    assert len(turns) == 2 and committed  # at least one turn answered by its draft
    assert {t.reply_id for t in turns} >= committed
    said = {e.turn_id: e.text for e in replies(result)}
    assert set(said) == {t.reply_id for t in turns}  # each turn was answered
    assert not discarded & set(said)  # never by a discarded draft
    history = [(m.role, m.content) for m in result.history]
    assert [c for r, c in history if r == "user"] == [t.text for t in turns]
    # the conversation keeps each reply as heard (the second turn may cut the first)
    heard = {e.turn_id: e.text for e in result.of_type(AgentTextEvent) if e.interrupted}
    kept = [heard.get(t.reply_id, said[t.reply_id]) for t in turns]
    assert [c for r, c in history if r == "assistant"] == [c for c in kept if c]
    breakdowns = {b.reply_id: b for b in result.of_type(LatencyBreakdownEvent)}
    for reply_id in committed:
        b = breakdowns[reply_id]
        assert b.draft and b.draft_saved > 0 and b.total > 0
    assert not session_tasks()


class FaultyLLM:
    """The real LLM, made to fail on its first reply: mid-stream error or silence."""

    def __init__(self, real: LLM, mode: str) -> None:
        self.real, self.mode, self.calls = real, mode, 0

    async def chat(self, messages: Sequence[ChatMessage], tools=()) -> AsyncIterator[LLMDelta]:
        self.calls += 1
        if self.calls > 1:
            async for delta in self.real.chat(messages, tools):
                yield delta
            return
        if self.mode == "hang":
            await asyncio.sleep(3600)
        count = 0
        async for delta in self.real.chat(messages, tools):
            yield delta
            count += 1
            if count == 3:
                raise BackendError("connection reset by the LLM server")


# The silent LLM must time out before the second turn arrives (5 s later, in real time),
# or that turn would interrupt the stuck reply first; the working second call then has 3 s
# for its first token.
@pytest.mark.parametrize("mode, cause, speed, timeout", [
    ("raise", "connection reset", 2.0, 20.0), ("hang", "timed out", 1.0, 3.0)])
async def test_llm_failure_mid_reply_is_reported_and_the_session_recovers(
        mode, cause, speed, timeout, speech_dir, backends):
    faulty = FaultyLLM(backends["llm"], mode)
    agent = Agent(INSTRUCTIONS, llm=faulty, options=AgentOptions(llm_timeout=timeout))
    result = await converse_with_file(agent, two_turns(speech_dir), speed=speed,
                                      backends={**backends, "llm": faulty})
    assert result.fatal_error is None
    errors = result.of_type(ErrorEvent)
    assert len(errors) == 1 and errors[0].source == "llm" and cause in errors[0].message
    said = replies(result)
    assert len(said) == 2
    # the apology closes the failed reply, after what was said before the failure
    assert said[0].text.endswith(agent.options.error_reply)
    if mode == "hang":
        assert said[0].text == agent.options.error_reply
    assert said[1].text.strip()  # the next turn is answered normally
    assert not session_tasks()


class BrokenTTS:
    sample_rate = 22050

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        raise RuntimeError("voice model crashed")
        yield  # pragma: no cover


async def test_tts_failure_is_reported_and_the_session_ends_cleanly(speech_dir, backends):
    agent = Agent(INSTRUCTIONS)
    result = await converse_with_file(agent, load_audio(speech_dir / "harvard_sb_spk1_snt3.wav"),
                                      speed=2, backends={**backends, "tts": BrokenTTS()})
    assert result.fatal_error is None
    errors = result.of_type(ErrorEvent)
    assert errors and all(e.source == "tts" and "voice model crashed" in e.message for e in errors)
    assert replies(result) and replies(result)[0].text  # the LLM still answered in text
    assert rms_dbfs(result.audio) < -80  # and nothing was played
    assert not session_tasks()


async def test_nan_samples_from_a_live_source_are_reported_and_silenced(speech_dir, backends):
    samples = load_audio(speech_dir / "harvard_sb_spk1_snt4.wav")
    samples[1000:1500] = np.nan
    result = await converse_with_file(Agent(INSTRUCTIONS), samples, speed=2, backends=backends)
    assert result.fatal_error is None
    errors = result.of_type(ErrorEvent)
    assert len(errors) == 1 and "NaN" in errors[0].message
    assert finals(result)  # the speech was still understood


async def test_interrupt_from_code_silences_the_agent_and_keeps_only_heard_words(
        speech_dir, backends):
    agent = Agent("You are a storyteller. Always answer with a long story of at least six "
                  "sentences.", options=AgentOptions())
    samples = load_audio(speech_dir / "harvard_sb_spk1_snt2.wav")
    session = AgentSession(agent, lambda rt: FileAudioInput(samples, rt, max_tail=30),
                           lambda rt: FileAudioOutput(rt), backends=backends)
    events: list = []
    speaking = asyncio.Event()
    session.events.subscribe(events.append)
    session.events.subscribe(lambda e: speaking.set() if e.state == "speaking" else None,
                             type="agent_state")
    await session.start()
    try:
        await asyncio.wait_for(speaking.wait(), 60)
        await asyncio.sleep(1.0)  # let the user hear a few words
        cut = session.runtime.clock.now()
        await session.interrupt()
        assert await session.wait(60)
    finally:
        await session.stop()
    audio = session.output.audio
    assert rms_dbfs(audio[int((cut - 1.0) * 16000):int(cut * 16000)]) > -50  # was talking
    assert rms_dbfs(audio[int((cut + 0.1) * 16000):]) < -80  # silent right after
    cut_off = [e for e in events if isinstance(e, AgentTextEvent) and e.interrupted]
    assert len(cut_off) == 1 and cut_off[0].text
    heard = cut_off[0].text.split()
    full = [e.text for e in events if isinstance(e, AgentTextEvent) and e.final
            and not e.interrupted]
    if full:  # the LLM finished before the cut: what was heard is its beginning
        assert full[0].split()[:len(heard)] == heard and len(full[0].split()) > len(heard)
    assistant = [m.content for m in session.context.history if m.role == "assistant"]
    assert assistant == [cut_off[0].text]
    reply = session.replies.get(cut_off[0].turn_id)
    assert reply.state == "interrupted" and reply.heard_text == cut_off[0].text
    assert not session_tasks()
