"""Seeing what a call did, on the real parts: a real barge-in on the real models traced with the
OpenTelemetry SDK and recorded; ``voiceagent serve`` scraped by a real Prometheus server
(Debian's ``prometheus``) while a browser talks to it, the voice-to-voice histogram read back
through Prometheus's own HTTP API."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from cli_server import free_port, voiceagent_serve
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from playwright.async_api import async_playwright
from prometheus_client.parser import text_string_to_metric_families
from sip_peers import free_port as sip_free_port
from sip_peers import sipp_call, write_rtp_pcap
from webrtc_harness import connect_page, fake_microphone, launch, wait_for_event

from voiceagent import Agent, AgentOptions
from voiceagent.agent import RecordingOptions
from voiceagent.audio import PIPELINE_RATE, load_audio, resample
from voiceagent.events import AgentTextEvent, BargeInEvent, MetricsEvent
from voiceagent.session import AgentSession, resolve_backends
from voiceagent.text import normalize
from voiceagent_eval.wer import word_error_rate
from voiceagent.telemetry.tracing import SessionTracer
from voiceagent.transports.file import FileAudioOutput
from voiceagent_eval.turn_eval import ScriptedUserInput

pytestmark = pytest.mark.slow

STORY = "You are a storyteller. Always answer with a long story of at least six sentences."
REPO = Path(__file__).resolve().parents[1]


# -- a barge-in on the real models, traced and recorded -------------------------------------


@pytest.fixture(scope="module")
def barge_in(speech_dir, tmp_path_factory):
    """One real session: the user asks, the agent tells a story, the user talks over it
    (Harvard sentence 3) and is answered; traced in memory and recorded."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    folder = tmp_path_factory.mktemp("recordings")
    agent = Agent(STORY, observers=[SessionTracer(provider)],
                  options=AgentOptions(recording=RecordingOptions(dir=folder)))
    backends = resolve_backends(agent)
    script = ScriptedUserInput(load_audio(speech_dir / "azure_whats_the_weather_like.wav"),
                               load_audio(speech_dir / "harvard_sb_spk1_snt3.wav"))

    async def run() -> tuple[AgentSession, list]:
        session = AgentSession(agent, script.node, lambda rt: FileAudioOutput(rt),
                               backends=backends)
        events: list = []
        session.events.subscribe(events.append)
        await session.run(timeout=120)
        return session, events

    session, events = asyncio.run(run())
    return session, events, exporter.get_finished_spans(), folder, backends


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_the_trace_of_a_real_barge_in_is_session_turn_reply_stages(barge_in):
    session, events, spans, _, _ = barge_in
    assert [e.action for e in of(events, BargeInEvent)][:2] == ["paused", "interrupted"]

    def children(span, name):
        return [s for s in spans if s.parent is not None
                and s.parent.span_id == span.context.span_id and s.name == name]

    [root] = [s for s in spans if s.parent is None]
    assert root.name == "voiceagent.session"
    assert root.attributes["voiceagent.backend.llm"] == "llamacpp"
    turns = children(root, "voiceagent.turn")
    assert len(turns) == 2
    metrics = {e.metrics.turn_id: e.metrics for e in of(events, MetricsEvent)}
    for turn in turns:
        turn_id = turn.attributes["voiceagent.turn.id"]
        assert children(turn, "vad.speech") and children(turn, "end_of_turn")
        decodes = children(turn, "stt.decode")
        assert {d.attributes["voiceagent.stt.decode"] for d in decodes} >= {"pause", "finish"}
        assert all(d.attributes["voiceagent.backend"] == "whisper" for d in decodes)
        [reply] = children(turn, "voiceagent.reply")
        [llm] = children(reply, "llm.generate")
        assert [e.name for e in llm.events] == ["first_token"]
        assert children(reply, "tts.synthesize") and children(reply, "playout")
        # the trace agrees with the metrics events: the same session-clock timestamps
        v2v = metrics[turn_id].voice_to_voice
        assert turn.attributes["voiceagent.latency.voice_to_voice"] == v2v
    first_reply = children(turns[0], "voiceagent.reply")[0]
    cut = [e for e in of(events, AgentTextEvent) if e.interrupted]
    assert first_reply.attributes["voiceagent.reply.interrupted"] is True
    assert first_reply.attributes["voiceagent.reply.heard_words"] == len(cut[0].text.split())
    assert [e.name for e in first_reply.events] == ["interrupted"]
    # the interruption came from the second turn's speech, which the second turn records
    assert {"barge_in.paused", "barge_in.interrupted"} <= {e.name for e in turns[1].events}
    [playout] = children(first_reply, "playout")
    assert playout.end_time == first_reply.end_time  # the cut ends both
    interrupted_at = next(e.ts for e in of(events, BargeInEvent) if e.action == "interrupted")
    epoch = session.runtime.clock.epoch
    assert abs(first_reply.end_time / 1e9 - (epoch + interrupted_at)) < 0.05
    second_reply = children(turns[1], "voiceagent.reply")[0]
    assert second_reply.attributes["voiceagent.reply.interrupted"] is False


