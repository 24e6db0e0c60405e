"""Live inputs that stop sending audio altogether (Opus DTX, a non-browser client, a network
stall): the question asked is still answered, and a client that never sends audio is closed
after the input timeout with a reason that says so. Independent clients (an aiortc peer, a
media-stream WebSocket as Twilio opens it) talk to the real models behind an in-process
server, all on loopback."""

from __future__ import annotations

import asyncio
import base64
import fractions
import json

import av
import httpx
import numpy as np
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect
from webrtc_harness import Client, running_server, until

from voiceagent import Agent
from voiceagent.audio import load_audio, resample
from voiceagent.events import Event, SessionStateEvent
from voiceagent.server import ServerConfig, create_app
from voiceagent.session import resolve_backends
from voiceagent.telephony.g711 import decode_ulaw, encode_ulaw
from voiceagent_eval.wer import word_error_rate

pytestmark = pytest.mark.slow

AGENT = Agent("You are a friendly voice assistant. Answer in one short sentence.")
RATE = 48_000
FRAME = 960  # 20 ms


class ClipThenNothing(MediaStreamTrack):
    """A microphone that sends ``lead`` seconds of silence and the clip in real time, then no
    frame ever again: ``recv()`` blocks (not silence: nothing goes out at all)."""

    kind = "audio"

    def __init__(self, clip: np.ndarray | None, lead: float = 0.5) -> None:
        super().__init__()
        audio = np.zeros(0, np.float32) if clip is None else np.concatenate(
            [np.zeros(int(lead * RATE), np.float32), clip])
        self.pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
        self.stalled = asyncio.Event()
        self._pos = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._pos >= len(self.pcm):
            self.stalled.set()
            await asyncio.Event().wait()  # until the peer connection is closed
        loop = asyncio.get_running_loop()
        self._start = loop.time() if self._start is None else self._start
        await asyncio.sleep(max(0.0, self._start + self._pos / RATE - loop.time()))
        chunk = self.pcm[self._pos:self._pos + FRAME]
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(np.pad(chunk, (0, FRAME - len(chunk))).tobytes())
        frame.sample_rate, frame.pts = RATE, self._pos
        frame.time_base = fractions.Fraction(1, RATE)
        self._pos += FRAME
        return frame


class Speaker:
    """The agent's track as the client plays it: when frames with a voice in them came."""

    def __init__(self) -> None:
        self.voiced: list[float] = []  # loop time of each frame louder than -50 dBFS
        self.task: asyncio.Task | None = None

    def on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self.task is None:
            self.task = asyncio.ensure_future(self._listen(track))

    async def _listen(self, track: MediaStreamTrack) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().astype(np.float32) / 32768
                if 10 * np.log10(np.mean(pcm ** 2) + 1e-10) > -50:
                    self.voiced.append(loop.time())
        except MediaStreamError:
            return

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def without_trailing_silence(audio: np.ndarray) -> np.ndarray:
    """The clip up to its last 20 ms louder than -60 dBFS: the frames stop as the voice does
    (the recording's own trailing silence would end the turn by itself)."""
    windows = audio[:len(audio) // FRAME * FRAME].reshape(-1, FRAME)
    loud = np.flatnonzero(10 * np.log10(np.mean(windows ** 2, axis=1) + 1e-10) > -60)
    return audio[:(loud[-1] + 1) * FRAME]


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


def session_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("session-")]


async def test_a_question_is_answered_after_the_microphone_stops_sending(backends, speech_dir):
    question = without_trailing_silence(
        load_audio(speech_dir / "azure_whats_the_weather_like.wav", RATE))
    mic = ClipThenNothing(question)
    events: list[Event] = []
    app = create_app(AGENT, backends, ServerConfig(
        host_addresses=["127.0.0.1"], input_timeout=60, subscribers=[events.append]))
    client, speaker = Client(mic), Speaker()
    client.pc.on("track", speaker.on_track)
    loop = asyncio.get_running_loop()
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        try:
            await client.connect(http)
            await asyncio.wait_for(mic.stalled.wait(), 30)
            stalled_at = loop.time()
            # Without the gap filler the turn never ends: no transcript, no reply, ever.
            await until(lambda: any(t > stalled_at for t in speaker.voiced), timeout=60)
            heard = next(m for m in client.messages
                         if m["type"] == "user_transcript" and m["final"])
            assert word_error_rate("What's the weather like?", heard["text"]) <= 0.34, heard
            assert len(app.state.registry) == 1  # answered while the session is still open
            assert not any(isinstance(e, SessionStateEvent) and e.state == "ended"
                           for e in events)
        finally:
            await speaker.close()
            await client.pc.close()
        await until(lambda: len(app.state.registry) == 0 and not session_tasks())


async def test_a_client_that_never_sends_audio_is_closed_after_the_input_timeout(backends):
    mic = ClipThenNothing(None)
    events: list[Event] = []
    app = create_app(AGENT, backends, ServerConfig(
        host_addresses=["127.0.0.1"], input_timeout=1.5, subscribers=[events.append]))
    client = Client(mic)
    loop = asyncio.get_running_loop()
    async with running_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        try:
            await client.connect(http)
            connected = loop.time()
            await until(lambda: len(app.state.registry) == 0 and not session_tasks(),
                        timeout=15)
            closed_after = loop.time() - connected
            ended = [e for e in events if isinstance(e, SessionStateEvent) and e.state == "ended"]
            assert [e.reason for e in ended] == ["no audio from the browser for 1.5 s"]
            assert 1.0 <= closed_after <= 8.0, closed_after
        finally:
            await client.pc.close()


async def test_a_phone_caller_whose_audio_stops_is_answered(backends, speech_dir):
    """The media-stream WebSocket's input is a live input too: the caller's media messages
    stop after the question (a provider that suppresses silence, a stalled link)."""
    question = without_trailing_silence(
        load_audio(speech_dir / "azure_whats_the_weather_like.wav", RATE))
    phone = resample(question, RATE, 8000)
    app = create_app(AGENT, backends, ServerConfig())
    async with running_server(app) as url:
        ws_url = url.replace("http://", "ws://") + "/media-stream/twilio"
        async with connect(ws_url, proxy=None, open_timeout=5, close_timeout=2) as ws:
            await ws.send(json.dumps({
                "event": "start", "streamSid": "MZ1", "start": {
                    "streamSid": "MZ1", "callSid": "CA1", "customParameters": {},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                    "channels": 1}}}))
            loop = asyncio.get_running_loop()
            start = loop.time()
            for at in range(0, len(phone), 160):  # 20 ms each, in real time
                await asyncio.sleep(max(0.0, start + at / 8000 - loop.time()))
                await ws.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {
                    "payload": base64.b64encode(encode_ulaw(phone[at:at + 160])).decode()}}))
            # ... and then nothing: the agent's voice must still come back.
            async def voiced_reply() -> None:
                while True:
                    message = json.loads(await ws.recv())
                    if message["event"] == "media":
                        audio = decode_ulaw(base64.b64decode(message["media"]["payload"]))
                        if 10 * np.log10(np.mean(audio ** 2) + 1e-10) > -50:
                            return
            await asyncio.wait_for(voiced_reply(), 60)
            assert len(app.state.registry) == 1
        await until(lambda: len(app.state.registry) == 0 and not session_tasks())
