"""An agent with tools: typed Python functions the LLM can call.

    voiceagent run examples/tool_agent.py --input examples/jfk.wav --output agent.wav

The JSON schema each tool offers the LLM comes from its signature and docstring. A tool that
raises is reported to the LLM as an error message; the conversation goes on.

The embedded SmolLM2-135M is too small to call tools reliably; point the agent at a stronger
OpenAI-compatible model to see them used:

    voiceagent run examples/tool_agent.py --input question.wav \\
        --llm openai --llm-option base_url=http://127.0.0.1:8000/v1 --llm-option model=local
"""

from datetime import datetime
from typing import Literal

from voiceagent import Agent, function_tool


@function_tool
def get_time(timezone: Literal["UTC", "local"] = "local") -> str:
    """The current time of day, to answer "what time is it"."""
    now = datetime.now().astimezone() if timezone == "local" else datetime.utcnow()
    return now.strftime("%H:%M")


@function_tool
def convert_temperature(value: float, to_unit: Literal["celsius", "fahrenheit"]) -> float:
    """Convert a temperature to the given unit (from the other one)."""
    if to_unit == "celsius":
        return round((value - 32) * 5 / 9, 1)
    return round(value * 9 / 5 + 32, 1)


agent = Agent(
    instructions=(
        "You are a helpful voice assistant. Use the tools for the time and for temperature "
        "conversions. Answer in one short spoken sentence."
    ),
    tools=[get_time, convert_temperature],
)
