"""LiveKit Agents interop, both ways, offline (docs/livekit.md).

voiceagent's models as LiveKit plugins run a real LiveKit ``AgentSession`` on real speech,
through custom audio input and output instead of a room (as LiveKit's own tests drive it);
LiveKit's plugins (its OpenAI LLM against llama.cpp's server, its Silero VAD) serve as
voiceagent backends in a voiceagent session.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("livekit.agents", reason="LiveKit interop needs voiceagent[livekit]")

from livekit.agents import Agent as LiveKitAgent  # noqa: E402
from livekit.agents import AgentSession, APIConnectionError, APIConnectOptions, stt, vad  # noqa: E402
from livekit.agents import llm as lk_llm  # noqa: E402
from livekit.plugins import openai as lk_openai  # noqa: E402

from llm_server import llama_server  # noqa: E402
from voiceagent import Agent, AgentOptions, function_tool, registry  # noqa: E402
from voiceagent.agent import EndpointingOptions  # noqa: E402
from voiceagent.audio import PIPELINE_RATE, load_audio, rms_dbfs  # noqa: E402
from voiceagent.backends import ChatMessage, Transcript  # noqa: E402
from voiceagent.errors import BackendError, ConfigError  # noqa: E402
from voiceagent.events import AgentTextEvent, ErrorEvent, ToolCallEvent  # noqa: E402
from voiceagent.runner import converse_with_file  # noqa: E402
from voiceagent.session import resolve_backends  # noqa: E402
from voiceagent_eval.wer import word_error_rate  # noqa: E402
from voiceagent_plugins import livekit as va  # noqa: E402
from voiceagent_plugins.livekit.backends import LiveKitLLM, LiveKitSTT, LiveKitTTS  # noqa: E402
from voiceagent_plugins.livekit.frames import to_frame  # noqa: E402
from voiceagent_plugins.livekit.offline import converse  # noqa: E402
from voiceagent_plugins.livekit.speech import SpeechTracker  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHORT = "You are a friendly voice assistant. Answer in one short sentence."


def clip(speech_dir, name: str) -> tuple[np.ndarray, str]:
    manifest = [json.loads(line) for line in (speech_dir / "manifest.jsonl").open()]
    text = next(e["text"] for e in manifest if e["file"] == name)
    return load_audio(speech_dir / name), text


def livekit_session(**llm_options) -> AgentSession:
    return AgentSession(vad=va.VAD(), stt=va.STT(), llm=va.LLM(**llm_options), tts=va.TTS(),
                        turn_handling={"turn_detection": va.TurnDetector(),
                                       "endpointing": {"min_delay": 0.2, "max_delay": 2.0}},
                        aec_warmup_duration=None)


def speech_onset(samples: np.ndarray) -> float:
    """Where speech begins in ``samples`` (seconds), as voiceagent's VAD hears it."""
    tracker = SpeechTracker(registry.get("vad", "silero"), EndpointingOptions())
    return next(w.changed_at for w in tracker.feed(samples) if w.changed_at is not None)


def other_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


async def transcribe(samples: np.ndarray) -> str:
    stream = registry.get("stt", "whisper").stream()
    for i in range(0, len(samples), 320):
        await stream.push(samples[i:i + 320])
    return (await stream.finish()).text


# -- voiceagent as LiveKit plugins -----------------------------------------------------------


@pytest.mark.slow
async def test_a_livekit_session_with_our_plugins_answers_real_speech(speech_dir):
    samples, said = clip(speech_dir, "harvard_sb_spk1_snt3.wav")
    result = await converse(livekit_session(), LiveKitAgent(instructions=SHORT), samples)
    assert word_error_rate(said, " ".join(result.user)) < 0.35, result.user
    assert result.interim > 0  # partial transcripts reached LiveKit while the user spoke
    assert result.agent and result.agent[-1][0].strip()
    assert not result.agent[-1][1]  # heard to the end
    reply = result.audio[len(samples):]
    assert rms_dbfs(reply) > -50 and (await transcribe(reply)).strip()  # spoken words
    assert 0 < result.reply_starts[0] - len(samples) / PIPELINE_RATE < 10
    assert other_tasks() == []


