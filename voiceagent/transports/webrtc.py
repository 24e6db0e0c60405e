"""WebRTC media: a browser's microphone in, the agent's voice out (aiortc).

Inbound Opus arrives decoded as 48 kHz s16 frames (often stereo even from a mono microphone);
:class:`WebRTCAudioInput` converts it once to the pipeline's 16 kHz mono float32. Outbound,
:class:`AgentAudioTrack` is the track the browser hears: its ``recv()`` is paced on the
session clock and pulls one 20 ms frame at a time from :class:`WebRTCAudioOutput`, silence
when the agent is quiet, so the browser gets a steady stream with no bursts. The first audio
after silence does not wait for the next tick: the track's timeline restarts when it is
queued (up to 20 ms sooner, 10 ms on average).

Inbound, :func:`release_packets_promptly` replaces aiortc's audio jitter buffer, which holds
four packets (80 ms) back for smooth playout, with one that passes each packet on at once:
the agent never plays that audio, and the wait only delayed the end of the user's speech
reaching the VAD.
"""

from __future__ import annotations

import asyncio
import fractions
import logging

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCRtpReceiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from ..audio import to_mono_float
from ..clock import SessionClock
from ..frames import DataFrame, InterruptionFrame, PlayoutPauseFrame, SystemFrame
from ..pacer import Pacer
from ..runtime import SessionRuntime
from .base import FRAME_SECONDS, RESYNC_SECONDS, AudioSinkNode, LiveAudioInput

WEBRTC_RATE = 48_000
#: Browsers send audio packets every 20 ms even when muted or silent (every 400 ms or so with
#: Opus DTX); this long without one means the browser is gone (closed without hanging up,
#: network lost).
INPUT_TIMEOUT = 5.0
#: where aiortc 1.x keeps a receiver's jitter buffer (a name-mangled private attribute)
_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"

log = logging.getLogger(__name__)


class PromptJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer for the caller's audio, releasing each packet as it arrives.

    An audio packet is a whole Opus frame and the agent never plays the caller's audio, so
    there is nothing to smooth: aiortc's audio buffer holds four packets back (80 ms), which
    only delays the end of the user's speech reaching the VAD. A packet no newer than one
    already released (reordered, duplicated) is dropped, 20 ms the VAD and STT do without; a
    lost one is not waited for (LiveAudioInput stamps audio as it comes and fills stalls).
    """

    def __init__(self) -> None:
        super().__init__(capacity=16)
        self._last: int | None = None  # sequence number of the last packet released

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._last is not None:
            ahead = uint16_add(packet.sequence_number, -self._last)
            if ahead == 0 or ahead >= 0x8000:  # the same or an older one (mod 2**16)
                return False, None
        self._last = packet.sequence_number
        # the receiver has put the depayloaded codec data on the packet
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


def release_packets_promptly(receiver: RTCRtpReceiver) -> bool:
    """Give an audio receiver a :class:`PromptJitterBuffer`; False (and a warning) where this
    aiortc keeps no buffer where expected: the audio then arrives ~80 ms later, as before."""
    if not isinstance(getattr(receiver, _JITTER_BUFFER, None), JitterBuffer):
        log.warning("this aiortc has no receiver jitter buffer at %s: the inbound audio keeps "
                    "its default delay", _JITTER_BUFFER)
        return False
    setattr(receiver, _JITTER_BUFFER, PromptJitterBuffer())
    return True


class WebRTCAudioInput(LiveAudioInput):
    """The remote audio track; ends when the track ends or no audio came for ``timeout``
    seconds (a track that merely stalls is filled with silence meanwhile)."""

    peer = "the browser"

    transport = "webrtc"

    def __init__(self, track: MediaStreamTrack, runtime: SessionRuntime, *,
                 timeout: float = INPUT_TIMEOUT) -> None:
        super().__init__(runtime, input_timeout=timeout)
        self.track = track

    async def receive(self) -> tuple[np.ndarray, int] | None:
        try:
            frame = await self.track.recv()
        except MediaStreamError:
            self.end_reason = "the microphone track ended"  # the browser hung up
            return None
        assert isinstance(frame, av.AudioFrame)  # what an audio track carries
        return _frame_to_mono(frame), frame.sample_rate


def _frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame (packed or planar, any channel count) as mono float32."""
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data.T  # (channels, n) -> (n, channels)
    else:
        data = data.reshape(-1, channels)
    return to_mono_float(data)


class WebRTCAudioOutput(AudioSinkNode):
    """The agent's voice at 48 kHz for :class:`AgentAudioTrack` to pull.

    When a reply is cut off or paused, the next ``FADE_SECONDS`` of its audio are played
    fading out instead of stopping mid-waveform, which would click. (Holding every frame back
    that long to fade its tail delayed all audio by as much.)
    """

    FADE_SECONDS = 0.01

    def __init__(self, runtime: SessionRuntime) -> None:
        super().__init__(WEBRTC_RATE, runtime)
        self._ramp = np.linspace(1.0, 0.0, round(WEBRTC_RATE * self.FADE_SECONDS),
                                 dtype=np.float32)
        self._fade: np.ndarray | None = None  # a stopped reply's faded continuation
        #: set when audio is queued: the track's wait for its next tick ends early
        self.audio_queued = asyncio.Event()

    @property
    def quiet(self) -> bool:
        """Nothing to play: the next frame is silence unless audio arrives first."""
        return not self.buffer.queued_samples or self.buffer.paused

    async def process(self, frame: DataFrame) -> None:
        await super().process(frame)
        if self.buffer.queued_samples:
            self.audio_queued.set()

    async def next_frame(self, ts: float) -> np.ndarray:
        samples = await super().next_frame(ts)
        if self._fade is not None:
            samples = samples.copy()
            samples[:len(self._fade)] += self._fade
            self._fade = None
        return samples

    async def on_system(self, frame: SystemFrame) -> None:
        stops = ((isinstance(frame, InterruptionFrame) and self.activity.affected(frame))
                 or (isinstance(frame, PlayoutPauseFrame) and frame.paused))
        if stops and not self.buffer.paused:
            self._fade = self.buffer.peek(len(self._ramp)) * self._ramp
        await super().on_system(frame)


class AgentAudioTrack(MediaStreamTrack):
    """The track the browser plays: 20 ms mono s16 frames at 48 kHz, one per 20 ms.

    ``recv()`` waits for each frame's tick of a :class:`~voiceagent.pacer.Pacer` (never
    ahead, re-anchored rather than catching up in a burst after a stall), or while the output
    is quiet, until audio is queued; ``pts`` stays continuous either way.
    """

    kind = "audio"

    def __init__(self, output: WebRTCAudioOutput, clock: SessionClock) -> None:
        super().__init__()
        self.output = output
        self.clock = clock
        self._samples = round(WEBRTC_RATE * FRAME_SECONDS)
        self._time_base = fractions.Fraction(1, WEBRTC_RATE)
        self._pts = 0
        self._pacer = Pacer(clock, FRAME_SECONDS, RESYNC_SECONDS)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        wake = None
        if self.output.quiet:  # audio arriving before the tick goes out at once
            wake = self.output.audio_queued
            wake.clear()
        due = await self._pacer.tick(wake)
        samples = await self.output.next_frame(due)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
        frame = av.AudioFrame(format="s16", layout="mono", samples=self._samples)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = WEBRTC_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += self._samples
        return frame
