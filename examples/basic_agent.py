"""The smallest agent: instructions, and the embedded offline backends by default.

    voiceagent run examples/basic_agent.py --input examples/jfk.wav --output agent.wav
"""

from voiceagent import Agent

agent = Agent(
    instructions=(
        "You are a friendly voice assistant. Answer in one or two short sentences, "
        "in plain words without lists or symbols, because your reply is spoken aloud."
    ),
)