@pytest.mark.slow
async def test_the_user_interrupts_the_livekit_agent(speech_dir):
    first, _ = clip(speech_dir, "azure_whats_the_weather_like.wav")
    second, said = clip(speech_dir, "harvard_sb_spk1_snt5.wav")
    session = livekit_session(max_tokens=60)  # long enough to talk over, short to wait for
    agent = LiveKitAgent(instructions="You are a storyteller. Answer with a long story of "
                         "at least five sentences.")
    result = await converse(session, agent, first, replies=2, interrupt_with=second,
                            interrupt_after=0.5)
    assert len(result.agent) >= 2, result.agent
    cut, answer = result.agent[0], result.agent[1]
    assert cut[1], "the first reply was not interrupted"
    assert word_error_rate(said, result.user[-1]) < 0.35
    assert answer[0].strip() and not answer[1]
    # the agent went quiet soon after the user started talking over it, and stayed quiet
    # while the user spoke
    talk_over = result.reply_starts[0] + 0.5 + speech_onset(second)
    user_done = result.reply_starts[0] + 0.5 + len(second) / PIPELINE_RATE
    loud = [i / PIPELINE_RATE for i in range(int(talk_over * PIPELINE_RATE),
                                             int(user_done * PIPELINE_RATE), 320)
            if rms_dbfs(result.audio[i:i + 320]) > -50]
    # LiveKit decides after min_duration (0.5 s) of speech; 0.5-0.55 s measured
    assert not loud or loud[-1] < talk_over + 1.0, f"agent heard until {loud[-1]:.2f} s"
    assert result.reply_starts[1] > user_done - 0.5
    assert other_tasks() == []


