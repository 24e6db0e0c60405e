"""Tools: schema derived from the signature, and every failure reported, never raised."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import pytest

from voiceagent import Agent, ToolContext, end_call, function_tool
from voiceagent.tools import FunctionTool


@function_tool
def book_table(people: int, time: str, name: str = "guest") -> str:
    """Book a table at the restaurant."""
    return f"booked for {people} at {time} under {name}"


def test_schema_from_signature_and_docstring():
    spec = book_table.schema
    fn = spec["function"]
    assert spec["type"] == "function" and fn["name"] == "book_table"
    assert fn["description"] == "Book a table at the restaurant."
    params = fn["parameters"]
    assert params["type"] == "object"
    assert params["properties"]["people"] == {"type": "integer"}
    assert params["properties"]["name"]["default"] == "guest"
    assert sorted(params["required"]) == ["people", "time"]


def test_literal_becomes_enum():
    def pick(colour: Literal["red", "blue"]) -> str:
        """Pick a colour."""
        return colour

    props = FunctionTool(pick).schema["function"]["parameters"]["properties"]
    assert props["colour"]["enum"] == ["red", "blue"]


async def test_invoke_validates_and_converts_arguments():
    result, error = await book_table.invoke(json.dumps({"people": "4", "time": "8pm"}))
    assert not error and result == "booked for 4 at 8pm under guest"


@pytest.mark.parametrize("arguments, fragment", [
    ("not json", "invalid arguments"),
    ("[1, 2]", "invalid arguments"),
    (json.dumps({"time": "8pm"}), "people"),
    (json.dumps({"people": 2, "time": "8", "extra": 1}), "extra"),
])
async def test_bad_arguments_become_an_error_for_the_llm(arguments, fragment):
    result, error = await book_table.invoke(arguments)
    assert error and result.startswith("Error:") and fragment in result


async def test_a_raising_tool_is_reported_not_raised():
    @function_tool
    def broken() -> str:
        """Always fails."""
        raise ConnectionError("database down")

    result, error = await broken.invoke("{}")
    assert error and "ConnectionError: database down" in result


async def test_a_slow_tool_times_out():
    @function_tool
    async def slow() -> str:
        """Never answers in time."""
        await asyncio.sleep(10)
        return "late"

    result, error = await slow.invoke("{}", timeout=0.05)
    assert error and "timed out" in result


async def test_sync_tools_run_off_the_event_loop_and_results_are_json():
    loop_thread = []

    @function_tool
    def where() -> dict:
        """Report the thread."""
        import threading
        loop_thread.append(threading.current_thread().name)
        return {"ok": True}

    result, error = await where.invoke("")
    assert not error and json.loads(result) == {"ok": True}
    assert loop_thread[0] != "MainThread"


def test_agent_rejects_duplicate_tool_names():
    with pytest.raises(ValueError):
        Agent("x", tools=[book_table, book_table])


def test_star_args_cannot_be_described():
    def bad(*args):
        """No."""

    with pytest.raises(TypeError):
        FunctionTool(bad)


def test_a_tool_context_parameter_is_injected_and_hidden_from_the_llm():
    from voiceagent.clock import SessionClock
    from voiceagent.events import EventBus
    from voiceagent.metrics import MetricsTracker
    from voiceagent.runtime import SessionRuntime

    seen = []

    @function_tool
    def transfer(department: str, context: ToolContext) -> str:
        """Transfer the caller."""
        seen.append((department, context.session_id, context.turn_id))
        return "ok"

    assert list(transfer.schema["function"]["parameters"]["properties"]) == ["department"]
    assert end_call.schema["function"]["parameters"]["properties"] == {}
    events = EventBus("s1")
    runtime = SessionRuntime("s1", SessionClock(), events, MetricsTracker(events))
    context = ToolContext(runtime, 3)
    assert asyncio.run(transfer.invoke('{"department": "sales"}', context=context)) == ("ok", False)
    assert seen == [("sales", "s1", 3)]
    # Without a conversation to act on, the tool reports an error instead of running.
    result, error = asyncio.run(end_call.invoke("{}"))
    assert error and "conversation" in result
    assert runtime.hangup_reason is None
    assert asyncio.run(end_call.invoke("{}", context=context))[1] is False
    assert runtime.hangup_reason == "the agent ended the call"
