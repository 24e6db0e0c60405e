"""What the nodes of one session share: its clock, event bus, metrics and activity state.

One instance per session; nothing here is global, so sessions never see each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import SessionClock
from .events import AgentStateEvent, EventBus
from .metrics import MetricsTracker


@dataclass
class SessionRuntime:
    session_id: str
    clock: SessionClock
    events: EventBus
    metrics: MetricsTracker
    #: replies decided on (a user turn) and not yet played out or dropped
    active_replies: set[int] = field(default_factory=set)
    user_turn_open: bool = False
    agent_state: str = "listening"

    @property
    def idle(self) -> bool:
        return not self.active_replies and not self.user_turn_open

    def set_agent_state(self, state: str, ts: float) -> None:
        if state != self.agent_state:
            self.agent_state = state
            self.events.emit(AgentStateEvent(ts=ts, state=state))  # type: ignore[arg-type]
