"""Session events: typed wire messages an application subscribes to (and the JSONL log).

Every event carries ``ts`` on the session clock. The same models go to the event log, to a
browser's data channel and to in-process subscribers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel

log = logging.getLogger(__name__)


class Event(BaseModel):
    type: str
    ts: float = 0.0
    session_id: str = ""


class SessionStateEvent(Event):
    type: Literal["session"] = "session"
    state: Literal["started", "ended"]
    reason: str = ""


class UserSpeakingEvent(Event):
    type: Literal["user_speaking"] = "user_speaking"
    speaking: bool


class UserTranscriptEvent(Event):
    type: Literal["user_transcript"] = "user_transcript"
    text: str
    final: bool
    stable: str = ""
    turn_id: int


class UserTurnEvent(Event):
    """The endpointer decided the user finished a turn (with the scores it used, if any)."""

    type: Literal["user_turn"] = "user_turn"
    text: str
    turn_id: int
    #: the reply that answers it: the turn's id, or the committed draft's
    reply_id: int | None = None
    audio_score: float | None = None
    text_score: float | None = None
    reason: str = ""


class BargeInEvent(Event):
    """User speech while the agent talked: ``paused``, then ``interrupted`` or ``resumed``."""

    type: Literal["barge_in"] = "barge_in"
    action: Literal["paused", "interrupted", "resumed"]
    turn_id: int
    text: str = ""


class AgentStateEvent(Event):
    type: Literal["agent_state"] = "agent_state"
    state: Literal["listening", "thinking", "speaking"]


class AgentSpeakingEvent(Event):
    """The agent's audio started or stopped reaching the user."""

    type: Literal["agent_speaking"] = "agent_speaking"
    speaking: bool


class AgentTextEvent(Event):
    """Agent text: each spoken chunk (``final=False``) and the whole reply (``final=True``)."""

    type: Literal["agent_text"] = "agent_text"
    text: str
    final: bool
    turn_id: int
    interrupted: bool = False


class ToolCallEvent(Event):
    type: Literal["tool_call"] = "tool_call"
    name: str
    arguments: str
    result: str
    error: bool = False
    turn_id: int
    #: when the call began (``ts`` is when it returned)
    start: float = 0.0


class StageEvent(Event):
    """A stage finished one piece of work for a turn or reply (``ts`` is when): an STT
    decode, an LLM generation, a TTS synthesis. What traces and duration metrics are made of;
    the per-turn latencies are in :class:`MetricsEvent`."""

    type: Literal["stage"] = "stage"
    stage: Literal["stt", "llm", "tts"]
    #: the user turn (STT) or the reply (LLM, TTS) it was for
    turn_id: int
    start: float
    #: the first token (LLM) or the first audio (TTS), if any came
    first: float | None = None
    #: did not run to its end: an interruption, a failure or the session's end stopped it
    cancelled: bool = False
    #: STT: which decode (``push``, ``pause``, ``finish``); TTS: the text synthesised
    detail: str = ""


class AgentLeftEvent(Event):
    """An agent handed the conversation on: to another agent, to a task it started, or
    back to the agent that started it (a task that completed)."""

    type: Literal["agent_left"] = "agent_left"
    agent: str
    to: str
    reason: Literal["handoff", "task_started", "task_completed"]


class AgentEnteredEvent(Event):
    """An agent took over the conversation (``reason`` as in :class:`AgentLeftEvent`)."""

    type: Literal["agent_entered"] = "agent_entered"
    agent: str
    previous: str
    reason: Literal["handoff", "task_started", "task_completed"]
    #: what it received of the conversation: all, summary or none
    carry_over: str = "all"


class TurnMetrics(BaseModel):
    """Per-turn latencies in seconds; None where a stage did not happen."""

    turn_id: int
    #: end of user speech -> final transcript available
    stt_final: float | None = None
    #: end of user speech -> the endpointer's end-of-turn decision
    end_of_turn: float | None = None
    #: LLM request -> first token
    llm_ttft: float | None = None
    #: first text chunk sent to TTS -> its first audio
    tts_ttfa: float | None = None
    #: end of user speech -> first agent audio played out
    voice_to_voice: float | None = None


