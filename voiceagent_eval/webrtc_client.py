"""An independent WebRTC caller (aiortc, not our server code): speaks a clip into
``/api/offer``'s session and listens for the agent's reply, as a browser would.

:func:`time_reply` measures client-side voice-to-voice on any server that answers an SDP
offer posted as ``{"sdp", "type"}`` JSON (``voiceagent serve``, the Pipecat bot of
``benchmarks/pipecat_bot.py``): from the moment the frame holding the clip's last voiced
sample was handed to the WebRTC stack to the first received agent frame above a level.
"""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field

import av
import httpx
import numpy as np

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voiceagent.transports.ice import restrict_host_addresses

PCM_RATE = 16_000
FRAME = 320  # 20 ms
#: a frame is speech when within this of the clip's loudest frame (recordings differ in level)
SPEECH_RANGE_DB = 35.0
#: a received frame louder than this is the agent speaking (Piper speaks at a steady level)
HEARD_DBFS = -40.0


def frame_dbfs(samples: np.ndarray) -> float:
    """RMS level of float samples (full scale 1.0) in dBFS."""
    return 20 * np.log10(float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) + 1e-9)


def last_voiced_sample(samples: np.ndarray) -> int:
    """Index just past the clip's last 20 ms frame within SPEECH_RANGE_DB of its loudest."""
    levels = [frame_dbfs(samples[i:i + FRAME]) for i in range(0, len(samples), FRAME)]
    floor = max(levels) - SPEECH_RANGE_DB
    last = max(i for i, level in enumerate(levels) if level > floor)
    return min(len(samples), (last + 1) * FRAME)


class ClipTrack(MediaStreamTrack):
    """A microphone that speaks a clip (16 kHz mono float) after a short lead, then stays
    silent, paced in real time."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, lead: float = 0.5) -> None:
        super().__init__()
        speech = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        silence = int(lead * PCM_RATE)
        self._pcm = np.concatenate([np.zeros(silence, np.int16), speech])
        self._voiced_end = silence + last_voiced_sample(samples)
        self._sent = 0
        self._start: float | None = None
        #: time.monotonic() when the frame holding the last voiced sample went out
        self.speech_end: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._sent / PCM_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._pcm[self._sent:self._sent + FRAME]
        chunk = np.pad(chunk, (0, FRAME - len(chunk)))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PCM_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, PCM_RATE)
        if self._sent < self._voiced_end <= self._sent + FRAME:
            self.speech_end = time.monotonic()
        self._sent += FRAME
        return frame


async def webrtc_session(base_url: str, samples: np.ndarray, *, timeout: float = 60.0) -> bool:
    """One caller: offer, speak ``samples``, wait until the agent has spoken a reply and
    finished it, hang up. True when it was answered."""
    pc = RTCPeerConnection()
    answered = asyncio.Event()
    spoke = False
    listeners: list[asyncio.Task] = []

    def on_message(raw: str) -> None:
        nonlocal spoke
        event = json.loads(raw)
        if event.get("type") == "agent_speaking":
            spoke = spoke or event["speaking"]
            if spoke and not event["speaking"]:
                answered.set()

    try:
        pc.addTrack(ClipTrack(samples))
        channel = pc.createDataChannel("events")
        channel.on("message", on_message)
        pc.on("track", lambda track: listeners.append(asyncio.create_task(_listen(track))))
        restrict_host_addresses(pc, ["127.0.0.1"])
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            res = await http.post("/api/offer", json={"sdp": pc.localDescription.sdp,
                                                      "type": "offer"})
        if res.status_code != 200:
            return False
        answer = res.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        try:
            await asyncio.wait_for(answered.wait(), timeout)
        except TimeoutError:
            return False
        if channel.readyState == "open":
            channel.send('{"type": "end"}')
        return True
    finally:
        await pc.close()
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)


async def _listen(track: MediaStreamTrack, heard: list[tuple[float, float]] | None = None
                  ) -> None:
    """Take the agent's audio as a browser would (the server paces it for a listener);
    note each frame's arrival time and level in ``heard``."""
    try:
        while True:
            frame = await track.recv()
            if heard is not None:
                assert isinstance(frame, av.AudioFrame)
                pcm = frame.to_ndarray().astype(np.float32) / 32768
                heard.append((time.monotonic(), frame_dbfs(pcm)))
    except MediaStreamError:
        pass