async def transcribe(stt, audio: np.ndarray) -> str:
    stream = stt.stream()
    for i in range(0, len(audio), 320):
        await stream.push(audio[i:i + 320])
    return (await stream.finish()).text


def test_the_recording_of_a_real_barge_in_is_what_the_file_transport_played(barge_in):
    session, events, _, folder, backends = barge_in
    audio, rate = sf.read(folder / f"{session.id}.wav", dtype="float32")
    transcript = json.loads((folder / f"{session.id}.json").read_text())
    played = np.clip(session.output.audio, -1, 1)  # (a resampled peak may pass full scale)
    agent = audio[:, 1]
    # the agent channel is the file transport's output, to the sample
    assert rate == PIPELINE_RATE and len(agent) >= len(played)
    assert np.max(np.abs(agent[:len(played)] - played)) < 1e-4
    assert np.max(np.abs(agent[len(played):]), initial=0) < 1e-4
    first = transcript["replies"][0]
    cut = [e for e in of(events, AgentTextEvent) if e.interrupted][0]
    assert first["interrupted"] and first["heard_text"] == cut.text
    assert [m.content for m in session.context.history if m.role == "assistant"][0] == cut.text
    # the length of the first reply on the agent channel: from its playout to the cut
    start, end = first["playout_started"], first["ended"]
    voiced = np.flatnonzero(np.abs(agent[int(start * rate):int(end * rate)]) > 0.01)
    sounding = (voiced[-1] - voiced[0]) / rate
    paused = next(b["ts"] for b in transcript["barge_ins"] if b["action"] == "paused")
    assert 0.5 < sounding <= paused - start + 0.3  # it stopped as the user's speech began
    # and it says the heard text: Whisper hears the channel say those words. The heard text
    # is the played share of the chunk's words (Piper gives no word timings), so it may miss
    # the last word or two that were played: it begins what was said (a word of a cut-off
    # clip may be misheard).
    said = normalize(asyncio.run(transcribe(backends["stt"],
                                            agent[int(start * rate):int(end * rate)])))
    heard = normalize(first["heard_text"])
    assert heard and 0 <= len(said) - len(heard) <= 3, (heard, said)
    assert word_error_rate(" ".join(heard), " ".join(said[:len(heard)])) <= 0.25, (heard, said)
    caller = audio[:, 0]
    assert np.sqrt(np.mean(caller[:int(2 * rate)] ** 2)) > 0.003  # the user's question


# -- Prometheus scraping `voiceagent serve` during a browser session ------------------------


PROMETHEUS = shutil.which("prometheus")


def start_prometheus(target: str, folder: Path) -> tuple[subprocess.Popen, str]:
    """A Prometheus server of its own: a free loopback port, a temporary config and storage,
    scraping ``target`` (host:port) every second."""
    port = free_port()
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: voiceagent\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/-/ready").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("prometheus did not come up")
        time.sleep(0.2)


def query(url: str, promql: str) -> list[dict]:
    res = httpx.get(f"{url}/api/v1/query", params={"query": promql}).json()
    assert res["status"] == "success", res
    return res["data"]["result"]


async def until(url: str, promql: str, timeout: float = 30.0) -> list[dict]:
    """The query's result once it has one (Prometheus scrapes every second)."""
    deadline = time.monotonic() + timeout
    while not (result := await asyncio.to_thread(query, url, promql)):
        assert time.monotonic() < deadline, f"no result for {promql}"
        await asyncio.sleep(0.5)
    return result


