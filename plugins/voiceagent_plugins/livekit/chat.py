"""Conversations and tools between LiveKit's types and voiceagent's (OpenAI-shaped) ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from livekit.agents import llm

from voiceagent.backends import ChatMessage, ToolCall


def to_messages(chat_ctx: llm.ChatContext) -> list[ChatMessage]:
    """A LiveKit conversation as voiceagent messages (text only: images and audio are not
    something voiceagent's LLMs take). LiveKit's ``developer`` role is a system message."""
    messages, _ = chat_ctx.to_provider_format("openai", inject_dummy_user_message=False)
    out = []
    for m in messages:
        role: Literal["system", "user", "assistant", "tool"] = (
            "system" if m["role"] == "developer" else m["role"])
        calls = [ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                 for c in m.get("tool_calls") or ()]
        out.append(ChatMessage(role, _text(m.get("content")), tool_calls=calls,
                               tool_call_id=m.get("tool_call_id")))
    return out


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content or ""


def to_tool_specs(tools: Sequence[llm.Tool]) -> list[dict[str, Any]]:
    """LiveKit function tools as OpenAI function specs (what voiceagent's LLMs take)."""
    from livekit.agents.llm._provider_format.openai import to_fnc_ctx

    return to_fnc_ctx(llm.ToolContext(list(tools)), strict=False)


def to_chat_ctx(messages: Sequence[ChatMessage]) -> llm.ChatContext:
    """voiceagent messages as a LiveKit conversation, in their order."""
    items: list[llm.ChatItem] = []
    for m in messages:
        if m.role == "tool":
            items.append(llm.FunctionCallOutput(call_id=m.tool_call_id or "", name=m.name or "",
                                                output=m.content, is_error=False))
            continue
        # The calls go in one group with their message, even an empty one: a message with
        # calls and no "content" at all breaks some chat templates (SmolLM2's on llama.cpp's
        # server ends the stream with nothing).
        message = llm.ChatMessage(role=m.role, content=[m.content])
        items.append(message)
        items += [llm.FunctionCall(call_id=c.id, name=c.name, arguments=c.arguments,
                                   group_id=message.id) for c in m.tool_calls]
    return llm.ChatContext(items)


def to_livekit_tools(specs: Sequence[dict[str, Any]]) -> list[llm.RawFunctionTool]:
    """OpenAI function specs as LiveKit tools that only describe: voiceagent runs its tools
    itself, so a LiveKit LLM is only asked which to call."""

    async def described_only(raw_arguments: dict[str, object]) -> None:
        raise RuntimeError("voiceagent runs its own tools")

    return [llm.function_tool(described_only, raw_schema=dict(spec.get("function", spec)))
            for spec in specs]
