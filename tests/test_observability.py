"""Seeing what a session did, on fake backends (milliseconds): the recording, the trace, the
Prometheus metrics and the JSON logs of a session with a barge-in. The same observers on the
real models, a real Prometheus server and a browser: tests/test_observability_e2e.py."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from voiceagent import Agent, AgentOptions
from voiceagent.agent import EndpointingOptions, RecordingOptions
from voiceagent.clock import SessionClock
from voiceagent.cli import main
from voiceagent.events import AgentTextEvent, StageEvent
from voiceagent.logs import EventLogger, JsonFormatter
from voiceagent.session import AgentSession
from voiceagent.telemetry.prometheus import PrometheusMetrics
from voiceagent.telemetry.tracing import SessionTracer
from voiceagent.threads import ModelLock
from voiceagent.testing.fakes import LoudnessVAD, ScriptedLLM, ScriptedSTT, ToneTTS
from voiceagent.transports.file import FileAudioInput, FileAudioOutput

RATE = 16_000
LONG_REPLY = " ".join(["word"] * 40) + "."


def tone(seconds: float) -> np.ndarray:
    return np.full(int(seconds * RATE), 0.3, np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


#: a user turn, then speech over the agent's long reply (a barge-in), then quiet
BARGE_IN = np.concatenate([tone(1.0), silence(1.5), tone(1.0), silence(3.0)])


def in_memory_tracer() -> tuple[SessionTracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return SessionTracer(provider), exporter


async def barge_in_session(*observers, recording: RecordingOptions | None = None,
                           audio: np.ndarray = BARGE_IN) -> tuple[AgentSession, list]:
    """A session on fake backends at 4x real time: the user asks, the agent answers at length,
    the user talks over it ("stop, tell me about Paris") and is answered."""
    options = AgentOptions(endpointing=EndpointingOptions(mode="vad"), recording=recording)
    session = AgentSession(
        Agent("test", options=options, observers=observers),
        lambda rt: FileAudioInput(audio, rt, max_tail=10), lambda rt: FileAudioOutput(rt),
        clock=SessionClock(4.0),
        backends={"vad": LoudnessVAD(), "stt": ScriptedSTT("what is the weather",
                                                             "stop tell me about Paris"),
                  "llm": ScriptedLLM(LONG_REPLY, "Paris is nice."),
                  "tts": ToneTTS(seconds_per_word=0.1)})
    events: list = []
    session.events.subscribe(events.append)
    await session.run(timeout=60)
    return session, events


def cut_reply(events: list) -> AgentTextEvent:
    cut = [e for e in events if isinstance(e, AgentTextEvent) and e.interrupted]
    assert len(cut) == 1 and cut[0].text
    return cut[0]


# -- recordings ------------------------------------------------------------------------------


async def test_a_recording_is_what_was_heard_on_both_sides_and_its_transcript_is_redacted(
        tmp_path):
    options = RecordingOptions(dir=tmp_path / "calls",
                               redact=lambda text: text.replace("Paris", "[city]"))
    session, events = await barge_in_session(recording=options)
    audio, rate = sf.read(tmp_path / "calls" / f"{session.id}.wav", dtype="float32")
    assert rate == RATE and audio.ndim == 2 and audio.shape[1] == 2
    caller, agent = audio[:, 0], audio[:, 1]
    # the agent channel is the sink's output, sample for sample (to PCM16's precision)
    played = session.output.audio
    assert abs(len(agent) - len(played)) <= RATE // 50
    n = min(len(agent), len(played))
    assert np.max(np.abs(agent[:n] - played[:n])) < 1e-4
    assert np.max(np.abs(agent[n:]), initial=0) < 1e-4
    # the caller channel is the input on the same clock: the tones where they were played
    assert np.allclose(caller[:RATE], 0.3, atol=1e-3)
    assert np.max(np.abs(caller[int(1.2 * RATE):int(2.4 * RATE)])) < 1e-3

    transcript = json.loads((tmp_path / "calls" / f"{session.id}.json").read_text())
    assert transcript["audio"] == f"{session.id}.wav" and transcript["transport"] == "file"
    assert [t["text"] for t in transcript["turns"]] == ["what is the weather",
                                                       "stop tell me about [city]"]
    first, second = transcript["replies"]
    assert first["interrupted"] and first["heard_text"] == cut_reply(events).text
    assert first["text"] == LONG_REPLY  # what was said, beside what was heard
    assert second == {**second, "interrupted": False, "heard_text": "[city] is nice.",
                      "text": "[city] is nice."}
    assert [b["action"] for b in transcript["barge_ins"]] == ["paused", "interrupted"]
    assert [m["turn_id"] for m in transcript["metrics"]] == [1, 2]
    # the agent talked until the user's speech paused it, then was silent (paused, then
    # cut) until its next reply
    paused = transcript["barge_ins"][0]["ts"]
    assert np.min(np.abs(agent[int((paused - 0.3) * RATE):int(paused * RATE)])) > 0.05
    quiet = agent[int((paused + 0.5) * RATE):int((second["playout_started"] - 0.03) * RATE)]
    assert np.max(np.abs(quiet)) < 1e-4


async def test_recording_is_off_unless_asked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session, _ = await barge_in_session()
    assert session.agent.options.recording is None and not list(tmp_path.iterdir())


# -- traces ----------------------------------------------------------------------------------


async def test_a_trace_is_a_tree_session_turn_reply_stages_with_the_interruption():
    tracer, exporter = in_memory_tracer()
    session, events = await barge_in_session(tracer)
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def children(span, name=None):
        return [s for s in spans if s.parent is not None and s.parent.span_id ==
                span.context.span_id and (name is None or s.name == name)]

    [root] = [s for s in spans if s.parent is None]
    assert root.name == "voiceagent.session"
    assert root.attributes["voiceagent.session.id"] == session.id
    assert all(s.context.trace_id == root.context.trace_id for s in spans)
    turns = children(root, "voiceagent.turn")
    assert [t.attributes["voiceagent.turn.id"] for t in turns] == [1, 2]
    for turn in turns:
        assert {"vad.speech", "stt.decode", "end_of_turn", "voiceagent.reply"} <= {
            s.name for s in children(turn)}
        [reply] = children(turn, "voiceagent.reply")
        assert {"llm.generate", "tts.synthesize", "playout"} <= {s.name for s in
                                                                 children(reply)}
        assert reply.start_time >= turn.start_time and reply.end_time <= turn.end_time
        assert turn.attributes["voiceagent.latency.voice_to_voice"] > 0
    first = children(turns[0], "voiceagent.reply")[0]
    assert first.attributes["voiceagent.reply.interrupted"] is True
    heard = len(cut_reply(events).text.split())
    assert first.attributes["voiceagent.reply.heard_words"] == heard
    [cut] = [e for e in first.events if e.name == "interrupted"]
    assert cut.attributes["heard_words"] == heard
    assert {"barge_in.paused", "barge_in.interrupted"} <= {e.name for e in turns[1].events}
    # span times are the session clock's: the LLM span is the stage event's, to the ns
    llm = children(first, "llm.generate")[0]
    stage = next(e for e in events if isinstance(e, StageEvent) and e.stage == "llm")
    epoch = session.runtime.clock.epoch
    assert abs(llm.start_time - (epoch + stage.start) * 1e9) < 1e3
    assert [e.name for e in llm.events] == ["first_token"]
    assert all(s.end_time >= s.start_time and s.parent.span_id in by_id
               for s in spans if s is not root)


# -- Prometheus ------------------------------------------------------------------------------


def samples(metrics: PrometheusMetrics) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(metrics.exposition().decode())
            for s in family.samples}


async def test_prometheus_counts_sessions_turns_latencies_and_the_barge_in():
    metrics = PrometheusMetrics()
    for _ in range(2):  # two sessions add up in one registry, with no per-session label
        await barge_in_session(metrics)
    got = samples(metrics)
    assert got[("voiceagent_sessions_total", frozenset({("transport", "file"),
                                                        ("reason", "completed")}))] == 2
    assert got[("voiceagent_sessions_active", frozenset({("transport", "file")}))] == 0
    assert got[("voiceagent_user_turns_total", frozenset())] == 4
    assert got[("voiceagent_interruptions_total", frozenset())] == 2
    assert got[("voiceagent_replies_total", frozenset({("source", "turn"),
                                                       ("outcome", "interrupted")}))] == 2
    v2v = frozenset({("stage", "voice_to_voice")})
    assert got[("voiceagent_turn_latency_seconds_count", v2v)] == 4
    assert 0 < got[("voiceagent_turn_latency_seconds_sum", v2v)] < 4 * 5
    assert got[("voiceagent_stage_duration_seconds_count", frozenset({("stage", "llm")}))] == 4
    assert not any("session_id" in dict(labels) for _, labels in got)


async def test_queue_depths_are_read_from_the_live_sessions_only():
    metrics = PrometheusMetrics()
    session = AgentSession(
        Agent("test", observers=[metrics], options=AgentOptions(
            endpointing=EndpointingOptions(mode="vad"))),
        lambda rt: FileAudioInput(silence(0.2), rt, max_tail=1), lambda rt: FileAudioOutput(rt),
        backends={"vad": LoudnessVAD(), "stt": ScriptedSTT(), "llm": ScriptedLLM(),
                  "tts": ToneTTS()})
    await session.start()
    try:
        stages = {dict(labels)["stage"] for name, labels in samples(metrics)
                  if name == "voiceagent_queue_depth"}
        assert {"vad", "stt", "llm", "tts", "output"} <= stages
    finally:
        await session.stop()
    assert not [1 for name, _ in samples(metrics) if name == "voiceagent_queue_depth"]


# -- JSON logs -------------------------------------------------------------------------------


async def test_json_logs_have_one_line_per_event_with_the_session_and_turn_ids():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.voiceagent.events")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        session, events = await barge_in_session(EventLogger(logger))
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == len(events)
    assert all(line["session_id"] == session.id for line in lines)
    assert [line["event"] for line in lines] == [e.type for e in events]
    turn = next(line for line in lines if line["event"] == "user_turn")
    assert turn["turn_id"] == 1 and turn["text"] == "what is the weather"
    metrics = next(line for line in lines if line["event"] == "metrics")
    assert metrics["turn_id"] == 1 and metrics["level"] == "info" and "time" in metrics


@pytest.mark.parametrize("args, message", [
    (["--record", "/proc/nope/calls"], "cannot record into /proc/nope/calls"),
])
def test_cli_rejects_an_unusable_recording_folder_in_one_line(args, message, capsys, tmp_path):
    agent = tmp_path / "agent.py"
    agent.write_text("from voiceagent import Agent\nagent = Agent('hi')\n")
    wav = tmp_path / "in.wav"
    sf.write(wav, silence(0.5), RATE)
    assert main(["run", str(agent), "--input", str(wav), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


async def test_waits_for_a_busy_model_are_exported_per_backend():
    tts = ToneTTS()
    tts.model_lock = ModelLock()  # as Piper and llama.cpp have: one caller at a time
    metrics = PrometheusMetrics()
    session = AgentSession(
        Agent("test", observers=[metrics],
              options=AgentOptions(endpointing=EndpointingOptions(mode="vad"))),
        lambda rt: FileAudioInput(silence(0.1), rt), lambda rt: FileAudioOutput(rt),
        backends={"vad": LoudnessVAD(), "stt": ScriptedSTT(), "llm": ScriptedLLM(), "tts": tts})
    await tts.model_lock.acquire()
    second = asyncio.ensure_future(tts.model_lock.acquire())  # another session's synthesis
    await asyncio.sleep(0.05)
    assert samples(metrics)[("voiceagent_model_lock_waiting", frozenset({("backend", "tts")}))] == 1
    await asyncio.sleep(0.1)
    tts.model_lock.release()
    await second
    tts.model_lock.release()
    got = samples(metrics)
    assert got[("voiceagent_model_lock_waits_total", frozenset({("backend", "tts")}))] == 1
    assert got[("voiceagent_model_lock_wait_seconds_total",
                frozenset({("backend", "tts")}))] >= 0.15
    assert ("voiceagent_model_lock_waits_total", frozenset({("backend", "llm")})) not in got
    await session.stop()


async def test_a_session_that_never_started_leaves_no_recording(tmp_path):
    session = AgentSession(
        Agent("test", options=AgentOptions(endpointing=EndpointingOptions(mode="vad"),
                                           recording=RecordingOptions(dir=tmp_path))),
        lambda rt: FileAudioInput(silence(0.1), rt), lambda rt: FileAudioOutput(rt),
        backends={"vad": LoudnessVAD(), "stt": ScriptedSTT(), "llm": ScriptedLLM(),
                  "tts": ToneTTS()})
    await session.stop(reason="offer rejected")
    assert not list(tmp_path.iterdir())


def test_the_core_imports_no_exporter_until_one_is_turned_on():
    code = ("import sys, voiceagent, voiceagent.session, voiceagent.cli, voiceagent.server.app\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'opentelemetry', 'prometheus_client'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
