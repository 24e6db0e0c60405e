"""Test helpers that ship with the library: a node harness and fake backends, so stage logic
(turn-taking, barge-in, replies) is tested in milliseconds without models."""

from .fakes import LoudnessVAD, ScriptedLLM, ScriptedSTT, ToneTTS
from .harness import Harness, ManualClock, make_runtime

__all__ = ["Harness", "LoudnessVAD", "ManualClock", "ScriptedLLM", "ScriptedSTT", "ToneTTS",
           "make_runtime"]
