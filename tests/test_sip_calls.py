"""Real SIP peers call the bridge on loopback, with the real models: sipp replaying an RTP
pcap of a telephone recording, baresip talking the same recording and recording what it
hears, which is transcribed back. A sipp registrar checks our digest authentication.

The clip is the 8 kHz telephone recording in the shared speech data; its first sentence
("A gold ring will please most any girl.") runs from 1.24 s to 3.78 s.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from llm_server import llama_server
from sip_peers import (
    BARESIP,
    SCENARIOS,
    SIPP,
    UAC_UNSUPPORTED_CODEC,
    baresip_call,
    free_port,
    send_udp,
    sipp_call,
    sipp_uas,
    write_rtp_pcap,
)

from voiceagent import Agent, AgentOptions, end_call
from voiceagent.audio import PIPELINE_RATE, load_audio, resample, rms_dbfs, write_wav
from voiceagent.events import Event
from voiceagent.session import resolve_backends
from voiceagent.telephony.media import TELEPHONE_RATE
from voiceagent.telephony.sip_register import RegistrationOptions
from voiceagent.telephony.sip_server import SipOptions, SipServer
from voiceagent_eval.wer import word_error_rate
from voiceagent_plugins.openai_llm import OpenAILLM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SIPP is None or BARESIP is None,
                       reason="sipp and baresip are needed (apt-get install sip-tester baresip)"),
]

CLIP = "osr_harvard_list72_part1_8khz.wav"
FIRST_SENTENCE = "A gold ring will please most any girl."
SECOND_SENTENCE = "The long journey home took a year."
GREETING = ("Hello and welcome to the bakery on the corner. We bake fresh bread every morning, "
            "and today we also have apple pie, cinnamon rolls and a cheese cake.")
AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


def clip_8k(speech_dir, start: float, end: float) -> np.ndarray:
    audio = load_audio(speech_dir / CLIP)
    return resample(audio[int(start * PIPELINE_RATE):int(end * PIPELINE_RATE)],
                    PIPELINE_RATE, TELEPHONE_RATE)


async def bridge(agent: Agent, backends, events: list[Event]) -> SipServer:
    server = SipServer(agent, backends, SipOptions(port=free_port()),
                       subscribers=[events.append])
    await server.start()
    return server


async def closed(server: SipServer) -> None:
    await server.close()
    assert not server.calls
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith(("session-", "sip-"))]


def of(events: list[Event], kind: str) -> list:
    return [e for e in events if e.type == kind]


def final_transcripts(events: list[Event]) -> list[str]:
    return [e.text for e in of(events, "user_turn")]


def first_frame(audio: np.ndarray, test, *, after: float = 0.0, hold: float = 0.02) -> float:
    """Start (s) of the first 20 ms frame from ``after`` on where ``test(dBFS, peak dBFS)``
    holds for ``hold`` seconds."""
    frames = audio[:len(audio) // 160 * 160].reshape(-1, 160)
    db = 20 * np.log10(np.sqrt((frames ** 2).mean(axis=1)) + 1e-9)
    ok = test(db, db.max())
    run = round(hold / 0.02)
    start = round(after / 0.02)
    return next(i * 0.02 for i in range(max(0, start), len(ok) - run + 1) if ok[i:i + run].all())


async def heard(stt, recording) -> str:
    audio = resample(load_audio(recording, TELEPHONE_RATE), TELEPHONE_RATE, PIPELINE_RATE)
    return (await asyncio.to_thread(stt.decode, audio, True)).text


async def test_sipp_call_is_transcribed_answered_and_hung_up(backends, speech_dir, tmp_path):
    """...while garbage and requests for calls that do not exist arrive beside it."""
    events: list[Event] = []
    server = await bridge(AGENT, backends, events)
    target = f"127.0.0.1:{server.address[1]}"
    pcap = write_rtp_pcap(clip_8k(speech_dir, 0.0, 4.3), tmp_path / "call.pcap")
    try:
        call = asyncio.ensure_future(sipp_call(target, pcap, local_port=free_port(),
                                               media_port=free_port(), wait_after=7.0))
        await asyncio.sleep(1.5)
        assert await send_udp(target, b"\x16\x03\x01 not SIP at all\r\n\r\n") is None
        stray = (b"BYE sip:agent@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKs"
                 b"\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: none\r\n"
                 b"CSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n")
        assert (await send_udp(target, stray)).startswith(b"SIP/2.0 481")
        result = await call
        await asyncio.sleep(0.2)
    finally:
        await closed(server)
    assert result.ok, result.errors or result.output[-2000:]
    assert result.received[:2] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    assert result.received[-1] == "SIP/2.0 200 OK"  # our answer to its BYE
    assert result.sent[-1].startswith("BYE ")
    (turn,) = final_transcripts(events)
    assert word_error_rate(FIRST_SENTENCE, turn) <= 0.25, turn
    (metrics,) = of(events, "metrics")
    assert metrics.metrics.voice_to_voice is not None  # the answer was played to the caller
    assert of(events, "call")[0].codec == "PCMU"
    assert of(events, "session")[-1].reason == "the caller hung up"


async def test_an_offer_without_g711_gets_488_from_sipp(backends):
    server = await bridge(AGENT, backends, [])
    try:
        result = await sipp_call(f"127.0.0.1:{server.address[1]}", scenario=UAC_UNSUPPORTED_CODEC,
                                 local_port=free_port(), media_port=free_port(), timeout=10)
    finally:
        await closed(server)
    assert result.ok, result.errors
    assert "SIP/2.0 488 Not Acceptable Here" in result.received


async def test_baresip_hears_the_agent_and_cuts_its_greeting_by_talking(
        backends, speech_dir, tmp_path):
    """The caller talks over the greeting: the agent stops at once, keeps only the words
    heard, answers; baresip records it all and the answer is speech."""
    events: list[Event] = []
    agent = Agent(AGENT.instructions, greeting=GREETING)
    server = await bridge(agent, backends, events)
    talk = np.concatenate([clip_8k(speech_dir, 0.0, 4.3), np.zeros(TELEPHONE_RATE * 8)])
    write_wav(tmp_path / "talk.wav", talk.astype(np.float32), TELEPHONE_RATE)
    try:
        result = await baresip_call(f"sip:agent@127.0.0.1:{server.address[1]}",
                                    tmp_path / "talk.wav", tmp_path / "heard.wav",
                                    duration=12.0, local_port=free_port(), timeout=40)
        await asyncio.sleep(0.2)
    finally:
        await closed(server)
    assert result.established and result.hangup_by == "caller", result.log[-2000:]
    # Barge-in: the greeting paused at the caller's speech onset, then was cut.
    onset = of(events, "user_speaking")[0]
    assert onset.speaking
    actions = {e.action: e.ts for e in of(events, "barge_in")}
    assert actions["paused"] - onset.ts < 0.5 and "interrupted" in actions, actions
    # ...and the caller heard it stop within 0.6 s of both talking (the recording and the
    # talk both start with the call; a slow first synthesis can start the greeting late)
    recording = load_audio(result.recording, TELEPHONE_RATE)
    spoke = first_frame(talk, lambda db, peak: db > peak - 35)
    greeted = first_frame(recording, lambda db, peak: db > -45)
    overlap = max(spoke, greeted)
    heard_quiet = first_frame(recording, lambda db, peak: db < -45, after=overlap, hold=0.4)
    assert heard_quiet - overlap < 0.6, (spoke, greeted, heard_quiet)
    greeting = next(e for e in of(events, "agent_text") if e.final)
    assert greeting.interrupted and GREETING.startswith(greeting.text.rstrip(". "))
    assert len(greeting.text) < len(GREETING)
    assert word_error_rate(FIRST_SENTENCE, final_transcripts(events)[0]) <= 0.25
    # What the caller heard: the start of the greeting, then the answer, as speech.
    answers = [e.text for e in of(events, "agent_text") if e.final and not e.interrupted]
    assert answers, "the agent did not answer"
    words = await heard(backends["stt"], result.recording)
    assert rms_dbfs(load_audio(result.recording, TELEPHONE_RATE)) > -40
    expected = f"{greeting.text} {' '.join(answers)}"
    assert word_error_rate(expected, words) <= 0.5, (expected, words)
    assert of(events, "session")[-1].reason == "the caller hung up"


async def test_the_agent_hangs_up_from_a_tool_with_a_bye(backends, speech_dir, tmp_path):
    """A real OpenAI-compatible server is made to call end_call; the goodbye plays, then
    the bridge sends BYE and baresip sees the call closed by the far end."""
    events: list[Event] = []
    talk = np.concatenate([clip_8k(speech_dir, 4.0, 7.2), np.zeros(TELEPHONE_RATE * 20)])
    write_wav(tmp_path / "talk.wav", talk.astype(np.float32), TELEPHONE_RATE)
    with llama_server() as url:
        llm = OpenAILLM(base_url=url, model="smollm2", tool_choice="end_call", max_tokens=30,
                        timeout=60)
        agent = Agent("You are a phone assistant. End the call, saying goodbye.",
                      tools=[end_call], options=AgentOptions(max_tool_rounds=1, llm_timeout=60))
        server = await bridge(agent, {**backends, "llm": llm}, events)
        try:
            result = await baresip_call(f"sip:agent@127.0.0.1:{server.address[1]}",
                                        tmp_path / "talk.wav", tmp_path / "heard.wav",
                                        duration=40.0, local_port=free_port(),
                                        hangup_by_caller=False, timeout=40)
            await asyncio.sleep(0.2)
        finally:
            await closed(server)
            await llm.aclose()
    assert result.established and result.hangup_by == "callee", result.log[-2000:]
    assert word_error_rate(SECOND_SENTENCE, final_transcripts(events)[0]) <= 0.25
    (tool,) = of(events, "tool_call")
    assert tool.name == "end_call" and not tool.error
    assert of(events, "session")[-1].reason == "the agent ended the call"
    goodbye = [e.text for e in of(events, "agent_text") if e.final]
    assert goodbye and all(goodbye)
    assert rms_dbfs(load_audio(result.recording, TELEPHONE_RATE)) > -40  # it was heard


async def test_registration_answers_a_digest_challenge_from_a_sipp_registrar():
    port = free_port()
    async with sipp_uas(SCENARIOS / "uas_registrar.xml", port=port, media_port=free_port(),
                        timeout=20) as registrar:
        options = SipOptions(port=0, registration=RegistrationOptions(
            registrar=f"127.0.0.1:{port}", username="2001", password="secret"))
        server = SipServer(AGENT, {}, options)
        await server.start()
        try:
            for _ in range(50):
                if server.registrar.registered:
                    break
                await asyncio.sleep(0.1)
            assert server.registrar.registered, server.registrar.last_error
        finally:
            await closed(server)  # unregisters, answering a second challenge
        result = await registrar
    assert result.ok, result.errors
    assert result.sent == ["SIP/2.0 401 Unauthorized", "SIP/2.0 200 OK"] * 2


async def test_two_callers_at_once_each_get_their_own_conversation(backends, speech_dir, tmp_path):
    """sipp and baresip call at the same time, each saying a different sentence: each call's
    session hears only its own caller."""
    events: list[Event] = []
    server = await bridge(AGENT, backends, events)
    target = f"127.0.0.1:{server.address[1]}"
    pcap = write_rtp_pcap(clip_8k(speech_dir, 0.0, 4.3), tmp_path / "call.pcap")
    talk = np.concatenate([clip_8k(speech_dir, 4.0, 7.2), np.zeros(TELEPHONE_RATE * 8)])
    write_wav(tmp_path / "talk.wav", talk.astype(np.float32), TELEPHONE_RATE)
    try:
        sipp, baresip = await asyncio.gather(
            sipp_call(target, pcap, local_port=free_port(), media_port=free_port(),
                      wait_after=6.0),
            baresip_call(f"sip:agent@{target}", tmp_path / "talk.wav", tmp_path / "heard.wav",
                         duration=10.0, local_port=free_port(), timeout=40))
        await asyncio.sleep(0.2)
    finally:
        await closed(server)
    assert sipp.ok and baresip.established, (sipp.errors, baresip.log[-1000:])
    turns = {}
    for call in of(events, "call"):
        said = [e.text for e in of(events, "user_turn") if e.session_id == call.session_id]
        turns[call.caller.split("@")[0]] = " ".join(said)
    assert set(turns) == {"sip:sipp", "sip:caller"}
    assert word_error_rate(FIRST_SENTENCE, turns["sip:sipp"]) <= 0.25, turns
    assert word_error_rate(SECOND_SENTENCE, turns["sip:caller"]) <= 0.25, turns
