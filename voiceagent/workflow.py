"""Which agent holds the conversation: handoffs between agents, and tasks that return a value.

A session has one :class:`Workflow`. Its active agent's instructions, tools, LLM and context
are what the LLM stage uses for each round of a reply. A tool hands the conversation on by
returning the next :class:`~voiceagent.agent.Agent` (or a :class:`Handoff`), code by
``session.update_agent()``; a tool runs a task with ``await context.run_task(task)`` and gets
the task's typed result back (``agent_task.py``).

Switching is one synchronous step (:meth:`Workflow._switch`), taken only once everything the
new agent needs is ready (its context, a summary, its backends): an interruption, which can
only land at an ``await``, finds the old agent active or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel

from . import registry
from .agent import Agent, CarryOver
from .backends import LLM, ChatMessage
from .context import ChatContext
from .errors import VoiceAgentError
from .events import AgentEnteredEvent, AgentLeftEvent
from .frames import AgentChangedFrame
from .graph import Graph
from .race import race
from .runtime import SessionRuntime

if TYPE_CHECKING:
    from .agent_task import AgentTask

T = TypeVar("T", bound=BaseModel)
Reason = Literal["handoff", "task_started", "task_completed"]

SUMMARY_PROMPT = ("Summarise this conversation between a user and an assistant in at most "
                  "three short sentences, keeping names, numbers and what the user wants.")


class WorkflowError(VoiceAgentError):
    """A handoff or task that cannot happen now (a task's tool handing off elsewhere)."""


@dataclass
class Handoff:
    """What a tool returns to hand the conversation to ``agent`` with more control than
    returning the agent itself: a ``note`` the new agent reads in its instructions ("the
    caller wants a table for four tonight"), ``carry_over`` instead of the agent's own, and
    the tool ``result`` the LLM reads."""

    agent: Agent
    note: str = ""
    carry_over: CarryOver | None = None
    result: str = ""


@dataclass
class _Caller:
    """An agent waiting in one of its tools for a task's result."""

    agent: Agent
    context: ChatContext
    llm: LLM
    task: AgentTask[Any]
    result: asyncio.Future[Any]
    job: asyncio.Task[Any] | None


class Workflow:
    """The session's active agent, its conversation and LLM, and the agents waiting for a
    task. An agent's backends are the session's unless it names its own (``Agent.inherited``).
    """

    def __init__(self, agent: Agent, backends: dict[str, object], runtime: SessionRuntime,
                 graph: Graph) -> None:
        self.agent = agent
        self.context = ChatContext(agent.instructions, agent.options.max_history)
        self.llm: LLM = backends["llm"]  # type: ignore[assignment]
        self._session_backends = backends
        self._rt = runtime
        self._graph = graph
        self._callers: list[_Caller] = []
        #: the tool job of an agent a task just returned to (its result is on its way), and
        #: the switch count then
        self._returning: tuple[asyncio.Task[Any] | None, int] | None = None
        #: switches so far, and an event set at the next one
        self.switches = 0
        self._switched = asyncio.Event()
        #: how the active agent came to hold the conversation (None: it was the first)
        self.entered_by: Reason | None = None

    # -- handoffs ---------------------------------------------------------------------------

    async def hand_off(self, agent: Agent, *, carry_over: CarryOver | None = None,
                       note: str = "") -> None:
        """Give the conversation to ``agent`` with what it should receive of it."""
        if self._callers:
            raise WorkflowError(f"{self.agent.name} is a task: it must complete (call "
                                f"complete) before the conversation can go to {agent.name}")
        carry = carry_over or agent.carry_over
        context, llm, tts = await self._prepare(agent, carry, note)
        await self._switch(agent, context, llm, tts, "handoff", carry)

    async def accept(self, result: object) -> str | None:
        """A tool's return value: a handoff is carried out and the text the LLM reads comes
        back; anything else is not a handoff (None)."""
        if isinstance(result, Agent):
            result = Handoff(result)
        if not isinstance(result, Handoff):
            return None
        await self.hand_off(result.agent, carry_over=result.carry_over, note=result.note)
        return result.result or f"The conversation is now with {result.agent.name}."

    # -- tasks --------------------------------------------------------------------------------

    async def run_task(self, task: AgentTask[T],
                       started: Callable[[], object] | None = None) -> T:
        """Give the conversation to ``task`` until it completes; its result. Awaited by a tool
        of the active agent, in its own job; ``started`` is called once the task holds the
        conversation (the reply that called the tool then goes on without it)."""
        carry = task.carry_over
        context, llm, tts = await self._prepare(task, carry, "")
        caller = _Caller(self.agent, self.context, self.llm, task,
                         asyncio.get_running_loop().create_future(), asyncio.current_task())
        self._callers.append(caller)
        try:
            changed = self._enter(task, context, llm, tts, "task_started", carry)
            if started is not None:
                started()
            await self._graph.broadcast(changed)
            return await caller.result
        finally:
            if caller in self._callers:  # the caller gave up (its session is ending)
                self._callers.remove(caller)

    async def complete(self, task: AgentTask[Any], result: object) -> None:
        """``task`` has its result: back to the agent that started it, and the result to the
        tool that is waiting for it."""
        if not self._callers or self._callers[-1].task is not task or self.agent is not task:
            raise WorkflowError(f"{task.name} is not the task in progress")
        tts = await self._resolve(self._callers[-1].agent, "tts")
        # from here to the result, no await: the task is over once it has a valid result
        caller = self._callers.pop()
        changed = self._enter(caller.agent, caller.context, caller.llm, tts,
                              "task_completed", "all")
        self._returning = (caller.job, self.switches)
        caller.result.set_result(result)
        await self._graph.broadcast(changed)

    async def resumed(self, timeout: float) -> None:
        """After a task completed: until the tool it returned to has finished (its result is
        then in its agent's conversation) or handed the conversation on again (another task,
        a handoff), at most ``timeout`` seconds."""
        returning, self._returning = self._returning, None
        job, switches = returning or (None, 0)
        if job is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not job.done() and self.switches == switches and loop.time() < deadline:
            await race(asyncio.shield(job), self._switched.wait(),
                       timeout=deadline - loop.time())

    # -- the switch ---------------------------------------------------------------------------

    async def _prepare(self, agent: Agent, carry: CarryOver, note: str
                       ) -> tuple[ChatContext, LLM, object]:
        notes = [note] if note else []
        history = [m for m in self.context.history
                   if m.role in ("user", "assistant") and m.content and not m.tool_calls]
        if carry == "summary" and history:
            summary = await self._summarise(history, agent.options.llm_timeout)
            if summary:
                notes.insert(0, f"Summary of the conversation so far: {summary}")
        instructions = "\n\n".join([agent.instructions, *notes])
        context = ChatContext(instructions, agent.options.max_history)
        if carry == "all":
            for message in history:
                context.add(message)
        llm = await self._resolve(agent, "llm")
        return context, llm, await self._resolve(agent, "tts")  # type: ignore[return-value]

    async def _summarise(self, history: list[ChatMessage], timeout: float) -> str:
        transcript = "\n".join(f"{m.role}: {m.content}" for m in history)
        text = ""
        stream = self.llm.chat([ChatMessage("system", SUMMARY_PROMPT),
                                ChatMessage("user", transcript)])
        async with contextlib.aclosing(stream), asyncio.timeout(timeout):  # type: ignore[type-var]
            async for delta in stream:
                text += delta.text
        return " ".join(text.split())

    async def _resolve(self, agent: Agent, kind: str) -> object:
        if kind in agent.inherited:
            return self._session_backends[kind]
        # a named backend may load a model the first time: not on the event loop
        return await asyncio.to_thread(registry.resolve, kind,  # type: ignore[arg-type]
                                       agent.backends[kind], **agent.backend_options[kind])

    async def _switch(self, agent: Agent, context: ChatContext, llm: LLM, tts: object,
                      reason: Reason, carry: CarryOver) -> None:
        await self._graph.broadcast(self._enter(agent, context, llm, tts, reason, carry))

    def _enter(self, agent: Agent, context: ChatContext, llm: LLM, tts: object,
               reason: Reason, carry: CarryOver) -> AgentChangedFrame:
        """The switch itself, in one step; the frame that tells the stages."""
        previous = self.agent
        self.agent, self.context, self.llm = agent, context, llm
        self.entered_by = reason
        self.switches += 1
        self._switched.set()
        self._switched = asyncio.Event()
        now = self._rt.clock.now()
        self._rt.events.emit(AgentLeftEvent(ts=now, agent=previous.name, to=agent.name,
                                            reason=reason))
        self._rt.events.emit(AgentEnteredEvent(ts=now, agent=agent.name, previous=previous.name,
                                               reason=reason, carry_over=carry))
        return AgentChangedFrame(ts=now, agent=agent.name, options=agent.options, tts=tts)
