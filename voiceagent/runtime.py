"""What the nodes of one session share: its clock, event bus, metrics and ids.

One instance per session; nothing here is global, so sessions never see each other. The state
of the agent's replies is not here: the session's reply ledger (``replies.py``) owns it, and
the stages learn of it from frames.
"""

from __future__ import annotations

from dataclasses import dataclass

from .clock import SessionClock
from .events import EventBus
from .metrics import MetricsTracker


@dataclass
class SessionRuntime:
    session_id: str
    clock: SessionClock
    events: EventBus
    metrics: MetricsTracker
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
