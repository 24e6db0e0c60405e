"""Run a LiveKit AgentSession with voiceagent's plugins on a recording, with no server.

    python examples/livekit/offline_session.py --input examples/jfk.wav --output reply.wav

The recording plays as a live microphone (in real time); the output file holds what the
user would have heard, on the recording's timeline; each user turn and agent reply is
printed on its own line.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent import INSTRUCTIONS, Assistant, build_session

from voiceagent.audio import PIPELINE_RATE, load_audio, write_wav
from voiceagent_plugins.livekit.offline import converse


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="the user's audio (WAV/FLAC/OGG)")
    parser.add_argument("--output", help="write what the user heard here (WAV, 16 kHz)")
    parser.add_argument("--instructions", default=INSTRUCTIONS)
    parser.add_argument("--replies", type=int, default=1,
                        help="agent replies to wait for after the recording (default 1)")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    samples = load_audio(args.input)
    result = await converse(build_session(), Assistant(args.instructions), samples,
                            replies=args.replies, timeout=args.timeout)
    for role, text, interrupted in result.items:
        who = "user: " if role == "user" else "agent:"
        print(f"{who} {text}{' [interrupted]' if interrupted else ''}")
    if args.output:
        write_wav(args.output, result.audio, PIPELINE_RATE)
    return 0 if result.agent else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
