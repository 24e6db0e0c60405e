"""voiceagent: real-time voice agents, offline on a CPU out of the box."""

from .agent import (
    Agent,
    AgentOptions,
    BargeInOptions,
    DTMFOptions,
    EndpointingOptions,
    RecordingOptions,
)
from .errors import BackendError, BackendUnavailable, ConfigError, VoiceAgentError
from .session import AgentSession
from .tools import FunctionTool, ToolContext, end_call, function_tool

__all__ = [
    "Agent", "AgentOptions", "AgentSession", "BackendError", "BackendUnavailable", "BargeInOptions",
    "DTMFOptions",
    "ConfigError", "EndpointingOptions", "FunctionTool", "RecordingOptions", "ToolContext",
    "VoiceAgentError",
    "end_call", "function_tool",
]
__version__ = "0.1.0"