@pytest.mark.slow
async def test_our_stt_streams_interim_and_final_transcripts_to_livekit(speech_dir):
    samples, said = clip(speech_dir, "jfk_ask_not.wav")
    audio = np.concatenate([np.zeros(8000, np.float32), samples,
                            np.zeros(PIPELINE_RATE, np.float32)])
    stream = va.STT().stream()
    events: list[stt.SpeechEvent] = []

    async def collect():
        async for event in stream:
            events.append(event)

    reader = asyncio.create_task(collect())
    for i in range(0, len(audio), 480):  # 30 ms frames at 48 kHz: LiveKit resamples them
        piece = audio[i:i + 480]
        stream.push_frame(to_frame(np.repeat(piece, 3), 48_000))
        await asyncio.sleep(0)
    stream.end_input()
    await asyncio.wait_for(reader, 60)
    await stream.aclose()
    kinds = [e.type for e in events]
    assert kinds[0] == stt.SpeechEventType.START_OF_SPEECH
    assert kinds[-1] == stt.SpeechEventType.END_OF_SPEECH
    assert stt.SpeechEventType.INTERIM_TRANSCRIPT in kinds
    # the decode at each pause goes out at once, for LiveKit's preemptive generation
    assert kinds.index(stt.SpeechEventType.PREFLIGHT_TRANSCRIPT) < kinds.index(
        stt.SpeechEventType.FINAL_TRANSCRIPT)
    finals = [e.alternatives[0].text for e in events
              if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    assert word_error_rate(said, " ".join(finals)) < 0.35, finals  # JFK pauses: several
    first = next(e for e in events if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT)
    assert 0.2 < first.alternatives[0].start_time < 1.0  # timed on the stream


@pytest.mark.slow
def test_the_offline_example_prints_the_conversation_and_writes_what_was_heard(
        speech_dir, tmp_path):
    out = tmp_path / "heard.wav"
    proc = subprocess.run(
        [sys.executable, str(REPO / "examples" / "livekit" / "offline_session.py"),
         "--input", str(speech_dir / "harvard_sb_spk1_snt3.wav"), "--output", str(out)],
        capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["user:", "agent:"], proc.stdout
    heard, rate = sf.read(out, dtype="float32")
    assert rate == PIPELINE_RATE and rms_dbfs(heard) > -50


async def livekit_finals(model: stt.STT, audio: np.ndarray) -> list[str]:
    """The final transcripts of a LiveKit STT stream fed ``audio`` (16 kHz) in 20 ms frames."""
    stream = model.stream()
    for i in range(0, len(audio), 320):
        stream.push_frame(to_frame(audio[i:i + 320], PIPELINE_RATE))
    stream.end_input()
    events = [e async for e in stream]
    await stream.aclose()
    return [e.alternatives[0].text for e in events
            if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]


@pytest.mark.slow
async def test_the_transducer_as_a_livekit_stt():
    """The shipped phone-command transducer (docs/transducer.md) behind the same LiveKit STT,
    on held-out synthetic phrases of its domain spoken by Piper (its backend test measured
    WER 0.081). About 26 words: one wrong word moves the WER by 0.04, and Piper's sampling
    varies the audio from run to run, so the bound only says the model hears its domain."""
    pytest.importorskip("piper")
    from voiceagent_eval.wer import pooled_wer
    from voiceagent_plugins.transducer.synth import synthesize

    model = va.STT(backend="transducer")
    pairs = []
    for utterance in synthesize(8, seed=424242, families=("piper",)):
        quiet = np.zeros(PIPELINE_RATE // 2, np.float32)
        finals = await livekit_finals(model, np.concatenate([quiet, utterance.audio, quiet]))
        pairs.append((utterance.text, " ".join(finals)))
    assert pooled_wer(pairs) <= 0.3, pairs


async def test_our_vad_dates_livekits_speech_events(speech_dir):
    samples, _ = clip(speech_dir, "azure_whats_the_weather_like.wav")
    lead = 0.5
    audio = np.concatenate([np.zeros(int(lead * PIPELINE_RATE), np.float32), samples,
                            np.zeros(PIPELINE_RATE, np.float32)])
    stream = va.VAD().stream()
    for i in range(0, len(audio), 160):  # 10 ms frames at 48 kHz
        stream.push_frame(to_frame(np.repeat(audio[i:i + 160], 3), 48_000))
    stream.end_input()
    events = [e async for e in stream]
    await stream.aclose()
    starts = [e for e in events if e.type == vad.VADEventType.START_OF_SPEECH]
    ends = [e for e in events if e.type == vad.VADEventType.END_OF_SPEECH]
    assert len(starts) == len(ends) == 1
    began = starts[0].samples_index / PIPELINE_RATE - starts[0].speech_duration
    ended = ends[0].samples_index / PIPELINE_RATE - ends[0].silence_duration
    assert lead < began < lead + 0.4  # when speech really began, not when it was certain
    assert ended - began == pytest.approx(ends[0].speech_duration)
    assert began + 0.8 < ended < lead + len(samples) / PIPELINE_RATE  # "What's the weather like"
    speech = sum(f.duration for f in ends[0].frames)
    assert ends[0].speech_duration < speech < ends[0].speech_duration + 0.6  # + pre-roll
    assert any(e.type == vad.VADEventType.INFERENCE_DONE and e.probability > 0.9
               for e in events)


async def test_a_failing_backend_is_a_livekit_api_error():
    class Broken:
        async def chat(self, messages, tools=()):
            raise BackendError("the model file is corrupt")
            yield  # an async generator

    model = va.LLM(backend=Broken())
    errors = []
    model.on("error", errors.append)
    chat_ctx = lk_llm.ChatContext.empty()
    chat_ctx.add_message(role="user", content="hello")
    with pytest.raises(APIConnectionError, match="the model file is corrupt"):
        await model.chat(chat_ctx=chat_ctx).collect()
    assert len(errors) == 1 and not errors[0].recoverable


async def test_a_failing_synthesis_is_a_livekit_api_error():
    class Broken:
        sample_rate = 16_000

        async def synthesize(self, text):
            raise BackendError("the voice file is missing")
            yield  # an async generator

    with pytest.raises(APIConnectionError, match="the voice file is missing"):
        await va.TTS(backend=Broken()).synthesize("Hello there.").collect()


async def test_a_failing_recogniser_is_reported_and_the_stream_starts_afresh(speech_dir):
    """LiveKit retries a retryable STT error with a fresh stream: the next turn is heard."""
    class Flaky:
        sample_rate = 16_000
        streams = 0

        def stream(self):
            Flaky.streams += 1
            return FlakyStream(fail=Flaky.streams == 1)

    class FlakyStream:
        def __init__(self, fail):
            self.fail = fail

        async def push(self, samples):
            if self.fail:
                raise RuntimeError("decoder crashed")

        async def pause(self):
            return Transcript("hello there")

        async def finish(self):
            return Transcript("hello there")

        async def aclose(self):
            pass

    model = va.STT(backend=Flaky())
    errors = []
    model.on("error", errors.append)
    stream = model.stream(conn_options=APIConnectOptions(max_retry=2, retry_interval=0.0))
    samples, _ = clip(speech_dir, "azure_whats_the_weather_like.wav")
    quiet = np.zeros(3 * PIPELINE_RATE, np.float32)  # longer than context_silence
    audio = np.concatenate([samples, quiet, samples, quiet])
    events = []

    async def collect():
        async for event in stream:
            events.append(event)

    reader = asyncio.create_task(collect())
    for i in range(0, len(audio), 320):
        stream.push_frame(to_frame(audio[i:i + 320], PIPELINE_RATE))
        await asyncio.sleep(0)
    stream.end_input()
    await asyncio.wait_for(reader, 30)
    await stream.aclose()
    assert len(errors) == 1 and errors[0].recoverable and "decoder crashed" in str(errors[0].error)
    finals = [e.alternatives[0].text for e in events
              if e.type == stt.SpeechEventType.FINAL_TRANSCRIPT]
    # the rest of the first utterance and the second, on the fresh stream
    assert finals == ["hello there", "hello there"] and Flaky.streams == 2


@pytest.mark.slow
async def test_closing_a_livekit_llm_stream_stops_llama_cpp():
    model = va.LLM()
    chat_ctx = lk_llm.ChatContext.empty()
    chat_ctx.add_message(role="user", content="Tell me a long story about the sea.")
    stream = model.chat(chat_ctx=chat_ctx)
    async for chunk in stream:
        assert chunk.delta and chunk.delta.content
        break
    await stream.aclose()  # an interruption
    # the model is free again at once: the next reply is not stuck behind the first
    answer = await asyncio.wait_for(model.chat(chat_ctx=chat_ctx).collect(), 30)
    assert answer.text.strip()
    assert other_tasks() == []


# -- LiveKit plugins as voiceagent backends ----------------------------------------------------


@function_tool
def what_time_is_it() -> str:
    """Tell the current time."""
    calls.append("what_time_is_it")
    return "It is half past ten in the morning."


calls: list[str] = []


@pytest.fixture(scope="module")
def server_url():
    with llama_server() as url:
        yield url


@pytest.mark.slow
async def test_our_session_with_livekits_openai_llm_and_silero_vad_calls_a_tool(
        speech_dir, server_url):
    """By registry name: LiveKit's OpenAI plugin against llama.cpp's server as the LLM,
    LiveKit's Silero as the VAD. SmolLM2 calls tools only when made to (tool_choice)."""
    calls.clear()
    llm = registry.get("llm", "livekit:openai.LLM", base_url=server_url, api_key="local",
                       model="smollm2", tool_choice="what_time_is_it", timeout=60)
    backends = {**resolve_backends(Agent("")), "llm": llm,
                "vad": registry.get("vad", "livekit:silero.VAD")}
    agent = Agent("You are a helpful assistant. Use the tool, then answer in one sentence.",
                  tools=[what_time_is_it], options=AgentOptions(max_tool_rounds=1,
                                                                llm_timeout=60))
    try:
        result = await converse_with_file(
            agent, load_audio(speech_dir / "azure_whats_the_weather_like.wav"), speed=2,
            backends=backends)
    finally:
        await registry.aclose([llm])
        await llm.llm.aclose()
    assert result.fatal_error is None and not result.of_type(ErrorEvent)
    tools = result.of_type(ToolCallEvent)
    assert [t.name for t in tools] == ["what_time_is_it"] and not tools[0].error
    assert calls == ["what_time_is_it"]  # our function really ran
    assert [m.role for m in result.history][:3] == ["user", "assistant", "tool"]
    reply = [e for e in result.of_type(AgentTextEvent) if e.final and not e.interrupted]
    assert reply and reply[0].text.strip()
    assert rms_dbfs(result.audio) > -50


@pytest.mark.slow
async def test_livekit_stt_and_tts_objects_as_our_backends(speech_dir):
    """Any LiveKit STT or TTS object wraps; here voiceagent's own as LiveKit plugins, so the
    round trip runs on real models offline."""
    tts = LiveKitTTS(va.TTS())
    sentence = "It is sunny and warm in the city today."
    pieces = [p async for p in tts.synthesize(sentence)]
    assert pieces and tts.sample_rate == 22_050
    voice = np.concatenate(pieces)
    from voiceagent.audio import resample

    heard_stream = LiveKitSTT(va.STT()).stream()
    await heard_stream.push(resample(voice, tts.sample_rate, PIPELINE_RATE))
    heard = await heard_stream.finish()
    assert word_error_rate(sentence, heard.text) < 0.35, heard.text


async def test_livekit_backend_errors_are_clear():
    with pytest.raises(ConfigError, match="expected <plugin>.<Class>"):
        registry.get("llm", "livekit:openai")
    with pytest.raises(ConfigError, match="only silero.VAD"):
        registry.get("vad", "livekit:webrtc.VAD")
    with pytest.raises(ConfigError, match="has no Nope"):
        registry.get("tts", "livekit:openai.Nope")
    llm = LiveKitLLM(lk_openai.LLM(base_url="http://127.0.0.1:9/v1", api_key="x"), timeout=5)
    with pytest.raises(BackendError, match="LiveKit LLM"):
        async for _ in llm.chat([ChatMessage("user", "hi")]):
            pass
    await llm.llm.aclose()
