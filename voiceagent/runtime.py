"""What the nodes of one session share: its clock, event bus, metrics and activity state.

One instance per session; nothing here is global, so sessions never see each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import SessionClock
from .events import AgentSpeakingEvent, AgentStateEvent, EventBus
from .metrics import MetricsTracker


@dataclass
class SessionRuntime:
    session_id: str
    clock: SessionClock
    events: EventBus
    metrics: MetricsTracker
    #: replies decided on (a user turn) and not yet played out or dropped
    active_replies: set[int] = field(default_factory=set)
    #: replies that user speech must not interrupt (say(..., allow_interruptions=False))
    protected_replies: set[int] = field(default_factory=set)
    #: the user turn in progress (speech heard, end not yet decided)
    user_turn: int | None = None
    agent_state: str = "listening"
    #: why the agent asked to end the conversation (a tool's end_call); None while it goes on
    hangup_reason: str | None = None
    _last_turn_id: int = 0

    def new_turn_id(self) -> int:
        """Ids for user turns and the replies to them, and for replies said from code."""
        self._last_turn_id += 1
        return self._last_turn_id

    def request_hangup(self, reason: str) -> None:
        """End the conversation once the reply in progress has played out."""
        if self.hangup_reason is None:
            self.hangup_reason = reason

    @property
    def idle(self) -> bool:
        return not self.active_replies and self.user_turn is None

    def set_agent_state(self, state: str, ts: float) -> None:
        if state == self.agent_state:
            return
        was_speaking = self.agent_state == "speaking"
        self.agent_state = state
        self.events.emit(AgentStateEvent(ts=ts, state=state))  # type: ignore[arg-type]
        if was_speaking != (state == "speaking"):
            self.events.emit(AgentSpeakingEvent(ts=ts, speaking=not was_speaking))
