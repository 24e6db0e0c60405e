"""An independent WebRTC caller (aiortc, not our server code): speaks a clip into
``/api/offer``'s session and listens for the agent's reply, as a browser would."""

from __future__ import annotations

import asyncio
import fractions
import json
import time

import av
import httpx
import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from voiceagent.transports.ice import restrict_host_addresses

PCM_RATE = 16_000
FRAME = 320  # 20 ms


class ClipTrack(MediaStreamTrack):
    """A microphone that speaks a clip (16 kHz mono float) after a short lead, then stays
    silent, paced in real time."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, lead: float = 0.5) -> None:
        super().__init__()
        speech = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        self._pcm = np.concatenate([np.zeros(int(lead * PCM_RATE), np.int16), speech])
        self._sent = 0
        self._start: float | None = None

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


async def _listen(track: MediaStreamTrack) -> None:
    """Take the agent's audio as a browser would (the server paces it for a listener)."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass
