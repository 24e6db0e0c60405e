"""A slow recogniser never shifts the timing of a turn (issue 12, defect 4), in a session.

The VAD fans out to the STT and the endpointer. The STT here takes 0.1 s per push, far
slower than real time, so its inbox fills within seconds; the VAD, and with it the
endpointer, must still see the end of the user's speech as it happens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np

from voiceagent import Agent, AgentOptions, EndpointingOptions
from voiceagent.backends import LLMDelta, Transcript
from voiceagent.events import Event, UserSpeakingEvent, UserTurnEvent
from voiceagent.runner import converse_with_file

SPEED = 4.0
SPEECH, SILENCE = 8.0, 3.0  # seconds of "speech" (a tone), then of silence


class EnergyVAD:
    sample_rate, window_samples = 16_000, 512

    def stream(self) -> EnergyVAD:
        return self

    def probability(self, window: np.ndarray) -> float:
        return 1.0 if float(np.abs(window).max()) > 0.01 else 0.0

    def reset(self) -> None:
        pass


class SlowSTT:
    """0.1 s per push whatever its length: a decode on a busy CPU."""

    sample_rate = 16_000

    def __init__(self) -> None:
        self.pushed = 0

    def stream(self) -> SlowSTT:
        return self

    async def push(self, samples: np.ndarray) -> Transcript | None:
        await asyncio.sleep(0.1)
        self.pushed += len(samples)
        return None

    async def pause(self) -> Transcript | None:
        return None

    async def finish(self) -> Transcript:
        return Transcript("book a table for two")

    async def aclose(self) -> None:
        pass


class QuietLLM:
    async def chat(self, messages: object, tools: object = ()) -> AsyncIterator[LLMDelta]:
        return
        yield


class SilentTTS:
    sample_rate = 16_000

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        yield np.zeros(160, np.float32)


async def test_a_slow_stt_does_not_delay_the_end_of_speech_or_lose_audio():
    stt = SlowSTT()
    agent = Agent("Be brief.", vad=EnergyVAD(), stt=stt, llm=QuietLLM(), tts=SilentTTS(),
                  options=AgentOptions(endpointing=EndpointingOptions(mode="vad")))
    t = np.arange(int(SPEECH * 16_000)) / 16_000
    samples = np.concatenate([0.3 * np.sin(2 * np.pi * 220 * t),
                              np.zeros(int(SILENCE * 16_000))]).astype(np.float32)
    start = time.monotonic()
    heard: list[tuple[float, Event]] = []  # (session seconds when it happened, event)

    def record(event: Event) -> None:
        heard.append(((time.monotonic() - start) * SPEED, event))

    await asyncio.wait_for(converse_with_file(agent, samples, speed=SPEED, max_tail=5,
                                              subscribers=[record], backends={
                                                  "vad": agent.backends["vad"], "stt": stt,
                                                  "llm": agent.backends["llm"],
                                                  "tts": agent.backends["tts"]}), 60)
    stopped = [(at, e) for at, e in heard
               if isinstance(e, UserSpeakingEvent) and not e.speaking]
    assert stopped, "the end of speech was never seen"
    at, event = stopped[0]
    assert abs(event.ts - SPEECH) < 0.2
    lag = at - event.ts  # session seconds between the speech ending and the VAD saying so
    print(f"\nthe VAD reported the end of speech {lag:.2f} s (session time) after it")
    # min_silence plus the frames in flight and scheduling on a loaded CPU; lock-step with
    # the STT made this several seconds
    assert lag < 1.5
    assert stt.pushed >= 0.9 * SPEECH * 16_000  # the lagging STT still got the speech
    turns = [e for _, e in heard if isinstance(e, UserTurnEvent)]
    assert [e.text for e in turns] == ["book a table for two"]
