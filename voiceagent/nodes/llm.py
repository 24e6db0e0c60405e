"""The agent's reply: the conversation plus the user's turn go to the LLM; tokens stream on.

Tool calls run between LLM rounds and their results go back to the model; they belong to the
generation that asked for them, so an interruption (which cancels this node's work) cancels
them too. A failing or silent LLM ends the reply with an error event and, if configured, a
short spoken apology after whatever it had said: the session carries on listening.

The agent is the workflow's active one at each round (``workflow.py``): a tool that hands the
conversation on makes the next round the new agent's, in the same reply (or the new agent's
greeting ends the reply). A tool waiting for a task leaves the reply to go on without it;
its result joins its agent's conversation when the task returns.

A draft reply (preemptive, see the endpointer) is generated like any other, but the
conversation learns of it only at its commit: until then the user's words go to the LLM
outside the context, what it says is not kept, and a tool call waits for the commit (a
discarded draft is cancelled, so its tools never run).
"""

from __future__ import annotations

import asyncio
import contextlib

from ..agent import Agent
from ..backends import ChatMessage, ToolCall
from ..context import ChatContext
from ..errors import BackendError
from ..events import AgentTextEvent, StageEvent, ToolCallEvent
from ..frames import (
    DataFrame,
    LLMTextFrame,
    PlayoutFinishedFrame,
    ReplyEnd,
    ReplyGeneratingFrame,
    ReplyStartedFrame,
    SystemFrame,
    UserTurnFrame,
)
from ..graph import Node
from ..race import race
from ..replies import ReplyActivity
from ..runtime import SessionRuntime
from ..tools import ToolContext
from ..workflow import Workflow


