"""The agent's reply: the conversation plus the user's turn go to the LLM; tokens stream on.

Tool calls run between LLM rounds and their results go back to the model; they belong to the
generation that asked for them, so an interruption (which cancels this node's work) cancels
them too. A failing or silent LLM ends the reply with an error event and, if configured, a
short spoken apology after whatever it had said: the session carries on listening.
"""

from __future__ import annotations

import asyncio
import contextlib

from ..agent import Agent
from ..backends import LLM, ChatMessage, ToolCall
from ..context import ChatContext
from ..errors import BackendError
from ..events import AgentTextEvent, StageEvent, ToolCallEvent
from ..frames import (
    DataFrame,
    LLMTextFrame,
    PlayoutFinishedFrame,
    ReplyEnd,
    ReplyGeneratingFrame,
    SystemFrame,
    UserTurnFrame,
)
from ..graph import Node
from ..runtime import SessionRuntime
from ..tools import ToolContext


class LLMNode(Node):
    def __init__(self, llm: LLM, agent: Agent, context: ChatContext,
                 runtime: SessionRuntime) -> None:
        super().__init__("llm")
        self._llm = llm
        self._agent = agent
        self._opts = agent.options
        self.context = context
        self._rt = runtime
        #: reply -> its assistant message, until the output says what of it was heard
        self._replies: dict[int, ChatMessage] = {}
        #: reply -> when its first text came, while it is generated
        self._first_text: dict[int, float] = {}

    async def process(self, frame: DataFrame) -> None:
        if not isinstance(frame, UserTurnFrame):
            await self.emit(frame)
            return
        turn = frame.reply_id
        start = self._rt.clock.now()
        await self.broadcast(ReplyGeneratingFrame(ts=frame.ts, reply_id=turn))
        self.context.add(ChatMessage("user", frame.text))
        reply = ChatMessage("assistant", "")
        finished = False
        try:
            try:
                await self._generate(turn, reply)
            except (BackendError, TimeoutError) as exc:
                await self.report_error(exc if isinstance(exc, BackendError)
                                        else BackendError("the LLM timed out"))
                if self._opts.error_reply:  # after what was said: the user hears why it stopped
                    sep = " " if reply.content and not reply.content.endswith(" ") else ""
                    await self._say(turn, reply, sep + self._opts.error_reply)
            finished = True
        finally:  # also when an interruption cancels the generation
            self._rt.events.emit(StageEvent(ts=self._rt.clock.now(), stage="llm", turn_id=turn,
                                            start=start, first=self._first_text.pop(turn, None),
                                            cancelled=not finished))
        self._rt.events.emit(AgentTextEvent(ts=self._rt.clock.now(), text=reply.content,
                                            final=True, turn_id=turn))
        await self.emit(ReplyEnd(ts=self._rt.clock.now(), reply_id=turn, text=reply.content))

    async def _generate(self, turn: int, reply: ChatMessage) -> None:
        tools = [t.schema for t in self._agent.tools]
        self._rt.metrics.mark(turn, "llm_request", self._rt.clock.now())
        for round_ in range(self._opts.max_tool_rounds + 1):
            calls: list[ToolCall] = []
            offered = tools if round_ < self._opts.max_tool_rounds else []
            stream = self._llm.chat(self.context.messages(), offered)
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                while True:
                    try:
                        async with asyncio.timeout(self._opts.llm_timeout):
                            delta = await anext(stream)
                    except StopAsyncIteration:
                        break
                    if delta.tool_call is not None:
                        calls.append(delta.tool_call)
                    elif delta.text:
                        await self._say(turn, reply, delta.text)
            if not calls:
                return
            request = ChatMessage("assistant", "", tool_calls=calls)
            self.context.add(request)
            results: list[ChatMessage] = []
            try:
                for call in calls:
                    results.append(await self._run_tool(turn, call))
            except asyncio.CancelledError:
                # The calls belong to this generation: interrupted, they are abandoned, and
                # the conversation must not keep a request without its results.
                self.context.remove(request)
                raise
            for result in results:
                self.context.add(result)

    async def _say(self, turn: int, reply: ChatMessage, text: str) -> None:
        now = self._rt.clock.now()
        self._rt.metrics.mark(turn, "llm_first_token", now)
        self._first_text.setdefault(turn, now)
        if turn not in self._replies:
            self._replies[turn] = reply
            self.context.add(reply)
        reply.content += text
        await self.emit(LLMTextFrame(ts=now, text=text, reply_id=turn))

    async def _run_tool(self, turn: int, call: ToolCall) -> ChatMessage:
        tool = self._agent.tool(call.name)
        start = self._rt.clock.now()
        if tool is None:
            result, error = f"Error: there is no tool named {call.name!r}", True
        else:
            context = ToolContext(self._rt, turn)
            result, error = await tool.invoke(call.arguments, self._opts.tool_timeout, context)
        self._rt.events.emit(ToolCallEvent(ts=self._rt.clock.now(), name=call.name,
                                           arguments=call.arguments, result=result,
                                           error=error, turn_id=turn, start=start))
        return ChatMessage("tool", result, tool_call_id=call.id, name=call.name)

    async def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, PlayoutFinishedFrame):
            reply = self._replies.pop(frame.reply_id, None)
            if reply is not None and frame.interrupted:
                self.context.cut_to_heard(reply, frame.heard_text)

