"""Session observers: what watches a session from outside (a recording, traces, metrics).

An observer is attached to each session of an agent (``Agent(observers=[...])``) when the
session is built, before it starts. It reads only what already flows: the session's events,
the system frames every stage sees (``session.graph.observe``) and the audio the transport
taps (``session.input.taps``, ``session.output.taps``). It never changes the conversation,
and it finishes its work on the session's ``ended`` event, after which nothing flows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .session import AgentSession


class SessionObserver(Protocol):
    def attach(self, session: AgentSession) -> None:
        """Subscribe to what ``session`` will say; called once per session."""
