"""Frames: the typed units that flow through a session graph.

Two families. Data frames (audio, text, tokens) keep their order in every inbox. System frames
(start, cancel, interruption, speech start/stop notices, errors) overtake queued data frames,
so an interruption takes effect whatever is queued. Every frame carries ``ts``: seconds on the
session clock when the event it describes happened, which is what per-turn metrics are
computed from.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_ids = itertools.count(1)


@dataclass(kw_only=True)
class Frame:
    ts: float = 0.0
    id: int = field(default_factory=lambda: next(_ids))


@dataclass(kw_only=True)
class DataFrame(Frame):
    """Ordered payload."""


@dataclass(kw_only=True)
class SystemFrame(Frame):
    """Control that overtakes queued data frames."""


# --- data frames -------------------------------------------------------------------------


@dataclass(kw_only=True)
class AudioFrame(DataFrame):
    """Mono float32 samples in [-1, 1]. Inside the pipeline the rate is 16 kHz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(kw_only=True)
class SpeechStarted(DataFrame):
    """VAD: speech began at ``ts`` (in order with the audio, so STT sees it aligned)."""


@dataclass(kw_only=True)
class SpeechStopped(DataFrame):
    """VAD: speech ended at ``ts`` (the end of the last voiced window)."""


@dataclass(kw_only=True)
class TranscriptFrame(DataFrame):
    """User transcript of the current turn. ``stable`` is the prefix that will not change."""

    text: str
    final: bool
    stable: str = ""
    turn_id: int = 0
    #: decoded when the user paused: what the end of the turn is judged on (a partial decoded
    #: while the user spoke may arrive after the pause, and must not be)
    at_pause: bool = False
    #: the recogniser's probability that a sentence ends here (see Transcript)
    end_probability: float | None = None


@dataclass(kw_only=True)
class UserTurnFrame(DataFrame):
    """The endpointer's decision: the user finished a turn with this text."""

    text: str
    turn_id: int
    speech_end_ts: float


@dataclass(kw_only=True)
class TextInputFrame(DataFrame):
    """A user turn typed instead of spoken (e.g. from a browser's text box)."""

    text: str


@dataclass(kw_only=True)
class LLMTextFrame(DataFrame):
    """A token (or a few) of the agent's reply."""

    text: str
    turn_id: int


@dataclass(kw_only=True)
class TextChunkFrame(DataFrame):
    """A sentence or clause ready to be spoken."""

    text: str
    turn_id: int


@dataclass(kw_only=True)
class AgentAudioFrame(DataFrame):
    """Synthesised speech for ``text`` (the chunk it belongs to), at the TTS's native rate.
    ``chunk_end`` marks the last piece of that chunk."""

    samples: np.ndarray
    sample_rate: int
    turn_id: int
    text: str = ""
    chunk_end: bool = True


@dataclass(kw_only=True)
class ReplyEnd(DataFrame):
    """The end of everything a stage produces for one reply; flows in order behind it."""

    turn_id: int
    text: str = ""


@dataclass(kw_only=True)
class EndFrame(DataFrame):
    """Graceful end: flows behind queued data so every node drains before it stops."""


# --- system frames -----------------------------------------------------------------------


@dataclass(kw_only=True)
class StartFrame(SystemFrame):
    pass


@dataclass(kw_only=True)
class CancelFrame(SystemFrame):
    """Immediate stop: queued data is dropped."""


@dataclass(kw_only=True)
class InterruptionFrame(SystemFrame):
    """Stop the agent now: drop queued reply frames, cancel generation and synthesis."""

    reason: str = "interrupted"
    #: replies to this turn and later ones are not affected (None: interrupt every reply)
    before_turn: int | None = None
    #: replies said with allow_interruptions=False, spared by this interruption
    protected: frozenset[int] = frozenset()

    def affects(self, turn_id: int) -> bool:
        return ((self.before_turn is None or turn_id < self.before_turn)
                and turn_id not in self.protected)


@dataclass(kw_only=True)
class PlayoutPauseFrame(SystemFrame):
    """Hold the agent's audio where it is (the user may be barging in), or go on."""

    paused: bool


@dataclass(kw_only=True)
class UserSpeakingFrame(SystemFrame):
    """Broadcast when the user starts (``speaking=True``) or stops talking."""

    speaking: bool


@dataclass(kw_only=True)
class EndOfTurnFrame(SystemFrame):
    """Broadcast by the endpointer: the user's turn is over, finalise the transcript."""

    turn_id: int
    speech_end_ts: float


@dataclass(kw_only=True)
class ReplyTruncatedFrame(SystemFrame):
    """Broadcast by the output after an interruption: the words of the reply that were heard."""

    turn_id: int
    heard_text: str


@dataclass(kw_only=True)
class ErrorFrame(SystemFrame):
    source: str
    message: str
    fatal: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
