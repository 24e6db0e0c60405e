"""Luigi's restaurant: a receptionist hands bookings to a booking agent, which runs two typed
tasks: collect a phone number (digits read with pauses) and have the caller confirm it.

    receptionist ──transfer_to_booking──► booking ──take_phone_number──► collect_phone ─┐
                                            ▲                                           │
                                            │ "confirmed"   confirm_phone ◄── PhoneNumber
                                            └────────────── Confirmation ◄──┘

The same file runs over every transport (docs/workflows.md):

    voiceagent run examples/restaurant/agent.py --input examples/restaurant/clips/book_a_table.wav
    voiceagent serve examples/restaurant/agent.py      # browser: http://127.0.0.1:8080/
    voiceagent sip examples/restaurant/agent.py        # phone: sip:agent@127.0.0.1:5060
    voiceagent eval examples/restaurant/agent.py examples/restaurant/scenarios.yaml

Every agent forces its tool on its first LLM round (``tool_choice``) so that the embedded
SmolLM2-135M, which does not decide to call tools by itself, follows the flow: the
receptionist only routes bookings. With a stronger model (``--llm openai``) drop the
``tool_choice`` arguments and give the receptionist more to do.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

from voiceagent import Agent, AgentOptions, AgentTask, EndpointingOptions, ToolContext
from voiceagent import function_tool

SPOKEN_DIGITS = {"zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "to": "2",
                 "too": "2", "three": "3", "four": "4", "for": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9"}


class PhoneNumber(BaseModel):
    """A ten-digit (North American) phone number as digits only: "555 123-4567" and
    "five five five..." both count. The pattern also keeps a small model's forced call to
    ten digits (llama.cpp turns the schema into a grammar)."""

    digits: str = Field(pattern=r"^[0-9]{10}$", description="the ten digits only")

    @field_validator("digits", mode="before")
    @classmethod
    def _only_digits(cls, value: object) -> str:
        words = re.findall(r"[a-z]+|\d", str(value).lower())
        digits = "".join(SPOKEN_DIGITS.get(w, w if w.isdigit() else "") for w in words)
        if len(digits) != 10:
            raise ValueError(f"a phone number has 10 digits, got {len(digits)} in {value!r}")
        return digits

    @property
    def spoken(self) -> str:
        """Read back in groups of three: "5 5 5, 1 2 3, 4 5 6 7"."""
        head, tail = self.digits[:-4], self.digits[-4:]
        groups = [head[i:i + 3] for i in range(0, len(head), 3)] + [tail]
        return ", ".join(" ".join(g) for g in groups)


class Confirmation(BaseModel):
    correct: bool = Field(description="true if the caller said the number is right")


#: digits come with pauses between the groups: wait longer before taking the turn as over
PATIENT = AgentOptions(endpointing=EndpointingOptions(complete_silence=1.2,
                                                      incomplete_silence=3.0))


def collect_phone() -> AgentTask[PhoneNumber]:
    return AgentTask(
        PhoneNumber,
        "You collect the caller's phone number. Call complete with the digits the caller "
        "said, in the order they said them, without spaces.",
        name="collect_phone", tool_choice="complete", options=PATIENT,
        greeting="Sure. What phone number should we use? Take your time with the digits.")


def confirm_phone(phone: PhoneNumber) -> AgentTask[Confirmation]:
    return AgentTask(
        Confirmation,
        f"You read the phone number {phone.spoken} back to the caller. Call complete with "
        "correct true if they agree, false if they do not.",
        name="confirm_phone", tool_choice="complete",
        greeting=f"I have {phone.spoken}. Is that right?")


@function_tool
async def take_phone_number(context: ToolContext) -> str:
    """Collect the caller's phone number for the booking and have them confirm it."""
    for _ in range(3):
        phone = await context.run_task(collect_phone())
        if (await context.run_task(confirm_phone(phone))).correct:
            return (f"The phone number {phone.digits} is confirmed. Tell the caller their "
                    "table is booked.")
    return "No phone number was confirmed. Apologise and ask the caller to call back."


booking = Agent(
    "You take table bookings for Luigi's restaurant. Get the caller's phone number with "
    "take_phone_number, then tell them in one short sentence that the table is booked.",
    name="booking", tools=[take_phone_number], tool_choice="take_phone_number")


@function_tool
def transfer_to_booking() -> Agent:
    """Transfer the caller to the booking desk, for any table booking."""
    return booking


agent = Agent(
    "You are the receptionist of Luigi's restaurant. Transfer callers who want a table to "
    "the booking desk.",
    name="receptionist", tools=[transfer_to_booking], tool_choice="transfer_to_booking",
    greeting="Hello, Luigi's restaurant. How can I help you?")
