"""A phone agent: greets the caller, takes keypad presses, and can hang up.

Answer SIP calls (from a softphone, a PBX or a SIP trunk; see docs/telephony.md):

    voiceagent sip examples/telephony/phone_agent.py --host 0.0.0.0 --port 5060

or serve Twilio Media Streams (and the browser page) from the same agent:

    voiceagent serve examples/telephony/phone_agent.py --port 8080

Keypad presses reach the LLM as "(The caller pressed 1 on the keypad.)" and are ``dtmf``
events in the event log. ``end_call`` lets the model end the call after its goodbye; the
embedded SmolLM2-135M rarely decides to call tools, so point the agent at a stronger
OpenAI-compatible model (``--llm openai --llm-option base_url=...``) to see it used.
"""

from voiceagent import Agent, AgentOptions, DTMFOptions, end_call

agent = Agent(
    instructions=(
        "You are the receptionist of a small bakery, answering the phone. Answer in one or "
        "two short spoken sentences. Callers may press 1 for opening hours (seven to six, "
        "Monday to Saturday) or 2 to order a cake. When the caller says goodbye or has "
        "nothing more to ask, say goodbye and call end_call."
    ),
    greeting="Hello, you have reached the bakery. Press 1 for opening hours, or just ask.",
    tools=[end_call],
    options=AgentOptions(dtmf=DTMFOptions(inter_digit_timeout=1.0)),
)
