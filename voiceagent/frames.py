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


@dataclass(kw_only=True)
class ReplyFrame(DataFrame):
    """A data frame that belongs to one agent reply. An interruption that reaches the reply
    drops such frames from every inbox and cancels the work on them, so the graph needs to
    know no frame type by name."""

    reply_id: int
    #: False for speech said with ``allow_interruptions=False``: user speech spares it, only
    #: an interruption from code (``force``) reaches it
    interruptible: bool = True


# --- data frames -------------------------------------------------------------------------


@dataclass(kw_only=True)
class AudioFrame(DataFrame):
    """Mono float32 samples in [-1, 1]. Inside the pipeline the rate is 16 kHz."""

    samples: np.ndarray
    sample_rate: int
    #: silence a live input made up because no audio arrived in time (a stalled feed), so
    #: the session's time kept moving; not anything the user's microphone sent
    filled: bool = False

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
    #: how sure the recogniser is of the words (see Transcript)
    confidence: float | None = None


@dataclass(kw_only=True)
class UserTurnFrame(ReplyFrame):
    """The endpointer's decision: the user finished a turn with this text; ``reply_id`` is
    the reply that answers it."""

    text: str
    turn_id: int
    speech_end_ts: float


@dataclass(kw_only=True)
class TextInputFrame(DataFrame):
    """A user turn typed instead of spoken (e.g. from a browser's text box)."""

    text: str


@dataclass(kw_only=True)
class LLMTextFrame(ReplyFrame):
    """A token (or a few) of the agent's reply."""

    text: str


@dataclass(kw_only=True)
class TextChunkFrame(ReplyFrame):
    """A sentence or clause ready to be spoken."""

    text: str
    #: the reply's first chunk: what its listener waits for in silence
    first: bool = False


@dataclass(frozen=True)
class WordTiming:
    """When a word is spoken, in seconds from the start of the audio it comes with."""

    word: str
    start: float
    end: float


@dataclass(kw_only=True)
class AgentAudioFrame(ReplyFrame):
    """Synthesised speech for ``text`` (the chunk it belongs to), at the TTS's native rate.
    ``chunk_end`` marks the last piece of that chunk. ``words``: when the TTS knows them,
    the timings of the chunk's words in this piece (what was heard is then exact)."""

    samples: np.ndarray
    sample_rate: int
    text: str = ""
    chunk_end: bool = True
    words: tuple[WordTiming, ...] | None = None


@dataclass(kw_only=True)
class ReplyEnd(ReplyFrame):
    """The end of everything a stage produces for one reply; flows in order behind it."""

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
    #: the replies to stop (None: every reply)
    replies: frozenset[int] | None = None
    #: stop protected replies too (an interruption from code, not from user speech)
    force: bool = False

    def affects(self, reply_id: int, interruptible: bool) -> bool:
        return ((self.replies is None or reply_id in self.replies)
                and (interruptible or self.force))


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
class UserTurnStartedFrame(SystemFrame):
    """Broadcast by the endpointer: user speech opened turn ``turn_id`` (transcripts of it
    carry that id)."""

    turn_id: int


@dataclass(kw_only=True)
class DraftStartedFrame(SystemFrame):
    """A draft reply to the open user turn ``turn_id`` is being prepared before the turn is
    over (preemptive generation): the stages generate and synthesise it, but nothing of it
    is heard or remembered until a :class:`ReplyStartedFrame` with its id commits it; an
    :class:`InterruptionFrame` that reaches it discards it."""

    reply_id: int
    turn_id: int


@dataclass(kw_only=True)
class ReplyStartedFrame(SystemFrame):
    """A reply was committed: it will be generated (or is text already) and played. Every
    stage learns of the replies in progress from this and :class:`PlayoutFinishedFrame`.
    For a draft (``source="draft"``) this is its commit."""

    reply_id: int
    interruptible: bool = True
    #: who asked for it: "turn" (an answer to the user), "say", "tool", "draft"
    source: str = "turn"
    #: the user turn it answers: a turn's reply has the turn's id, except a committed draft
    #: (None: not an answer to a user turn)
    turn_id: int | None = None


@dataclass(kw_only=True)
class ReplyGeneratingFrame(SystemFrame):
    """Broadcast by the LLM stage when it starts generating a reply."""

    reply_id: int


@dataclass(kw_only=True)
class PlayoutStartedFrame(SystemFrame):
    """Broadcast by the output: the reply's first audio is being heard."""

    reply_id: int


@dataclass(kw_only=True)
class PlayoutFinishedFrame(SystemFrame):
    """Broadcast by the output, once per reply: it played out, or was cut off
    (``interrupted``). ``heard_text`` is the words the user heard; the conversation keeps
    those."""

    reply_id: int
    heard_text: str
    interrupted: bool = False


@dataclass(kw_only=True)
class AgentChangedFrame(SystemFrame):
    """Another agent took over (a handoff, a task, a task's end): the stages whose settings
    are the agent's adopt its ones. ``options`` is its ``AgentOptions``; ``tts`` its voice,
    None to keep the one in use."""

    agent: str
    options: Any
    tts: Any = None


@dataclass(kw_only=True)
class ErrorFrame(SystemFrame):
    source: str
    message: str
    fatal: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
