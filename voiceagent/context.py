"""The conversation the LLM sees, kept across turns of one session."""

from __future__ import annotations

from .backends import ChatMessage


class ChatContext:
    def __init__(self, instructions: str, max_history: int = 20) -> None:
        self.instructions = instructions
        self.max_history = max_history
        self.history: list[ChatMessage] = []

    def messages(self) -> list[ChatMessage]:
        return [ChatMessage("system", self.instructions), *self.history]

    def add(self, message: ChatMessage) -> None:
        self.history.append(message)
        self._trim()

    def remove(self, message: ChatMessage) -> None:
        self.history = [m for m in self.history if m is not message]

    def cut_to_heard(self, message: ChatMessage, heard_text: str) -> None:
        """An interrupted reply keeps only the words the user heard (none: it goes)."""
        message.content = heard_text
        if not heard_text:
            self.remove(message)

    def _trim(self) -> None:
        # Drop whole exchanges from the front; never start on a tool result or an
        # assistant tool call whose result would be left orphaned.
        while len(self.history) > self.max_history:
            self.history.pop(0)
            while self.history and self.history[0].role != "user":
                self.history.pop(0)
