"""Per-stage latency of the whole agent, in real time, through the file transport.

    python benchmarks/latency.py [--agent examples/basic_agent.py] [--data DIR] [--runs 3] [--json]

Every clip is played to the agent as a live microphone (speed 1), so the figures are what a
user would wait: per turn, end of speech to final transcript, to the end-of-turn decision,
LLM time to first token, TTS time to first audio and voice-to-voice (end of user speech to the
first agent audio played). Medians over all turns of all runs.
"""

from __future__ import annotations

import asyncio

from common import agent_benchmark, emit, median, ms

from voiceagent.audio import load_audio
from voiceagent.runner import converse_with_file

STAGES = ("stt_final", "end_of_turn", "llm_ttft", "tts_ttfa", "voice_to_voice")


async def main() -> None:
    args, selected, agent, backends = agent_benchmark(__doc__)
    turns, per_clip = [], []
    for clip in selected:
        audio = load_audio(clip.path)
        clip_turns = []
        for _ in range(max(1, args.runs)):
            result = await converse_with_file(agent, audio, backends=backends, max_tail=30)
            clip_turns += [m.model_dump() for m in result.metrics]
        turns += clip_turns
        per_clip.append({"clip": clip.name, "turns": len(clip_turns),
                         **{s: median([t[s] for t in clip_turns]) for s in STAGES}})
    figures = {
        "runs": args.runs, "turns": len(turns),
        "median": {s: median([t[s] for t in turns]) for s in STAGES},
        "clips": per_clip,
    }

    lines = [f"{'clip (median ms)':48} {'turns':>5} " + " ".join(f"{s[:7]:>7}" for s in STAGES)]
    for row in per_clip:
        cells = " ".join(ms(row[s]) for s in STAGES)
        lines.append(f"{row['clip']:48} {row['turns']:5} {cells}")
    cells = " ".join(ms(figures["median"][s]) for s in STAGES)
    lines.append(f"{'ALL':48} {len(turns):5} {cells}")
    v2v = figures["median"]["voice_to_voice"]
    lines.append(f"\nvoice-to-voice median: {v2v * 1000:.0f} ms over {len(turns)} turns"
                 if v2v is not None else "\nno turn reached agent audio")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
