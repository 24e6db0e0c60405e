"""Replies: everything the agent says has one owner, the session's reply ledger.

A reply (the answer to a user turn, a ``say()``, a tool's speech, a preemptive draft) goes

    queued ─► generating ─► playing ─► done | interrupted
      └─────────────────────────────► discarded (a draft never committed)

The stages never share reply state: each step is a system frame one stage broadcasts (the
endpointer or the ledger announce a reply, the LLM starts generating it, the output starts
and finishes playing it, with the words that were heard), and the ledger observes them all
(:meth:`ReplyLedger.observe`). An application holds :class:`Reply` handles; a stage that
must know what the agent is doing keeps its own :class:`ReplyActivity` from the same frames.

A draft (preemptive generation, opened by the endpointer at a pause of the user's turn) is
announced with a :class:`DraftStartedFrame`, committed with a :class:`ReplyStartedFrame` of
its id, discarded with an :class:`InterruptionFrame` that reaches it (which also cancels the
stages' work on it, like any interruption).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Literal

from .clock import SessionClock
from .events import AgentSpeakingEvent, AgentStateEvent, DraftEvent, EventBus
from .frames import (
    DraftStartedFrame,
    EndOfTurnFrame,
    InterruptionFrame,
    PlayoutFinishedFrame,
    PlayoutStartedFrame,
    ReplyGeneratingFrame,
    ReplyStartedFrame,
    SystemFrame,
    UserTurnStartedFrame,
)

ReplySource = Literal["turn", "say", "tool", "draft"]
Publish = Callable[[SystemFrame], Awaitable[None]]

#: finished replies whose handles the ledger still finds by id
KEEP_FINISHED = 64


class ReplyState(StrEnum):
    QUEUED = "queued"
    GENERATING = "generating"
    PLAYING = "playing"
    DONE = "done"
    INTERRUPTED = "interrupted"
    DISCARDED = "discarded"


FINAL = frozenset({ReplyState.DONE, ReplyState.INTERRUPTED, ReplyState.DISCARDED})


class Reply:
    """One reply, as the application sees it. Made by the ledger, never directly."""

    def __init__(self, ledger: ReplyLedger, reply_id: int, source: str,
                 allow_interruptions: bool, turn_id: int | None, draft: bool) -> None:
        self.id = reply_id
        self.source = source
        self.allow_interruptions = allow_interruptions
        #: the user turn it answers (None for speech said from code)
        self.turn_id = turn_id
        #: not committed yet: a draft never plays and never enters the conversation
        self.draft = draft
        self.state = ReplyState.QUEUED
        #: the words the user heard (all of them once done; the heard part if interrupted)
        self.heard_text = ""
        self._ledger = ledger
        self._finished = asyncio.Event()

    @property
    def done(self) -> bool:
        """Finished: played out, interrupted or discarded."""
        return self.state in FINAL

    async def wait_for_playout(self) -> ReplyState:
        """Until the reply has played out, was cut off or was discarded; its final state."""
        await self._finished.wait()
        return self.state

    async def interrupt(self, reason: str = "interrupted by the application") -> None:
        """Stop this reply now, even one said with ``allow_interruptions=False`` (a draft is
        discarded). It is over once :meth:`wait_for_playout` returns."""
        if self.done:
            return
        if self.draft:
            await self.discard()
            return
        await self._ledger.publish(InterruptionFrame(
            ts=self._ledger.clock.now(), reason=reason, replies=frozenset({self.id}),
            force=True))

    async def commit(self) -> None:
        """Make a draft a real reply: its audio so far plays at once, and it is kept in the
        conversation."""
        if not self.draft or self.done:
            raise RuntimeError(f"reply {self.id} is not a pending draft")
        await self._ledger.announce(self)

    async def discard(self, reason: str = "draft discarded") -> None:
        """Drop a draft that will not be needed (the user went on talking): the stages stop
        working on it, and nothing of it is heard or remembered."""
        if not self.draft:
            raise RuntimeError(f"reply {self.id} was committed: interrupt it instead")
        if not self.done:
            await self._ledger.publish(InterruptionFrame(
                ts=self._ledger.clock.now(), reason=reason, replies=frozenset({self.id}),
                force=True))

    def _settle(self, state: ReplyState) -> None:
        self.state = state
        self._finished.set()

    def __repr__(self) -> str:
        return f"<Reply {self.id} {self.source} {self.state}>"


class ReplyLedger:
    """The session's replies. It learns what happens to them from the system frames that
    cross the graph (``graph.observe(ledger.observe)``), derives the agent's state from them
    (``agent_state`` events), and is where an application opens and finds replies."""

    def __init__(self, clock: SessionClock, events: EventBus, new_id: Callable[[], int],
                 publish: Publish) -> None:
        self.clock = clock
        self.events = events
        self.publish = publish
        self._new_id = new_id
        self._live: dict[int, Reply] = {}
        self._finished: deque[Reply] = deque(maxlen=KEEP_FINISHED)
        #: listening, thinking (a reply is being generated) or speaking (one is heard)
        self.agent_state = "listening"

    # -- for the application and the session --------------------------------------------

    async def open(self, source: ReplySource, *, allow_interruptions: bool = True,
                   turn_id: int | None = None) -> Reply:
        """A new reply, announced to the graph at once."""
        reply = self._make(source, allow_interruptions, turn_id, draft=False)
        await self.announce(reply)
        return reply

    async def draft(self, turn_id: int) -> Reply:
        """A reply to ``turn_id`` prepared before the turn is over (preemptive generation),
        announced to the stages: nothing plays or remembers it until :meth:`Reply.commit`;
        :meth:`Reply.discard` drops it."""
        reply_id = self._new_id()
        await self.publish(DraftStartedFrame(ts=self.clock.now(), reply_id=reply_id,
                                             turn_id=turn_id))
        return self._live[reply_id]

    def get(self, reply_id: int) -> Reply | None:
        return self._live.get(reply_id) or next(
            (r for r in self._finished if r.id == reply_id), None)

    @property
    def active(self) -> list[Reply]:
        """Committed replies not yet finished, oldest first."""
        return [r for r in self._live.values() if not r.draft]

    async def announce(self, reply: Reply) -> None:
        await self.publish(ReplyStartedFrame(ts=self.clock.now(), reply_id=reply.id,
                                             interruptible=reply.allow_interruptions,
                                             source=reply.source))

    def finish(self, reply: Reply, state: ReplyState, heard_text: str = "") -> None:
        if reply.done:
            return
        reply.heard_text = heard_text
        reply._settle(state)
        self._live.pop(reply.id, None)
        self._finished.append(reply)

    def close(self) -> None:
        """The session ended: replies still in progress end as interrupted (drafts as
        discarded), so nobody waits on them for ever."""
        for reply in list(self._live.values()):
            self.finish(reply, ReplyState.DISCARDED if reply.draft else ReplyState.INTERRUPTED,
                        reply.heard_text)
        self._set_agent_state(self.clock.now())

    # -- from the graph -----------------------------------------------------------------

    def observe(self, frame: SystemFrame) -> None:
        """Called with every system frame broadcast in the session, before any stage has it."""
        if isinstance(frame, DraftStartedFrame):
            self._make("draft", True, frame.turn_id, draft=True, reply_id=frame.reply_id)
            self._draft_event(frame.ts, "started", frame.reply_id, frame.turn_id)
            return
        if isinstance(frame, ReplyStartedFrame):
            reply = self._live.get(frame.reply_id)
            if reply is None:  # a reply a stage started (a user turn)
                turn = frame.turn_id
                if turn is None and frame.source == "turn":
                    turn = frame.reply_id
                self._make(frame.source, frame.interruptible, turn, draft=False,
                           reply_id=frame.reply_id)
            elif reply.draft:
                reply.draft = False
                self._draft_event(frame.ts, "committed", reply.id, reply.turn_id)
        elif isinstance(frame, InterruptionFrame):
            for reply in [r for r in self._live.values() if r.draft]:
                if frame.affects(reply.id, True):
                    self.finish(reply, ReplyState.DISCARDED)
                    self._draft_event(frame.ts, "discarded", reply.id, reply.turn_id,
                                      frame.reason)
            return
        elif isinstance(frame, (ReplyGeneratingFrame, PlayoutStartedFrame)):
            reply = self._live.get(frame.reply_id)
            if reply is not None and not reply.done:
                playing = isinstance(frame, PlayoutStartedFrame)
                reply.state = ReplyState.PLAYING if playing else ReplyState.GENERATING
        elif isinstance(frame, PlayoutFinishedFrame):
            reply = self._live.get(frame.reply_id)
            if reply is not None:
                self.finish(reply, ReplyState.INTERRUPTED if frame.interrupted
                            else ReplyState.DONE, frame.heard_text)
        else:
            return
        self._set_agent_state(frame.ts)

    def _make(self, source: str, allow_interruptions: bool, turn_id: int | None, *,
              draft: bool, reply_id: int | None = None) -> Reply:
        reply = Reply(self, self._new_id() if reply_id is None else reply_id, source,
                      allow_interruptions, turn_id, draft)
        self._live[reply.id] = reply
        return reply

    def _draft_event(self, ts: float, action: Literal["started", "committed", "discarded"],
                     reply_id: int, turn_id: int | None, reason: str = "") -> None:
        self.events.emit(DraftEvent(ts=ts, action=action, reply_id=reply_id, turn_id=turn_id,
                                    reason=reason))

    def _set_agent_state(self, ts: float) -> None:
        states = {r.state for r in self.active}
        state = ("speaking" if ReplyState.PLAYING in states
                 else "thinking" if ReplyState.GENERATING in states else "listening")
        if state == self.agent_state:
            return
        was_speaking = self.agent_state == "speaking"
        self.agent_state = state
        self.events.emit(AgentStateEvent(ts=ts, state=state))
        if was_speaking != (state == "speaking"):
            self.events.emit(AgentSpeakingEvent(ts=ts, speaking=not was_speaking))


class ReplyActivity:
    """What one stage knows of the agent's replies and the user's turn, kept from the system
    frames it receives (call :meth:`observe` from ``on_system``): a stage decides from
    frames, never from another stage's state."""

    def __init__(self) -> None:
        self.live: dict[int, bool] = {}  # reply id -> interruptible, announced, not finished
        #: drafts neither committed nor discarded -> set when committed
        self.drafts: dict[int, asyncio.Event] = {}
        self.playing: set[int] = set()
        self.user_turn: int | None = None  # the user turn in progress

    def observe(self, frame: SystemFrame) -> None:
        if isinstance(frame, DraftStartedFrame):
            self.drafts[frame.reply_id] = asyncio.Event()
        elif isinstance(frame, ReplyStartedFrame):
            self.live[frame.reply_id] = frame.interruptible
            committed = self.drafts.pop(frame.reply_id, None)
            if committed is not None:
                committed.set()
        elif isinstance(frame, InterruptionFrame):
            for draft in [d for d in self.drafts if frame.affects(d, True)]:
                del self.drafts[draft]  # discarded: the work waiting on it is cancelled
        elif isinstance(frame, PlayoutStartedFrame):
            if frame.reply_id in self.live:
                self.playing.add(frame.reply_id)
        elif isinstance(frame, PlayoutFinishedFrame):
            self.live.pop(frame.reply_id, None)
            self.playing.discard(frame.reply_id)
        elif isinstance(frame, UserTurnStartedFrame):
            self.user_turn = frame.turn_id
        elif isinstance(frame, EndOfTurnFrame) and frame.turn_id == self.user_turn:
            self.user_turn = None

    async def committed(self, reply_id: int) -> None:
        """Until ``reply_id`` is no pending draft (at once for any other reply)."""
        draft = self.drafts.get(reply_id)
        if draft is not None:
            await draft.wait()

    @property
    def speaking(self) -> bool:
        """Agent audio is being heard."""
        return bool(self.playing)

    @property
    def protected(self) -> bool:
        """A reply user speech must not touch is in progress."""
        return not all(self.live.values())

    @property
    def interruptible(self) -> frozenset[int]:
        return frozenset(r for r, ok in self.live.items() if ok)

    @property
    def idle(self) -> bool:
        """No reply in progress and no user turn open."""
        return not self.live and self.user_turn is None

    def affected(self, frame: InterruptionFrame) -> list[int]:
        """The replies in progress that ``frame`` stops, oldest first."""
        return sorted(r for r, ok in self.live.items() if frame.affects(r, ok))
