"""voiceagent's LLM (llama.cpp in process by default) as a ``livekit.agents.llm.LLM``.

Text streams out token by token as ``ChatChunk``s; tool calls come as LiveKit
``FunctionToolCall``s, which LiveKit's agent runs. Closing the stream (an interruption)
closes voiceagent's generator, which stops llama.cpp between tokens. Each wait for the next
piece is bounded by ``conn_options.timeout``; a failure is an ``APIError``.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, NotGivenOr, llm
from livekit.agents.types import NOT_GIVEN
from livekit.agents.utils import shortuuid

from voiceagent import registry

from .chat import to_messages, to_tool_specs
from .errors import as_api_errors
from .naming import NamedBackend


class LLM(NamedBackend, llm.LLM):
    """``backend``: a voiceagent LLM by registry name (``llamacpp``, ``openai``) or an
    object, with its ``options``. Of LiveKit's ``tool_choice`` only ``"none"`` (offer no
    tools) passes through: voiceagent's LLM interface has no other (the ``openai`` backend
    takes its own ``tool_choice`` option)."""

    def __init__(self, *, backend: Any = "llamacpp", **options: Any) -> None:
        super().__init__()
        self._backend = registry.resolve("llm", backend, **options)
        self._name_backend(backend)

    def chat(self, *, chat_ctx: llm.ChatContext, tools: list[llm.Tool] | None = None,
             conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
             parallel_tool_calls: NotGivenOr[bool] = NOT_GIVEN,
             tool_choice: NotGivenOr[llm.ToolChoice] = NOT_GIVEN,
             extra_kwargs: NotGivenOr[dict[str, Any]] = NOT_GIVEN) -> LLMStream:
        offered = [] if tool_choice == "none" else list(tools or [])
        return LLMStream(self, chat_ctx=chat_ctx, tools=offered, conn_options=conn_options)


class LLMStream(llm.LLMStream):
    async def _run(self) -> None:
        owner = self._llm
        assert isinstance(owner, LLM)
        request = shortuuid("va_")
        messages = to_messages(self._chat_ctx)
        specs = to_tool_specs(self._tools)
        what = f"the {owner.model} LLM"
        async with aclosing(owner._backend.chat(messages, specs)) as deltas:
            while True:
                async with as_api_errors(what, self._conn_options.timeout, retryable=False):
                    delta = await anext(deltas, None)
                if delta is None:
                    return
                if delta.text:
                    self._event_ch.send_nowait(llm.ChatChunk(id=request, delta=llm.ChoiceDelta(
                        role="assistant", content=delta.text)))
                if delta.tool_call is not None:
                    call = delta.tool_call
                    self._event_ch.send_nowait(llm.ChatChunk(id=request, delta=llm.ChoiceDelta(
                        role="assistant", tool_calls=[llm.FunctionToolCall(
                            name=call.name, arguments=call.arguments, call_id=call.id)])))