class MetricsEvent(Event):
    type: Literal["metrics"] = "metrics"
    metrics: TurnMetrics
    #: the reply the metrics end at (the turn's id, or the committed draft's that answered it)
    reply_id: int | None = None


class LatencyBreakdownEvent(Event):
    """Where one turn's wait went: every second from the user's last sound
    (``speech_end``) to the first agent audio leaving the server, attributed to the stage the
    reply was waiting on (the stages sum to ``total``). With a committed draft, the LLM and
    TTS work it did before the turn was over shows as ``draft_saved``."""

    type: Literal["latency_breakdown"] = "latency_breakdown"
    turn_id: int
    #: the reply that answered it (the turn's id, or the committed draft's)
    reply_id: int
    #: silence until the endpointer decided the turn was over
    endpointing: float
    #: then until the final transcript was there and the reply started (or was committed)
    stt_final: float
    #: then until the LLM's first token
    llm_first_token: float
    #: then until the first clause went to the TTS
    first_clause: float
    #: then until the TTS's first audio
    tts_first_audio: float
    #: then until that audio left the server (output queue, pacing)
    output: float
    total: float
    #: the reply was a draft, committed when the turn ended
    draft: bool = False
    #: how much sooner its first audio was ready than had it started at the commit
    draft_saved: float = 0.0
    #: drafts of this turn discarded before one was committed (wasted work)
    drafts_discarded: int = 0


class DraftEvent(Event):
    """A preemptive draft reply was ``started`` at a pause of the user's turn, then
    ``committed`` (the turn ended with the words it answers) or ``discarded``."""

    type: Literal["draft"] = "draft"
    action: Literal["started", "committed", "discarded"]
    reply_id: int
    turn_id: int | None = None
    reason: str = ""


class CallEvent(Event):
    """A phone call was answered: who called whom, and how the audio is carried."""

    type: Literal["call"] = "call"
    call_id: str
    caller: str
    callee: str
    transport: str  # "sip", "twilio", ...
    codec: str = ""


#: The keys of a phone keypad, in the order of their RFC 4733 event codes (0-15).
DTMF_KEYS = "0123456789*#ABCD"


class DTMFEvent(Event):
    """A key the caller pressed on a phone keypad (RFC 4733 telephone-event, or the
    media stream's ``dtmf`` message)."""

    type: Literal["dtmf"] = "dtmf"
    digit: str


class PlayoutMarkEvent(Event):
    """The far end has played (or, after a barge-in, dropped) the agent's audio up to a mark
    the transport sent: a media stream's echoed ``mark``, one after each reply."""

    type: Literal["playout_mark"] = "playout_mark"
    name: str


class ErrorEvent(Event):
    type: Literal["error"] = "error"
    source: str
    message: str
    fatal: bool = False


Subscriber = Callable[[Event], Any]


class EventBus:
    """Fan events out to callbacks; a failing subscriber is logged, never fatal."""

    def __init__(self, session_id: str = "") -> None:
        self.session_id = session_id
        self._subscribers: list[tuple[str | None, Subscriber]] = []

    def subscribe(self, callback: Subscriber, type: str | None = None) -> Callable[[], None]:
        entry = (type, callback)
        self._subscribers.append(entry)
        return lambda: self._subscribers.remove(entry) if entry in self._subscribers else None

    def emit(self, event: Event) -> None:
        if not event.session_id:
            event.session_id = self.session_id
        event.ts = round(event.ts, 4)
        for wanted, callback in list(self._subscribers):
            if wanted is not None and wanted != event.type:
                continue
            try:
                result = callback(event)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result).add_done_callback(_log_failure)
            except Exception:
                log.exception("event subscriber failed on %s", event.type)


def _log_failure(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("async event subscriber failed", exc_info=task.exception())


class JsonlEventWriter:
    """Appends each event as one JSON line; usable as an EventBus subscriber."""

    def __init__(self, target: str | Path | TextIO) -> None:
        self._own = not hasattr(target, "write")
        self._file: TextIO = open(target, "a", encoding="utf-8") if self._own else target  # type: ignore[arg-type, assignment]

    def __call__(self, event: Event) -> None:
        self._file.write(json.dumps(event.model_dump(mode="json")) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._own:
            self._file.close()

    def __enter__(self) -> JsonlEventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
