"""The caller's audio reaches the agent without aiortc's playout delay (PromptJitterBuffer)."""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.rtp import RtpPacket
from webrtc_harness import Client

from voiceagent import Agent
from voiceagent.session import resolve_backends
from voiceagent.transports.ice import restrict_host_addresses
from voiceagent.transports.webrtc import PromptJitterBuffer, release_packets_promptly
from voiceagent.transports.webrtc_peer import WebRTCPeer
from voiceagent_eval.webrtc_client import ClipTrack, frame_dbfs


def packet(seq: int) -> RtpPacket:
    p = RtpPacket(payload_type=111, sequence_number=seq, timestamp=seq * 960)
    p._data = bytes([seq % 256])  # what the receiver puts there: the depayloaded frame
    return p


def test_each_packet_is_released_at_once_and_old_ones_are_dropped():
    buffer = PromptJitterBuffer()
    released = [buffer.add(packet(seq))[1] for seq in (65534, 65535, 0, 2, 1, 2, 3)]
    assert [f and f.timestamp // 960 for f in released] == [65534, 65535, 0, 2, None, None, 3]
    assert released[3].data == bytes([2])  # a gap is not waited for


AGENT = Agent("Be brief.")


@pytest.fixture(scope="module")
def backends():
    return resolve_backends(AGENT)


async def test_a_session_gets_the_prompt_buffer_on_its_microphone(backends):
    """Through WebRTCPeer.accept with a real aiortc offer; fails if aiortc moves its buffer."""
    client = Client()
    peer = WebRTCPeer(AGENT, backends, host_addresses=["127.0.0.1"])
    try:
        await peer.accept((await client.offer())["sdp"])
        audio = [t.receiver for t in peer.pc.getTransceivers() if t.kind == "audio"]
        assert audio and all(isinstance(r._RTCRtpReceiver__jitter_buffer, PromptJitterBuffer)
                             for r in audio)
    finally:
        await peer.close()
        await client.pc.close()


async def onset_delays(prompt: bool) -> list[float]:
    """Send tone bursts between silences from one aiortc peer to another; for each burst,
    from its first frame leaving to its first frame decoded on the far side."""
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)
    mic = ClipTrack(np.concatenate([np.zeros(12000, np.float32), tone] * 3), lead=0.2)
    sent: list[float] = []
    recv = mic.recv

    async def noting_recv():
        frame = await recv()
        if frame_dbfs(frame.to_ndarray().astype(np.float32) / 32768) > -30:
            sent.append(time.monotonic())
        return frame

    mic.recv = noting_recv
    got: list[float] = []

    async def listen(track: MediaStreamTrack) -> None:
        while True:
            frame = await track.recv()
            if frame_dbfs(frame.to_ndarray().astype(np.float32) / 32768) > -30:
                got.append(time.monotonic())

    caller, agent = RTCPeerConnection(), RTCPeerConnection()
    listeners: list[asyncio.Task] = []
    agent.on("track", lambda track: listeners.append(asyncio.create_task(listen(track))))
    caller.addTrack(mic)
    try:
        for pc in (caller, agent):
            restrict_host_addresses(pc, ["127.0.0.1"])
        await caller.setLocalDescription(await caller.createOffer())
        await agent.setRemoteDescription(caller.localDescription)
        if prompt:
            assert all(release_packets_promptly(t.receiver) for t in agent.getTransceivers())
        await agent.setLocalDescription(await agent.createAnswer())
        await caller.setRemoteDescription(agent.localDescription)
        await asyncio.sleep(4.5)
    finally:
        await caller.close()
        await agent.close()
        for task in listeners:
            task.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)

    def onsets(times: list[float]) -> list[float]:
        return [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 0.3]

    return [r - s for s, r in zip(onsets(sent), onsets(got), strict=False)]


async def test_speech_reaches_the_agent_sooner_than_through_aiortcs_playout_buffer():
    """From send to decode on loopback: ~100 ms through aiortc's audio buffer (it holds 4
    packets back), ~20 ms through the prompt one. Both measured in one run, so a loaded
    machine slows both alike."""
    default = await onset_delays(prompt=False)
    prompt = await onset_delays(prompt=True)
    assert len(default) == len(prompt) == 3
    assert statistics.median(default) - statistics.median(prompt) > 0.04, (default, prompt)
