"""Test helpers that ship with the library.

- :class:`Conversation`: drive a whole session from code with text turns or audio clips and
  assert on each turn's :class:`TurnResult` (transcript, reply, tool calls, handoffs,
  metrics); :func:`judge` asks an LLM whether a reply meets an intent.
- A node harness and fake backends, so stage logic (turn-taking, barge-in, replies) is tested
  in milliseconds without models.
"""

from .conversation import Conversation, Microphone, ToolCallRecord, TurnResult, transcribe
from .fakes import LoudnessVAD, ScriptedLLM, ScriptedSTT, ToneTTS
from .harness import Harness, ManualClock, make_runtime
from .judge import Verdict, judge

__all__ = ["Conversation", "Harness", "LoudnessVAD", "ManualClock", "Microphone", "ScriptedLLM",
           "ScriptedSTT", "ToneTTS", "ToolCallRecord", "TurnResult", "Verdict", "judge",
           "make_runtime", "transcribe"]
