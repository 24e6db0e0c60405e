"""Handoffs and tasks: the workflow's state logic on fake backends (milliseconds per test).

The real-model evidence is tests/test_workflow_e2e.py; here the LLM is scripted, so each test
says exactly which tool is called when, and checks who holds the conversation, what each
agent's context holds, the events, and the state after an interruption.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel, Field

from voiceagent import Agent, AgentOptions, AgentTask, EndpointingOptions, Handoff, ToolContext
from voiceagent import function_tool
from voiceagent.backends import ToolCall
from voiceagent.events import AgentEnteredEvent, AgentLeftEvent
from voiceagent.testing import Conversation, LoudnessVAD, ScriptedLLM, ScriptedSTT, ToneTTS

VAD_MODE = AgentOptions(endpointing=EndpointingOptions(mode="vad"))


def call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(f"call_{name}", name, json.dumps(arguments))


def conversation(agent: Agent, llm: ScriptedLLM, tts: ToneTTS | None = None) -> Conversation:
    return Conversation(agent, speed=4.0, turn_timeout=10, backends={
        "vad": LoudnessVAD(), "stt": ScriptedSTT(), "llm": llm, "tts": tts or ToneTTS()})


booking = Agent("You take table bookings.", name="booking", options=VAD_MODE)


@function_tool
def transfer_to_booking() -> Agent:
    """Hand the caller to the booking desk."""
    return booking


receptionist = Agent("You are the receptionist.", name="receptionist",
                     tools=[transfer_to_booking], options=VAD_MODE)


async def test_a_tool_that_returns_an_agent_hands_over_with_the_conversation():
    llm = ScriptedLLM([call("transfer_to_booking")], "Booking desk here. For how many?")
    async with conversation(receptionist, llm) as chat:
        turn = await chat.say_text("I would like to book a table for four.")
        assert chat.session.agent is booking
        history = list(chat.session.context.history)
    assert turn.handoffs == ["booking"] and turn.agent == "booking"
    assert turn.called("transfer_to_booking")[0].result == "The conversation is now with booking."
    assert turn.reply_text == "Booking desk here. For how many?"
    # the second round of the same reply was the booking agent's: its instructions and tools
    assert llm.calls[1][0].content == "You take table bookings."
    assert llm.tools == [["transfer_to_booking"], []]
    # carried over: the user's words (not the receptionist's tool call), then its own reply
    assert [(m.role, m.content) for m in history] == [
        ("user", "I would like to book a table for four."),
        ("assistant", "Booking desk here. For how many?")]
    left = [e for e in turn.events if isinstance(e, AgentLeftEvent)]
    entered = [e for e in turn.events if isinstance(e, AgentEnteredEvent)]
    assert [(e.agent, e.to, e.reason) for e in left] == [("receptionist", "booking", "handoff")]
    assert [(e.agent, e.previous, e.carry_over) for e in entered] == [
        ("booking", "receptionist", "all")]


async def test_a_summary_or_only_a_note_carries_over_as_the_developer_chooses():
    quiet = Agent("You take bookings.", name="quiet", greeting="Booking desk.", options=VAD_MODE)

    @function_tool
    def summarised() -> Handoff:
        """Hand over with a summary."""
        return Handoff(quiet, carry_over="summary", note="VIP caller.")

    agent = Agent("Receptionist.", tools=[summarised], options=VAD_MODE)
    llm = ScriptedLLM([call("summarised")], "The user wants a table for four at eight.")
    async with conversation(agent, llm) as chat:
        turn = await chat.say_text("A table for four at eight, please.")
        context = chat.session.context
    # the summary is the LLM's, asked with the conversation; the greeting ends the reply
    assert "A table for four at eight, please." in llm.calls[1][1].content
    assert context.instructions == ("You take bookings.\n\nSummary of the conversation so far: "
                                    "The user wants a table for four at eight.\n\nVIP caller.")
    assert [m.content for m in context.history] == ["Booking desk."]
    assert turn.reply_text == "Booking desk." and len(llm.calls) == 2

    nothing = Agent("Fresh start.", name="fresh", carry_over="none", options=VAD_MODE)
    llm = ScriptedLLM()
    async with conversation(Agent("First.", options=VAD_MODE), llm) as chat:
        await chat.say_text("Hello.")
        await chat.session.update_agent(nothing, note="The caller said hello.")
        assert chat.session.agent is nothing
        assert chat.session.context.history == []
        assert chat.session.context.instructions == "Fresh start.\n\nThe caller said hello."


class PhoneNumber(BaseModel):
    digits: str = Field(pattern=r"^[0-9]{7,15}$", description="the digits only")


collect_phone = AgentTask(PhoneNumber, "Ask for the phone number, digit by digit.",
                          name="collect_phone", greeting="What is your phone number?",
                          options=VAD_MODE)
results: list[PhoneNumber] = []


@function_tool
async def take_phone(context: ToolContext) -> str:
    """Collect the caller's phone number."""
    phone = await context.run_task(collect_phone)
    results.append(phone)
    return f"The phone number is {phone.digits}."