@pytest.mark.skipif(PROMETHEUS is None, reason="needs Debian's prometheus (setup.sh --test)")
async def test_prometheus_scrapes_serve_during_a_browser_session(speech_dir, tmp_path):
    mic = fake_microphone(speech_dir / "harvard_sb_spk1_snt5.wav", tmp_path / "mic.wav",
                          tail=40)
    calls = tmp_path / "calls"
    with voiceagent_serve("examples/basic_agent.py", "--record", str(calls)) as (url, _):
        exposition = httpx.get(f"{url}/metrics")
        assert exposition.status_code == 200
        assert "voiceagent_sessions_active" in exposition.text
        prometheus, prom = start_prometheus(url.removeprefix("http://"), tmp_path)
        try:
            up = await until(prom, 'up{job="voiceagent"} == 1')
            assert up[0]["value"][1] == "1"
            async with async_playwright() as pw:
                browser = await launch(pw, mic)
                page = await connect_page(browser, url)
                active = await until(prom, 'voiceagent_sessions_active{transport="webrtc"} == 1')
                assert active
                event = await wait_for_event(
                    page, "e.type === 'metrics' && e.metrics.voice_to_voice !== null")
                v2v = event["metrics"]["voice_to_voice"]
                # the histogram, through Prometheus's own query API
                total = await until(
                    prom, 'voiceagent_turn_latency_seconds_sum{stage="voice_to_voice"} > 0')
                count = query(prom, 'voiceagent_turn_latency_seconds_count'
                                    '{stage="voice_to_voice"}')
                assert float(count[0]["value"][1]) == 1
                assert abs(float(total[0]["value"][1]) - v2v) < 1e-3
                median = query(prom, 'histogram_quantile(0.5, sum by (le) ('
                                     'voiceagent_turn_latency_seconds_bucket'
                                     '{stage="voice_to_voice"}))')
                buckets = query(prom, 'voiceagent_turn_latency_seconds_bucket'
                                      '{stage="voice_to_voice"}')
                bounds = sorted(float(b["metric"]["le"]) for b in buckets
                                if b["value"][1] == "1")
                assert float(median[0]["value"][1]) <= bounds[0]  # in the turn's bucket
                assert v2v <= bounds[0]
                await page.close()
                await browser.close()
            ended = await until(prom, 'voiceagent_sessions_total{transport="webrtc"} == 1')
            assert ended[0]["metric"]["reason"] == "remote"
            assert query(prom, 'voiceagent_sessions_active{transport="webrtc"}')[0][
                "value"][1] == "0"
            # and the browser's call was recorded: 48 kHz stereo, both sides speaking
            [wav] = calls.glob("*.wav")
            audio, rate = sf.read(wav, dtype="float32")
            assert rate == 48_000 and audio.shape[1] == 2
            assert all(np.sqrt(np.mean(audio[:, c] ** 2)) > 1e-3 for c in (0, 1))
            transcript = json.loads(wav.with_suffix(".json").read_text())
            assert transcript["transport"] == "webrtc" and transcript["turns"]
            assert transcript["metrics"][0]["voice_to_voice"] == v2v
        finally:
            prometheus.terminate()
            prometheus.wait(30)


# -- the command line ---------------------------------------------------------------------


def test_voiceagent_run_records_traces_and_logs_json(tmp_path):
    """``--record``, ``--log-json`` and traces turned on the OpenTelemetry way (the console
    exporter named in ``OTEL_TRACES_EXPORTER``)."""
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "va-test"}
    proc = subprocess.run(
        [sys.executable, "-m", "voiceagent.cli", "run", "examples/basic_agent.py",
         "--input", "examples/jfk.wav", "--speed", "2", "-q", "--log-json",
         "--record", str(tmp_path / "calls")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    events = [line for line in lines if line["logger"] == "voiceagent.events"]
    [session_id] = {e["session_id"] for e in events}
    assert {"session", "user_turn", "agent_text", "metrics", "stage"} <= {
        e["event"] for e in events}
    assert all(e["turn_id"] == 1 for e in events if e["event"] in ("user_turn", "metrics"))
    # the console exporter prints each span as a JSON object on stdout
    spans = json.loads("[" + proc.stdout.replace("}\n{", "},\n{") + "]")
    names = {s["name"] for s in spans}
    assert {"voiceagent.session", "voiceagent.turn", "voiceagent.reply", "llm.generate",
            "tts.synthesize", "playout", "stt.decode"} <= names
    assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"va-test"}
    assert {s["context"]["trace_id"] for s in spans} == {spans[0]["context"]["trace_id"]}
    audio, rate = sf.read(tmp_path / "calls" / f"{session_id}.wav")
    assert audio.shape[1] == 2 and len(audio) >= 11 * rate
    transcript = json.loads((tmp_path / "calls" / f"{session_id}.json").read_text())
    assert "country" in transcript["turns"][0]["text"]
    assert transcript["replies"][0]["heard_text"]


async def test_voiceagent_sip_serves_metrics_on_its_port_during_a_sipp_call(speech_dir, tmp_path):
    if shutil.which("sipp") is None:
        pytest.skip("needs sipp (apt-get install sip-tester)")
    sip_port, metrics_port = sip_free_port(), free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voiceagent.cli", "sip", "examples/basic_agent.py",
        "--port", str(sip_port), "--metrics-port", str(metrics_port), cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        assert b"answering SIP calls" in line, line
        assert "voiceagent_sessions_active" in httpx.get(metrics_url).text
        clip = resample(load_audio(speech_dir / "harvard_sb_spk1_snt5.wav"), PIPELINE_RATE,
                        8000)
        pcap = write_rtp_pcap(clip, tmp_path / "call.pcap")
        call = await sipp_call(f"127.0.0.1:{sip_port}", pcap, local_port=sip_free_port(),
                               media_port=sip_free_port(), wait_after=8.0)
        assert call.ok, call.errors
        await asyncio.sleep(0.5)
        got = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(httpx.get(metrics_url).text)
               for s in family.samples}
        assert got[("voiceagent_sessions_total",
                    frozenset({("transport", "sip"), ("reason", "remote")}))] == 1
        assert got[("voiceagent_sessions_active", frozenset({("transport", "sip")}))] == 0
        v2v = got[("voiceagent_turn_latency_seconds_count",
                   frozenset({("stage", "voice_to_voice")}))]
        assert v2v >= 1
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    with pytest.raises(httpx.TransportError):  # the metrics server went with the process
        httpx.get(metrics_url)
