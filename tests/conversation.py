"""What the end-to-end tests of a whole session share: real speech to play, and what to read
from a finished conversation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from voiceagent.audio import PIPELINE_RATE, load_audio
from voiceagent.events import AgentTextEvent, UserTranscriptEvent


def two_turns(speech_dir: Path, gap: float = 5.0) -> np.ndarray:
    """Two short real utterances with a pause (``gap`` s) long enough to end the first turn."""
    first = load_audio(speech_dir / "azure_whats_the_weather_like.wav")
    second = load_audio(speech_dir / "harvard_sb_spk1_snt5.wav")
    return np.concatenate([first, np.zeros(int(gap * PIPELINE_RATE), np.float32), second])


def finals(result) -> list[str]:
    return [e.text for e in result.of_type(UserTranscriptEvent) if e.final and e.text]


def replies(result) -> list[AgentTextEvent]:
    return [e for e in result.of_type(AgentTextEvent) if e.final and not e.interrupted]


def session_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("session-")]