async def test_a_task_returns_its_typed_result_to_the_tool_that_started_it():
    results.clear()
    caller = Agent("You book tables.", name="booking", tools=[take_phone], tool_choice="take_phone",
                   options=VAD_MODE)
    llm = ScriptedLLM(
        [call("take_phone")],                                   # booking starts the task
        [call("complete", digits="55 51")],                     # invalid: the task goes on
        "Sorry, all the digits please?",
        [call("complete", digits="5551234")],                   # valid: back to booking
        "Thank you, I have 5 5 5 1 2 3 4.")
    async with conversation(caller, llm) as chat:
        first = await chat.say_text("Book me a table.")
        assert chat.session.agent is collect_phone
        second = await chat.say_text("five five, five one")
        assert chat.session.agent is collect_phone and not results
        third = await chat.say_text("five five five one two three four")
        history = list(chat.session.context.history)
    assert first.reply_text == "What is your phone number?"
    assert first.handoffs == ["collect_phone"] and not first.called("take_phone")
    assert second.called("complete")[0].error
    assert "digits" in second.called("complete")[0].result
    assert results == [PhoneNumber(digits="5551234")]
    assert third.handoffs == ["booking"] and third.agent == "booking"
    assert third.called("take_phone")[0].result == "The phone number is 5551234."
    assert third.reply_text == "Thank you, I have 5 5 5 1 2 3 4."
    # the caller's conversation: its tool call, then (once the task returned) the result
    assert [(m.role, m.content) for m in history] == [
        ("user", "Book me a table."), ("assistant", ""),
        ("tool", "The phone number is 5551234."),
        ("assistant", "Thank you, I have 5 5 5 1 2 3 4.")]
    # the caller spoke again with its own instructions and the tool's result in view
    assert llm.calls[-1][0].content == "You book tables."
    assert llm.calls[-1][-1].role == "tool"
    # its tool_choice forced its first round, not the round after the task returned
    assert llm.tool_choices == ["take_phone", None, None, None, None]


async def test_a_task_cannot_hand_the_conversation_elsewhere():
    elsewhere = Agent("Elsewhere.", name="elsewhere", options=VAD_MODE)

    @function_tool
    def escape() -> Agent:
        """Leave."""
        return elsewhere

    task = AgentTask(PhoneNumber, "Collect.", name="task", tools=[escape], greeting="Number?",
                     options=VAD_MODE)

    @function_tool
    async def start(context: ToolContext) -> str:
        """Start the task."""
        return (await context.run_task(task)).digits

    llm = ScriptedLLM([call("start")], [call("escape")], "Please say the number.")
    async with conversation(Agent("Caller.", tools=[start], options=VAD_MODE), llm) as chat:
        await chat.say_text("Hi.")
        turn = await chat.say_text("Go elsewhere.")
        assert chat.session.agent is task
    assert turn.called("escape")[0].error
    assert "must complete" in turn.called("escape")[0].result


async def test_an_interruption_before_the_handoff_is_made_leaves_the_first_agent():
    """The summary is being written when the user interrupts: the handoff never happens,
    and the first agent's conversation keeps no tool call without its result."""
    hold = asyncio.Event()
    target = Agent("Target.", name="target", carry_over="summary", options=VAD_MODE)

    @function_tool
    def go() -> Agent:
        """Hand over."""
        return target

    first = Agent("First.", name="first", tools=[go], options=VAD_MODE)
    llm = ScriptedLLM([call("go")], [hold, "never"])
    async with conversation(first, llm) as chat:
        await chat.session.send_text("Transfer me.")
        while len(llm.calls) < 2:  # the summary request is out
            await asyncio.sleep(0.01)
        await chat.session.interrupt()
        assert await chat.settle(5)
        assert chat.session.agent is first
        assert [m.role for m in chat.session.context.history] == ["user"]
        assert not [e for e in chat.events if isinstance(e, AgentEnteredEvent)]


