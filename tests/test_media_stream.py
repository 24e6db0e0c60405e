"""Phone calls over a Twilio Media Stream: a real WebSocket client plays Twilio's part against
the real server on loopback, with a real telephone recording (8 kHz, mu-law, 20 ms messages
in real time) as the caller and the real models behind the agent."""

from __future__ import annotations

import asyncio
import base64
import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from webrtc_harness import running_server

from voiceagent import Agent
from voiceagent.audio import PIPELINE_RATE, load_audio, resample, rms_dbfs
from voiceagent.events import (
    AgentTextEvent,
    BargeInEvent,
    CallEvent,
    DTMFEvent,
    ErrorEvent,
    Event,
    PlayoutMarkEvent,
    SessionStateEvent,
    UserTranscriptEvent,
)
from voiceagent.server import ServerConfig, create_app
from voiceagent.session import resolve_backends
from voiceagent.telephony.g711 import decode_ulaw, encode_ulaw
from voiceagent.telephony.media_stream import MediaStreamCall
from voiceagent.telephony.serializers import (
    MediaFormat,
    MessageError,
    StreamDTMF,
    StreamMark,
    StreamMedia,
    StreamStart,
    StreamStop,
    TwilioSerializer,
)
from voiceagent_eval.wer import word_error_rate

AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")
TOKEN = "s3cret-token"
MULAW = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
RATE = 8000
#: The Open Speech Repository's telephone recording: its first two sentences, cut at pauses.
PHONE_CLIP = "osr_harvard_list72_part1_8khz.wav"
FIRST = (1.0, 4.3, "A gold ring will please most any girl.")
SECOND = (4.7, 7.3, "The long journey home took a year.")


def start_message(call_sid: str, media_format: dict = MULAW, **parameters: str) -> str:
    """Twilio's start message, as its docs show it."""
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": f"MZ{call_sid}",
                       "start": {"accountSid": "AC1", "streamSid": f"MZ{call_sid}",
                                 "callSid": call_sid, "tracks": ["inbound"],
                                 "mediaFormat": media_format,
                                 "customParameters": parameters}})


def media_message(stream_sid: str, seq: int, payload: bytes) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(seq + 2), "streamSid": stream_sid,
                       "media": {"track": "inbound", "chunk": str(seq + 1),
                                 "timestamp": str(seq * 20),
                                 "payload": base64.b64encode(payload).decode()}})


def session_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("session-")]