@dataclass
class TimedReply:
    """One caller's turn: ``voice_to_voice`` in seconds, None when no reply was heard.

    From a voiceagent server, whose data channel carries the turn's metrics event at the
    moment its first audio frame goes to the track, it splits into ``inbound`` (the speech's
    end reaching the server's VAD), ``server`` (the server's own voice-to-voice, from the
    VAD's end of speech to that frame) and ``outbound`` (that frame to the client hearing
    it); None where the server sent no metrics (Pipecat).
    """

    voice_to_voice: float | None
    inbound: float | None = None
    server: float | None = None
    outbound: float | None = None
    #: the server's latency_breakdown event of this turn (its stages, in seconds), if sent
    breakdown: dict[str, float] | None = None
    #: (arrival time.monotonic(), dBFS) of every agent frame received
    heard: list[tuple[float, float]] = field(default_factory=list, repr=False)

    @property
    def packet_delay(self) -> float | None:
        """How late the agent's audio arrived, as an adaptive jitter buffer (a browser's)
        would have to absorb it: the 99th percentile of each frame's delay against the
        earliest frame of the 2 s before it, on the 20 ms grid the frames are stamped on."""
        return relative_delay_p99([t for t, _ in self.heard])


def relative_delay_p99(arrivals: list[float], window: float = 2.0) -> float | None:
    """The 99th percentile of ``arrivals[i] - 20 ms * i`` above its minimum over the
    ``window`` seconds up to frame ``i`` (None for fewer than two frames)."""
    if len(arrivals) < 2:
        return None
    times = np.asarray(arrivals)
    delay = times - FRAME / PCM_RATE * np.arange(len(times))
    start = np.searchsorted(times, times - window)
    relative = [delay[i] - delay[start[i]:i + 1].min() for i in range(len(times))]
    return float(np.percentile(relative, 99))


async def time_reply(offer_url: str, samples: np.ndarray, *, lead: float = 1.5,
                     timeout: float = 20.0, linger: float = 0.5) -> TimedReply:
    """Call ``offer_url``, speak ``samples`` after ``lead`` seconds of silence and time the
    agent's first audio after the last voiced sample; hang up ``linger`` seconds after it
    (or ``timeout`` seconds after the speech without one)."""
    pc = RTCPeerConnection()
    mic = ClipTrack(samples, lead)
    heard: list[tuple[float, float]] = []
    metrics: list[tuple[float, float | None]] = []  # (arrival, server voice-to-voice)
    breakdowns: list[tuple[float, dict]] = []  # (arrival, latency_breakdown event)
    listeners: list[asyncio.Task] = []

    def on_message(raw: str | bytes) -> None:
        # Anything that raises here would end aiortc's DTLS transport, media included:
        # Pipecat sends messages of its own.
        try:
            event = json.loads(raw)
            if isinstance(event, dict) and event.get("type") == "metrics":
                metrics.append((time.monotonic(), event["metrics"]["voice_to_voice"]))
            elif isinstance(event, dict) and event.get("type") == "latency_breakdown":
                breakdowns.append((time.monotonic(), event))
        except (ValueError, TypeError, KeyError):
            pass

    try:
        pc.addTrack(mic)
        # Pipecat's bot expects a data channel too (and sends nothing we read on it)
        pc.createDataChannel("events").on("message", on_message)
        pc.on("track", lambda track: listeners.append(asyncio.create_task(
            _listen(track, heard))))
        restrict_host_addresses(pc, ["127.0.0.1"])
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(timeout=30) as http:
            res = await http.post(offer_url, json={"sdp": pc.localDescription.sdp,
                                                   "type": "offer"})
        if res.status_code != 200:  # refused (e.g. too many sessions): not answered
            return TimedReply(None, heard=heard)
        answer = res.json()
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        give_up = time.monotonic() + 10 + lead + len(samples) / PCM_RATE + timeout
        while time.monotonic() < give_up:  # 10 s to connect, then the clip and the wait
            await asyncio.sleep(0.02)
            if mic.speech_end is None:
                continue
            first = next((t for t, level in heard
                          if t > mic.speech_end and level > HEARD_DBFS), None)
            if first is not None:
                await asyncio.sleep(linger)
                return _split(first - mic.speech_end, first, mic.speech_end, metrics,
                              breakdowns, heard)
            if time.monotonic() > mic.speech_end + timeout:
                break
        return TimedReply(None, heard=heard)
    finally:
        await pc.close()
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)


def _split(total: float, first: float, speech_end: float,
           metrics: list[tuple[float, float | None]], breakdowns: list[tuple[float, dict]],
           heard: list[tuple[float, float]]) -> TimedReply:
    """``total`` with its parts where the server's metrics of this turn arrived."""
    served = next(((t, v2v) for t, v2v in metrics if speech_end < t <= first and v2v), None)
    if served is None:
        return TimedReply(total, heard=heard)
    breakdown = next((b for t, b in breakdowns if speech_end < t <= first), None)
    arrival, server = served
    assert server is not None
    outbound = first - arrival
    return TimedReply(total, inbound=total - server - outbound, server=server,
                      outbound=outbound, heard=heard, breakdown=breakdown)
