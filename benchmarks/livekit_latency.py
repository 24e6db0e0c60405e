"""Voice-to-voice latency of a LiveKit AgentSession on voiceagent's plugins against voiceagent's
own session, on the same clips, the same models and the same instructions.

    python benchmarks/livekit_latency.py [--clips NAME ...] [--runs 2] [--json]

Both sessions hear each clip as a live microphone in real time, and both are timed the same
way, from what the user heard: from the end of the clip's speech (voiceagent's VAD on the
clip) to the first 20 ms of agent audio louder than -45 dBFS. Needs voiceagent[livekit].
"""

from __future__ import annotations

import asyncio

import numpy as np
from common import add_agent_arguments, agent_from, clips, emit, median, ms, parser

from voiceagent import registry
from voiceagent.agent import EndpointingOptions
from voiceagent.audio import PIPELINE_RATE, load_audio, rms_dbfs
from voiceagent.runner import converse_with_file
from voiceagent.session import resolve_backends

#: one utterance each: a single reply to time
DEFAULT_CLIPS = ["harvard_sb_spk1_snt1", "harvard_sb_spk1_snt3", "harvard_sb_spk1_snt5",
                 "timit_ldc93s1", "azure_whats_the_weather_like", "new_home_in_the_stars"]
FRAME = 320


def speech_end(samples: np.ndarray) -> float:
    """Where the clip's last speech ends (seconds), as voiceagent's VAD hears it."""
    from voiceagent_plugins.livekit.speech import SpeechTracker

    tracker = SpeechTracker(registry.get("vad", "silero"), EndpointingOptions())
    end = 0.0
    for window in tracker.feed(np.concatenate([samples, np.zeros(PIPELINE_RATE, np.float32)])):
        if window.changed_at is not None and not tracker.speaking:
            end = window.changed_at
    return end


def first_reply_audio(audio: np.ndarray, after: float) -> float | None:
    """When the first loud 20 ms of agent audio after ``after`` seconds begins."""
    for i in range(int(after * PIPELINE_RATE) // FRAME * FRAME, len(audio) - FRAME, FRAME):
        if rms_dbfs(audio[i:i + FRAME]) > -45:
            return i / PIPELINE_RATE
    return None


async def main() -> None:
    p = parser(__doc__.split("\n")[0])
    add_agent_arguments(p)
    p.set_defaults(clips=DEFAULT_CLIPS, runs=2)
    args = p.parse_args()
    selected = clips(args)
    agent = agent_from(args)
    backends = resolve_backends(agent)

    from livekit.agents import Agent as LiveKitAgent
    from livekit.agents import AgentSession

    from voiceagent_plugins import livekit as va
    from voiceagent_plugins.livekit.offline import converse

    def livekit_session() -> AgentSession:
        opts = agent.options.endpointing
        return AgentSession(vad=va.VAD(), stt=va.STT(), llm=va.LLM(), tts=va.TTS(),
                            turn_handling={"turn_detection": va.TurnDetector(), "endpointing": {
                                "min_delay": opts.complete_silence,
                                "max_delay": opts.incomplete_silence}},
                            aec_warmup_duration=None)

    livekit_session()  # load the LiveKit side's models (the completeness scorer) first
    rows, ours_all, theirs_all = [], [], []
    for clip in selected:
        samples = load_audio(clip.path)
        end = speech_end(samples)
        ours, theirs = [], []
        for _ in range(max(1, args.runs)):
            mine = await converse_with_file(agent, samples, backends=backends, max_tail=15)
            start = first_reply_audio(mine.audio, end)
            ours.append(None if start is None else start - end)
            lk = await converse(livekit_session(), LiveKitAgent(instructions=agent.instructions),
                                samples, timeout=60)
            start = first_reply_audio(lk.audio, end)
            theirs.append(None if start is None else start - end)
        ours_all += ours
        theirs_all += theirs
        rows.append({"clip": clip.name, "voiceagent": median(ours), "livekit": median(theirs)})
    figures = {"runs": args.runs, "voiceagent": median(ours_all), "livekit": median(theirs_all),
               "clips": rows}
    lines = [f"{'clip (voice-to-voice, median ms)':44} {'voiceagent':>10} {'livekit':>10}"]
    lines += [f"{r['clip']:44} {ms(r['voiceagent'], 10)} {ms(r['livekit'], 10)}" for r in rows]
    lines.append(f"{'ALL':44} {ms(figures['voiceagent'], 10)} {ms(figures['livekit'], 10)}")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
