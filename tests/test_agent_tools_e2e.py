"""Tools through a whole session: real speech in, a real OpenAI-compatible server (llama.cpp's,
on SmolLM2) asked to call the tool, the tool run, its result back to the model, a spoken reply.

SmolLM2-135M does not decide to call tools by itself, so the backend forces the call with a
named ``tool_choice``; the agent then offers no tools in its last round, so the model answers.
"""

from __future__ import annotations

import pytest

from llm_server import llama_server
from voiceagent import Agent, AgentOptions, function_tool
from voiceagent.audio import load_audio, rms_dbfs
from voiceagent.events import AgentTextEvent, ErrorEvent, ToolCallEvent
from voiceagent.runner import converse_with_file
from voiceagent.session import resolve_backends
from voiceagent_plugins.openai_llm import OpenAILLM

pytestmark = pytest.mark.slow

calls: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    calls.append(city)
    return f"It is sunny and 21 degrees in {city}."


@function_tool
def get_forecast(city: str) -> str:
    """Get tomorrow's forecast for a city."""
    raise ConnectionError("weather service unreachable")


@pytest.fixture(scope="module")
def server_url():
    with llama_server() as url:
        yield url


@pytest.fixture(scope="module")
def local_backends():
    return resolve_backends(Agent(""))


async def run_weather_question(speech_dir, server_url, local_backends, tool):
    llm = OpenAILLM(base_url=server_url, model="smollm2", tool_choice=tool.name,
                    max_tokens=60, timeout=60)
    agent = Agent("You are a weather assistant. Use the tool, then answer in one sentence.",
                  tools=[tool], options=AgentOptions(max_tool_rounds=1, llm_timeout=60))
    try:
        return await converse_with_file(
            agent, load_audio(speech_dir / "azure_whats_the_weather_like.wav"), speed=2,
            backends={**local_backends, "llm": llm})
    finally:
        await llm.aclose()


async def test_spoken_question_runs_the_tool_and_the_answer_is_spoken(
        speech_dir, server_url, local_backends):
    calls.clear()
    result = await run_weather_question(speech_dir, server_url, local_backends, get_weather)
    assert result.fatal_error is None and not result.of_type(ErrorEvent)
    tool_events = result.of_type(ToolCallEvent)
    assert len(tool_events) == 1 and tool_events[0].name == "get_weather"
    assert not tool_events[0].error and "sunny" in tool_events[0].result
    assert calls == [calls[0]] and calls[0].strip()  # our function really ran, once
    roles = [m.role for m in result.history]
    assert roles[:3] == ["user", "assistant", "tool"]
    assert result.history[1].tool_calls[0].name == "get_weather"
    reply = [e for e in result.of_type(AgentTextEvent) if e.final and not e.interrupted]
    assert reply and reply[0].text.strip()
    assert rms_dbfs(result.audio) > -50  # and it was spoken


async def test_a_failing_tool_is_reported_to_the_llm_and_the_session_goes_on(
        speech_dir, server_url, local_backends):
    result = await run_weather_question(speech_dir, server_url, local_backends, get_forecast)
    assert result.fatal_error is None and not result.of_type(ErrorEvent)
    tool_events = result.of_type(ToolCallEvent)
    assert len(tool_events) == 1 and tool_events[0].error
    assert "weather service unreachable" in tool_events[0].result
    tool_messages = [m for m in result.history if m.role == "tool"]
    assert tool_messages and tool_messages[0].content.startswith("Error:")
    assert [e for e in result.of_type(AgentTextEvent) if e.final and e.text.strip()]
