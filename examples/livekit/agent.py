"""A LiveKit agent on voiceagent's offline models: no provider account, nothing downloaded.

Runs like any LiveKit agent (a LiveKit server or LiveKit Cloud, credentials in the
environment as LiveKit documents)::

    python examples/livekit/agent.py dev

and on a recording with no server at all: ``examples/livekit/offline_session.py``.
"""

from __future__ import annotations

from livekit.agents import Agent, AgentServer, AgentSession, JobContext, JobProcess, cli
from livekit.agents.llm import function_tool

from voiceagent_plugins import livekit as va

INSTRUCTIONS = ("You are a friendly voice assistant. Answer in one or two short sentences, "
                "with no lists or special characters.")


class Assistant(Agent):
    def __init__(self, instructions: str = INSTRUCTIONS) -> None:
        super().__init__(instructions=instructions)

    @function_tool
    async def what_time_is_it(self) -> str:
        """Tell the current time."""
        from datetime import datetime

        return datetime.now().strftime("It is %H:%M.")


def build_session() -> AgentSession:
    """An AgentSession on voiceagent's models. The models load once per process (the
    registry shares them), so every session after the first starts at once."""
    return AgentSession(
        vad=va.VAD(), stt=va.STT(), llm=va.LLM(), tts=va.TTS(),
        turn_handling={
            # voiceagent's completeness score decides between the two delays; LiveKit's
            # own turn-detector models are never loaded
            "turn_detection": va.TurnDetector(),
            "endpointing": {"min_delay": 0.2, "max_delay": 2.0},
        },
    )


def prewarm(proc: JobProcess) -> None:
    build_session()  # load the models before the first call comes in


server = AgentServer(setup_fnc=prewarm)


@server.rtc_session()
async def entrypoint(ctx: JobContext) -> None:
    await build_session().start(agent=Assistant(), room=ctx.room)


if __name__ == "__main__":
    cli.run_app(server)
