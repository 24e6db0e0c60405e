"""An LLM as a judge: does a reply meet an intent ("confirms the phone number back")?

Any LLM backend works (``OpenAILLM`` for an OpenAI-compatible server). The judge is asked to
call a ``verdict`` tool, forced where the backend can force tools, so even a small local model
answers in a shape that can be read; a model that answers in words instead is read from its
first word (yes/no).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

from ..backends import LLM, ChatMessage

PROMPT = ("You check a voice assistant's reply. Decide whether the reply meets the intent. "
          "Call verdict with meets=true or meets=false and a one-sentence reason.")

VERDICT_TOOL = {"type": "function", "function": {
    "name": "verdict", "description": "Your decision on the reply.",
    "parameters": {"type": "object", "properties": {
        "meets": {"type": "boolean", "description": "the reply meets the intent"},
        "reason": {"type": "string", "description": "why, in one sentence"}},
        "required": ["meets", "reason"]}}}


@dataclass
class Verdict:
    passed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.passed


async def judge(llm: LLM, intent: str, reply: str, *, conversation: str = "",
                timeout: float = 60.0) -> Verdict:
    """Whether ``reply`` meets ``intent`` by ``llm``'s judgement, with its reason.
    ``conversation`` (what came before) helps it judge a reply in context."""
    question = f"Intent: {intent}\nReply: {reply!r}"
    if conversation:
        question = f"Conversation so far:\n{conversation}\n\n{question}"
    messages = [ChatMessage("system", PROMPT), ChatMessage("user", question)]
    text, arguments = "", None
    try:
        stream = llm.chat(messages, [VERDICT_TOOL], tool_choice="verdict")  # type: ignore[call-arg]
    except TypeError:  # a backend that cannot force tools: it may still call it, or say yes/no
        stream = llm.chat(messages, [VERDICT_TOOL])
    async with contextlib.aclosing(stream), asyncio.timeout(timeout):  # type: ignore[type-var]
        async for delta in stream:
            if delta.tool_call is not None and delta.tool_call.name == "verdict":
                arguments = delta.tool_call.arguments
            text += delta.text
    return _read(arguments, text)


def _read(arguments: str | None, text: str) -> Verdict:
    if arguments is not None:
        try:
            args = json.loads(arguments)
            meets = args.get("meets")
            if isinstance(meets, str):
                meets = meets.strip().lower() in ("true", "yes")
            return Verdict(bool(meets), str(args.get("reason", "")).strip() or "(no reason)")
        except (ValueError, AttributeError):
            text = text or arguments
    words = text.strip().lower().split()
    first = words[0].strip(".,:;!") if words else ""
    if first in ("yes", "no"):
        return Verdict(first == "yes", " ".join(text.split()[1:]) or "(no reason)")
    return Verdict(False, f"the judge gave no verdict: {' '.join(text.split())[:200]!r}")