async def test_an_interruption_during_the_new_agents_greeting_keeps_the_new_agent():
    """Once handed over, the new agent holds the conversation; its cut greeting keeps only
    the words heard, in its own context; one reply, one owner, nothing left active."""
    target = Agent("Target.", name="target", options=VAD_MODE,
                   greeting="Hello, this is the booking desk, how many people will be coming "
                            "to dinner tonight and at what time would you like the table?")

    @function_tool
    def go() -> Agent:
        """Hand over."""
        return target

    first = Agent("First.", name="first", tools=[go], options=VAD_MODE)
    async with conversation(first, ScriptedLLM([call("go")]),
                            ToneTTS(seconds_per_word=0.3)) as chat:
        await chat.session.send_text("Transfer me.")
        while chat.session.replies.agent_state != "speaking":
            await asyncio.sleep(0.01)
        reply = chat.session.replies.active[0]
        await chat.session.interrupt()
        assert await reply.wait_for_playout() == "interrupted"
        assert await chat.settle(5)
        assert chat.session.agent is target and not chat.session.replies.active
        said = [m for m in chat.session.context.history if m.role == "assistant"]
    assert len(said) <= 1
    if said:
        assert said[0].content == reply.heard_text and len(said[0].content) < len(target.greeting)


def test_tool_choice_must_name_one_of_the_agents_tools():
    with pytest.raises(ValueError, match="not one of the agent's tools"):
        Agent("x", tools=[transfer_to_booking], tool_choice="transfer")
    assert Agent("x", tools=[transfer_to_booking], tool_choice="required").tool_choice


async def test_tool_choice_is_forced_on_the_agents_first_round_only():
    forced = Agent("Forced.", name="forced", tools=[transfer_to_booking],
                   tool_choice="transfer_to_booking", options=VAD_MODE)
    llm = ScriptedLLM([call("transfer_to_booking")], "Booking here.")
    async with conversation(forced, llm) as chat:
        await chat.say_text("Hi.")
    assert llm.tool_choices == ["transfer_to_booking", None]


async def test_an_interruption_while_a_task_is_being_prepared_leaves_the_caller_in_charge():
    """Before the task holds the conversation its tool is an ordinary call: interrupted, it
    is cancelled, the task never starts and no half-made call stays in the context."""
    hold = asyncio.Event()
    task = AgentTask(PhoneNumber, "Collect.", name="task", carry_over="summary",
                     greeting="Number?", options=VAD_MODE)

    @function_tool
    async def start(context: ToolContext) -> str:
        """Start the task."""
        return (await context.run_task(task)).digits

    caller = Agent("Caller.", name="caller", tools=[start], options=VAD_MODE)
    llm = ScriptedLLM([call("start")], [hold, "never"])
    async with conversation(caller, llm) as chat:
        await chat.session.send_text("Book me in.")
        while len(llm.calls) < 2:  # the task's summary is being written
            await asyncio.sleep(0.01)
        await chat.session.interrupt()
        assert await chat.settle(5)
        assert chat.session.agent is caller
        assert [m.role for m in chat.session.context.history] == ["user"]
        assert not chat.session.workflow._callers


async def test_the_calls_of_one_round_are_the_agents_that_made_them_after_a_handoff():
    noted: list[str] = []

    @function_tool
    def note(text: str) -> str:
        """Note something for the booking."""
        noted.append(text)
        return "noted"

    desk = Agent("Desk.", name="desk", tools=[transfer_to_booking, note], options=VAD_MODE)
    llm = ScriptedLLM([call("transfer_to_booking"), call("note", text="window seat")], "Hi.")
    async with conversation(desk, llm) as chat:
        turn = await chat.say_text("A window seat, please.")
    assert noted == ["window seat"] and not turn.called("note")[0].error
    assert turn.agent == "booking"