async def until(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; that is the result."""
    for _ in range(int(timeout / 0.05)):
        if result := condition():
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not met within {timeout} s")


def ws_url(base: str, provider: str = "twilio") -> str:
    return f"{base.replace('http://', 'ws://')}/media-stream/{provider}"


def open_socket(url: str) -> connect:
    return connect(url, proxy=None, open_timeout=5, close_timeout=2)


class FakeTwilio:
    """Twilio's side of one stream: ``connected`` and ``start``, then the caller's audio as
    paced 20 ms media messages (silence between what it is told to :meth:`say`), as a phone
    line never pauses. Records what the server sends, and echoes each mark, as Twilio does
    once the audio before it has played (here: as it arrives, since it arrives in real
    time)."""

    def __init__(self, ws: ClientConnection, call_sid: str) -> None:
        self.ws = ws
        self.stream_sid = f"MZ{call_sid}"
        self.received: list[dict] = []
        #: the agent's audio, one entry per stretch of speech: (what ended it, mu-law bytes)
        self.replies: list[tuple[str, bytes]] = []
        self.speech = bytearray()  # the agent audio since the last mark or clear
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future]] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []

    def events(self, kind: str) -> list[dict]:
        return [m for m in self.received if m["event"] == kind]

    async def say(self, audio: np.ndarray) -> None:
        """Speak ``audio`` (8 kHz) into the call; returns once it has been sent."""
        done = asyncio.get_running_loop().create_future()
        await self._queue.put((audio, done))
        await done

    async def send(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        t0, seq, current, done = loop.time(), 0, np.zeros(0, np.float32), None
        while True:
            if not len(current) and done is not None:
                done.set_result(None)
                done = None
            if not len(current) and not self._queue.empty():
                current, done = self._queue.get_nowait()
            frame, current = current[:160], current[160:]
            frame = np.pad(frame, (0, 160 - len(frame)))
            await self.ws.send(media_message(self.stream_sid, seq, encode_ulaw(frame)))
            seq += 1
            await asyncio.sleep(max(0.0, t0 + seq * 0.02 - loop.time()))

    async def _listen(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            assert message["streamSid"] == self.stream_sid, message
            self.received.append(message)
            if message["event"] == "media":
                self.speech += base64.b64decode(message["media"]["payload"])
            elif message["event"] in ("mark", "clear"):
                ended = message["mark"]["name"] if message["event"] == "mark" else "clear"
                self.replies.append((ended, bytes(self.speech)))
                self.speech.clear()
            if message["event"] == "mark":
                await self.ws.send(json.dumps({
                    "event": "mark", "sequenceNumber": "0", "streamSid": self.stream_sid,
                    "mark": message["mark"]}))

    @classmethod
    @asynccontextmanager
    async def call(cls, url: str, call_sid: str, **parameters: str
                   ) -> AsyncIterator[FakeTwilio]:
        async with open_socket(url) as ws:
            twilio = cls(ws, call_sid)
            await ws.send(json.dumps({"event": "connected", "protocol": "Call",
                                      "version": "1.0.0"}))
            await ws.send(start_message(call_sid, **parameters))
            twilio._tasks = [asyncio.create_task(twilio._pace()),
                             asyncio.create_task(twilio._listen())]
            try:
                yield twilio
            finally:
                for task in twilio._tasks:
                    task.cancel()
                await asyncio.gather(*twilio._tasks, return_exceptions=True)

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Until the server has closed the stream; a failed check of what it sent raises."""
        await asyncio.wait_for(asyncio.shield(self._tasks[1]), timeout)

    async def stop(self) -> None:
        """Twilio's stop: the caller hung up."""
        self._tasks[0].cancel()
        await self.ws.send(json.dumps({"event": "stop", "sequenceNumber": "9",
                                       "streamSid": self.stream_sid,
                                       "stop": {"accountSid": "AC1", "callSid": "x"}}))


def session_of(events: list[Event], call_sid: str) -> str:
    return next((e.session_id for e in events
                 if isinstance(e, CallEvent) and e.call_id == call_sid), "")


def of(events: list[Event], kind: type, session_id: str) -> list:
    return [e for e in events if isinstance(e, kind) and e.session_id == session_id]


def phone_speech(speech_dir: Path, part: tuple[float, float, str]) -> np.ndarray:
    audio = load_audio(speech_dir / PHONE_CLIP, RATE)
    return audio[int(part[0] * RATE):int(part[1] * RATE)]


# -- the framing ------------------------------------------------------------------------------


def test_twilio_messages_parse_into_typed_messages_and_replies_are_twilios_shapes():
    twilio = TwilioSerializer()
    assert twilio.parse('{"event": "connected", "protocol": "Call", "version": "1.0.0"}') is None
    start = twilio.parse(start_message("CA9", token="t", **{"from": "+15550100"}))
    assert start == StreamStart("MZCA9", "CA9", MediaFormat("PCMU", 8000, 1),
                                {"token": "t", "from": "+15550100"})
    odd = twilio.parse(start_message("CA9", {"encoding": "audio/x-l16", "sampleRate": 16000,
                                             "channels": 1}))
    assert odd.media_format == MediaFormat("audio/x-l16", 16000, 1)
    assert twilio.parse(media_message("MZ1", 0, b"\xff\x7f\x00")) == StreamMedia(b"\xff\x7f\x00")
    outbound_track = json.loads(media_message("MZ1", 0, b"\x00"))
    outbound_track["media"]["track"] = "outbound"
    assert twilio.parse(json.dumps(outbound_track)) is None  # the caller's audio only
    assert twilio.parse(json.dumps({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5",
                                    "dtmf": {"track": "inbound_track", "digit": "#"}})
                        ) == StreamDTMF("#")
    assert twilio.parse('{"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", '
                        '"mark": {"name": "reply-2"}}') == StreamMark("reply-2")
    assert twilio.parse('{"event": "stop", "sequenceNumber": "5", "streamSid": "MZ1", '
                        '"stop": {"accountSid": "AC1", "callSid": "CA1"}}') == StreamStop()

    assert json.loads(twilio.media("MZ1", b"\x01\x02")) == {
        "event": "media", "streamSid": "MZ1", "media": {"payload": "AQI="}}
    assert json.loads(twilio.mark("MZ1", "reply-3")) == {
        "event": "mark", "streamSid": "MZ1", "mark": {"name": "reply-3"}}
    assert json.loads(twilio.clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
    # What goes out parses back (Twilio's mark echo is the same shape).
    assert twilio.parse(twilio.media("MZ1", b"\x01\x02")) == StreamMedia(b"\x01\x02")
    assert twilio.parse(twilio.mark("MZ1", "reply-3")) == StreamMark("reply-3")


@pytest.mark.parametrize("text, code, says", [
    ("{oops", 1007, "not JSON"),
    ("[1, 2]", 1007, "JSON object"),
    ('{"streamSid": "MZ1"}', 1008, "no 'event'"),
    ('{"event": "dance"}', 1008, "unknown event 'dance'"),
    ('{"event": "media", "media": {}}', 1007, "payload"),
    ('{"event": "media", "media": {"payload": "not base64!"}}', 1007, "base64"),
    ('{"event": "dtmf", "dtmf": {"digit": "x"}}', 1007, "digit"),
    ('{"event": "start", "start": {"streamSid": "MZ1"}}', 1007, "malformed start"),
])
def test_malformed_twilio_messages_are_refused_with_a_reason(text, code, says):
    with pytest.raises(MessageError, match=says) as refused:
        TwilioSerializer().parse(text)
    assert refused.value.close_code == code


# -- the server, before any session -----------------------------------------------------------


async def test_twiml_points_twilio_at_the_stream_and_carries_the_token():
    app = create_app(AGENT, {}, ServerConfig(token=TOKEN))
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/twilio/twiml")).status_code == 401
        assert (await http.get("/twilio/twiml?token=nope")).status_code == 401
        res = await http.post(f"/twilio/twiml?token={TOKEN}",
                              data={"CallSid": "CA1", "From": "+15550100", "To": "+15550199"})
        assert res.status_code == 200 and res.headers["content-type"] == "application/xml"
        stream = ET.fromstring(res.text).find("./Connect/Stream")
        assert stream.get("url") == f"wss://{url.removeprefix('http://')}/media-stream/twilio"
        assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == {
            "token": TOKEN, "from": "+15550100", "to": "+15550199"}

    app = create_app(AGENT, {}, ServerConfig(public_url="https://agent.example.com/voice/"))
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        stream = ET.fromstring((await http.get("/twilio/twiml")).text).find("./Connect/Stream")
        assert stream.get("url") == "wss://agent.example.com/voice/media-stream/twilio"
        assert stream.findall("Parameter") == []


async def test_streams_that_cannot_start_are_closed_with_a_reason(monkeypatch):
    monkeypatch.setattr(MediaStreamCall, "start_timeout", 0.5)
    app = create_app(AGENT, {}, ServerConfig(token=TOKEN))
    connected = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
    cases = [
        ("twilio", ["{oops"], 1007, "not JSON"),
        ("twilio", ['{"event": "dance"}'], 1008, "unknown event"),
        ("twilio", [connected, media_message("MZ1", 0, b"\xff" * 160)], 1008, "media before start"),
        ("twilio", [start_message("CA1", {"encoding": "audio/x-l16", "sampleRate": 16000,
                                          "channels": 1}, token=TOKEN)], 1003, "media format"),
        ("twilio", [start_message("CA1", token="wrong")], 1008, "token"),
        ("twilio", [start_message("CA1")], 1008, "token"),
        ("twilio", [b"\x00\x01"], 1003, "binary"),
        ("twilio", ["x" * 100_000], 1009, "over"),
        ("twilio", [connected], 1008, "no start message within 0.5 s"),
        ("acme", [], 1008, "no media-stream provider 'acme'"),
    ]
    async with running_server(app) as url:
        for provider, messages, code, says in cases:
            async with open_socket(ws_url(url, provider)) as ws:
                for message in messages:
                    await ws.send(message)
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
            assert (ws.close_code, says in (ws.close_reason or "")) == (code, True), (
                messages, ws.close_code, ws.close_reason)
        assert len(app.state.registry) == 0 and not session_tasks()
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/health")).json()["sessions"] == 0


# -- calls with the real models ---------------------------------------------------------------


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


async def agent_words(stt, mulaw: bytes) -> str:
    """What the caller heard, transcribed back with the real STT."""
    audio = resample(decode_ulaw(mulaw), RATE, PIPELINE_RATE)
    return (await asyncio.to_thread(stt.decode, audio, True)).text


@pytest.mark.slow
async def test_a_call_is_heard_answered_marked_keyed_interrupted_and_hung_up(
        backends, speech_dir):
    events: list[Event] = []
    config = ServerConfig(token=TOKEN, subscribers=[events.append])
    app = create_app(AGENT, backends, config)
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        # Twilio asks the webhook what to do with the call, then opens the stream it names.
        config.public_url = url
        twiml = await http.post(f"/twilio/twiml?token={TOKEN}", data={"From": "+15550100"})
        stream = ET.fromstring(twiml.text).find("./Connect/Stream")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        async with FakeTwilio.call(stream.get("url"), "CA100", **parameters) as call:
            sid = await until(lambda: session_of(events, "CA100"), 10, "the call event")
            await converse(call, sid, events, backends["stt"], speech_dir)
            await call.stop()
            await call.wait_closed()
            assert call.ws.close_code == 1000
    ended = of(events, SessionStateEvent, sid)[-1]
    assert ended.state == "ended" and "stopped" in ended.reason
    assert len(app.state.registry) == 0 and not session_tasks()


async def converse(call: FakeTwilio, sid: str, events: list[Event], stt, speech_dir: Path):
    """The caller speaks and is heard; the answer comes back as speech, then a mark; keys
    are pressed; the caller talks over the answer to them."""
    call_event = of(events, CallEvent, sid)[0]
    assert (call_event.caller, call_event.transport, call_event.codec) == (
        "+15550100", "twilio", "PCMU")
    await call.say(phone_speech(speech_dir, FIRST))
    heard = await until(lambda: [e for e in of(events, UserTranscriptEvent, sid)
                                 if e.final and e.text], 30, "a final transcript")
    assert word_error_rate(FIRST[2], heard[0].text) <= 0.3, heard[0].text

    name, reply = (await until(lambda: call.replies, 60, "the agent's reply"))[0]
    assert name.startswith("reply-") and len(reply) >= 0.5 * RATE
    await until(lambda: [e for e in of(events, PlayoutMarkEvent, sid) if e.name == name],
                5, "the echoed mark as an event")
    said = next(e.text for e in of(events, AgentTextEvent, sid) if e.final)
    assert rms_dbfs(decode_ulaw(reply)) > -40
    words = await agent_words(stt, reply)
    assert word_error_rate(said, words) <= 0.5, (said, words)

    # Keys: dtmf events, and "1#" becomes a user turn the agent answers...
    for digit in "1#":
        await call.send(json.dumps({"event": "dtmf", "streamSid": call.stream_sid,
                                    "sequenceNumber": "7",
                                    "dtmf": {"track": "inbound_track", "digit": digit}}))
    await until(lambda: len(of(events, DTMFEvent, sid)) == 2, 5, "dtmf events")
    assert [e.digit for e in of(events, DTMFEvent, sid)] == ["1", "#"]
    # ...which the caller talks over as soon as it starts: the agent stops, and Twilio is
    # told to drop what it buffered.
    await until(lambda: call.speech, 60, "the second reply")
    await call.say(phone_speech(speech_dir, SECOND))
    await until(lambda: call.events("clear"), 15, "a clear")
    assert [e.action for e in of(events, BargeInEvent, sid)][:2] == ["paused", "interrupted"]


@pytest.mark.slow
async def test_bad_input_and_a_vanishing_caller_leave_the_other_call_working(
        backends, speech_dir):
    events: list[Event] = []
    app = create_app(AGENT, backends, ServerConfig(max_sessions=2, subscribers=[events.append]))
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http, \
            FakeTwilio.call(ws_url(url), "CA1") as first, \
            FakeTwilio.call(ws_url(url), "CA2") as second:
        one = await until(lambda: session_of(events, "CA1"), 10, "the first call")
        two = await until(lambda: session_of(events, "CA2"), 10, "the second call")

        # Broken messages during a call: each an error event, the call goes on.
        for bad in ("{oops", '{"event": "dance"}', b"\x01\x02", "x" * 100_000,
                    '{"event": "media", "streamSid": "MZCA1", "media": {"payload": "%%"}}',
                    start_message("CA1")):
            await first.send(bad)
        errors = await until(lambda: len(of(events, ErrorEvent, one)) >= 6 and
                             of(events, ErrorEvent, one), 5, "six error events")
        assert {e.source for e in errors} == {"media-stream"} and not any(e.fatal for e in errors)

        # A third call while two are live is refused.
        async with open_socket(ws_url(url)) as third:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(third.recv(), 5)
        assert third.close_code == 1013 and "too many sessions" in third.close_reason

        # The second caller vanishes while the agent answers: no stop, no close frame.
        await second.say(phone_speech(speech_dir, SECOND))
        await until(lambda: second.speech, 60, "the second call's reply")
        second.ws.transport.abort()
        await until(lambda: len(app.state.registry) == 1, 10, "the vanished call ending")
        ended = of(events, SessionStateEvent, two)[-1]
        assert ended.state == "ended" and "socket closed" in ended.reason
        health = (await http.get("/health")).json()
        assert (health["status"], health["sessions"], health["max_sessions"]) == ("ok", 1, 2)

        # The first call still works.
        await first.say(phone_speech(speech_dir, FIRST))
        heard = await until(lambda: [e for e in of(events, UserTranscriptEvent, one)
                                     if e.final and e.text], 30, "a final transcript")
        assert word_error_rate(FIRST[2], heard[0].text) <= 0.3, heard[0].text
        await first.stop()
        await first.wait_closed()
    await until(lambda: len(app.state.registry) == 0 and not session_tasks(), 10, "all gone")