class LLMNode(Node):
    def __init__(self, workflow: Workflow, runtime: SessionRuntime) -> None:
        super().__init__("llm")
        self._flow = workflow
        self._rt = runtime
        #: reply -> its assistant message and the conversation holding it, until the output
        #: says what of it was heard
        self._replies: dict[int, tuple[ChatContext, ChatMessage]] = {}
        #: reply -> when its first text came, while it is generated
        self._first_text: dict[int, float] = {}
        #: draft -> the user's message and what it said so far, which join the conversation
        #: when it is committed
        self._drafts: dict[int, tuple[ChatMessage, list[str]]] = {}
        self._activity = ReplyActivity()

    async def process(self, frame: DataFrame) -> None:
        if not isinstance(frame, UserTurnFrame):
            await self.emit(frame)
            return
        turn = frame.reply_id
        start = self._rt.clock.now()
        await self.broadcast(ReplyGeneratingFrame(ts=frame.ts, reply_id=turn))
        user = ChatMessage("user", frame.text)
        said: list[str] = []  # the reply's words, whichever agents said them
        draft = turn in self._activity.drafts
        if draft:
            self._drafts[turn] = (user, said)
        else:
            self._flow.context.add(user)
        opts = self._flow.agent.options
        finished = False
        try:
            try:
                await self._generate(turn, said)
            except (BackendError, TimeoutError) as exc:
                await self.report_error(exc if isinstance(exc, BackendError)
                                        else BackendError("the LLM timed out"))
                if opts.error_reply:  # after what was said: the user hears why it stopped
                    sep = " " if said and not said[-1].endswith(" ") else ""
                    await self._say(turn, said, sep + opts.error_reply)
            finished = True
        finally:  # also when an interruption cancels the generation
            self._rt.events.emit(StageEvent(ts=self._rt.clock.now(), stage="llm", turn_id=turn,
                                            start=start, first=self._first_text.pop(turn, None),
                                            cancelled=not finished))
        end = ReplyEnd(ts=self._rt.clock.now(), reply_id=turn, text="".join(said))
        try:
            if draft:  # its last clause is synthesised (and held) while the turn is open
                await self.emit(end)
            await self._activity.committed(turn)
        finally:
            self._drafts.pop(turn, None)
        self._rt.events.emit(AgentTextEvent(ts=self._rt.clock.now(), text="".join(said),
                                            final=True, turn_id=turn))
        if not draft:
            await self.emit(end)

    def _commit(self, turn: int) -> None:
        """A draft was committed: it joins the conversation with what it has said so far."""
        user, said = self._drafts.pop(turn)
        self._flow.context.add(user)
        if said:
            self._remember(turn, "".join(said))

    async def _generate(self, turn: int, said: list[str]) -> None:
        self._rt.metrics.mark(turn, "llm_request", self._rt.clock.now())
        agent = self._flow.agent
        # tool_choice binds an agent's first round in a reply, unless a task has just handed
        # back to it: then it reads the task's result and answers
        force = True
        rounds = agent.options.max_tool_rounds
        for round_ in range(rounds + 1):
            if self._flow.agent is not agent:  # a tool handed over: the new agent goes on
                agent = self._flow.agent
                force = self._flow.entered_by != "task_completed"
                if agent.greeting and force:
                    await self._say(turn, said, agent.greeting)
                    return
            context = self._flow.context
            calls: list[ToolCall] = []
            offered = [t.schema for t in agent.tools] if round_ < rounds else []
            choice = agent.tool_choice if offered and force else None
            force = False
            messages = context.messages()
            if turn in self._drafts:  # the draft's words, outside the conversation
                messages.append(self._drafts[turn][0])
            stream = self._flow.llm.chat(messages, offered,
                                         **({"tool_choice": choice} if choice else {}))
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                while True:
                    try:
                        async with asyncio.timeout(agent.options.llm_timeout):
                            delta = await anext(stream)
                    except StopAsyncIteration:
                        break
                    if delta.tool_call is not None:
                        calls.append(delta.tool_call)
                    elif delta.text:
                        await self._say(turn, said, delta.text)
            if not calls:
                return
            await self._activity.committed(turn)  # a draft's tools run once it is committed
            request = ChatMessage("assistant", "", tool_calls=calls)
            context.add(request)
            results: list[ChatMessage] = []
            waiting = False  # a call waits for a task: its result will follow the request
            try:
                for call in calls:
                    result = await self._run_tool(turn, call, agent, context)
                    if result is None:
                        waiting = True
                    else:
                        results.append(result)
                # a task that completed: the tool it returned to goes on first
                await self._flow.resumed(agent.options.tool_timeout)
            except asyncio.CancelledError:
                # The calls belong to this generation: interrupted, they are abandoned, and
                # the conversation must not keep a request without its results.
                if not waiting:
                    context.remove(request)
                raise
            for result in results:
                context.add(result)

    async def _say(self, turn: int, said: list[str], text: str) -> None:
        now = self._rt.clock.now()
        self._rt.metrics.mark(turn, "llm_first_token", now)
        self._first_text.setdefault(turn, now)
        if turn not in self._drafts:  # a draft's words are kept from its commit
            self._remember(turn, text)
        said.append(text)
        await self.emit(LLMTextFrame(ts=now, text=text, reply_id=turn))

    def _remember(self, turn: int, text: str) -> None:
        """Add ``text`` to the reply's assistant message in the active conversation."""
        context = self._flow.context
        held = self._replies.get(turn)
        if held is None or held[0] is not context:  # the first words, or a new agent's
            held = self._replies[turn] = (context, ChatMessage("assistant", ""))
            context.add(held[1])
        held[1].content += text

    async def _run_tool(self, turn: int, call: ToolCall, agent: Agent,
                        context: ChatContext) -> ChatMessage | None:
        """``agent``'s call (a tool before it may have handed over); its result, or None when
        the tool waits for a task (its result joins ``context`` when it comes)."""
        tool = agent.tool(call.name)
        start = self._rt.clock.now()
        if tool is None:
            return self._result(turn, call, start,
                                f"Error: there is no tool named {call.name!r}", True)
        opts = agent.options
        tool_context = ToolContext(self._rt, turn, self._flow)
        # its own job, so that one waiting for a task need not hold up the conversation
        job = self.spawn(tool.invoke(call.arguments, opts.tool_timeout, tool_context),
                         f"tool-{call.name}")
        try:
            await race(asyncio.shield(job), tool_context.suspended.wait())
        except asyncio.CancelledError:
            if not tool_context.suspended.is_set():
                job.cancel()
            raise
        if job.done():
            return self._result(turn, call, start, *job.result())
        job.add_done_callback(lambda done: None if done.cancelled() else context.add(
            self._result(turn, call, start, *done.result())))
        return None

    def _result(self, turn: int, call: ToolCall, start: float, result: str,
                error: bool) -> ChatMessage:
        self._rt.events.emit(ToolCallEvent(ts=self._rt.clock.now(), name=call.name,
                                           arguments=call.arguments, result=result,
                                           error=error, turn_id=turn, start=start))
        return ChatMessage("tool", result, tool_call_id=call.id, name=call.name)

    async def on_system(self, frame: SystemFrame) -> None:
        self._activity.observe(frame)
        if isinstance(frame, ReplyStartedFrame) and frame.reply_id in self._drafts:
            self._commit(frame.reply_id)
        elif isinstance(frame, PlayoutFinishedFrame):
            held = self._replies.pop(frame.reply_id, None)
            if held is not None and frame.interrupted:
                held[0].cut_to_heard(held[1], frame.heard_text)
