"""voiceagent: real-time voice agents, offline on a CPU out of the box."""

from .agent import (
    Agent,
    AgentOptions,
    BargeInOptions,
    DTMFOptions,
    EndpointingOptions,
    RecordingOptions,
)
from .agent_task import AgentTask
from .errors import BackendError, BackendUnavailable, ConfigError, VoiceAgentError
from .session import AgentSession
from .tools import FunctionTool, ToolContext, end_call, function_tool
from .workflow import Handoff

__all__ = [
    "Agent", "AgentOptions", "AgentSession", "AgentTask", "BackendError", "BackendUnavailable",
    "BargeInOptions", "ConfigError", "DTMFOptions", "EndpointingOptions", "FunctionTool",
    "Handoff", "RecordingOptions", "ToolContext", "VoiceAgentError",
    "end_call", "function_tool",
]
__version__ = "0.1.0"
