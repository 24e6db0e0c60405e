"""Streaming STT accuracy and speed: word error rate per clip and pooled, real-time factor.

    python benchmarks/asr_wer.py --stt whisper [--data DIR] [--runs 3] [--json]

Each clip is pushed in 20 ms pieces as a microphone would deliver it (partials decoded on the
way), then finished. The real-time factor is decode time over audio time (lower is faster);
``finish_after_pause`` is the time from the end of speech to the final transcript when the
stream has already decoded at the pause, as the session does.
"""

from __future__ import annotations

import asyncio
import time

from common import clips, emit, median, parser

from voiceagent import registry
from voiceagent.audio import load_audio
from voiceagent.loader import parse_options
from voiceagent_eval.wer import pooled_wer, word_error_rate

PIECE = 320  # 20 ms at 16 kHz


async def run_clip(stt, audio) -> dict:
    stream = stt.stream()
    partials = 0
    t0 = time.perf_counter()
    for i in range(0, len(audio), PIECE):
        partials += (await stream.push(audio[i:i + PIECE])) is not None
    t_pause = time.perf_counter()
    await stream.pause()
    t_finish = time.perf_counter()
    final = await stream.finish()
    t_end = time.perf_counter()
    await stream.aclose()
    return {"text": final.text, "partials": partials, "compute": t_end - t0,
            "pause_decode": t_finish - t_pause, "finish_after_pause": t_end - t_finish}


async def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--stt", default="whisper", help="STT backend name (default whisper)")
    p.add_argument("--stt-option", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    selected = clips(args)
    stt = registry.get("stt", args.stt, **parse_options(args.stt_option))
    rows, pairs = [], []
    for clip in selected:
        audio = load_audio(clip.path)
        runs = [await run_clip(stt, audio) for _ in range(max(1, args.runs))]
        text = runs[0]["text"]
        pairs.append((clip.text, text))
        rows.append({
            "clip": clip.name, "seconds": round(len(audio) / 16000, 2),
            "wer": round(word_error_rate(clip.text, text), 4),
            "rtf": median([r["compute"] / (len(audio) / 16000) for r in runs]),
            "pause_decode_s": median([r["pause_decode"] for r in runs]),
            "finish_after_pause_s": median([r["finish_after_pause"] for r in runs]),
            "partials": runs[0]["partials"], "hypothesis": text,
        })
    figures = {
        "stt": args.stt, "runs": args.runs, "clips": rows,
        "pooled_wer": round(pooled_wer(pairs), 4),
        "median_rtf": median([r["rtf"] for r in rows]),
        "median_pause_decode_s": median([r["pause_decode_s"] for r in rows]),
    }
    lines = [f"{'clip':48} {'sec':>6} {'WER':>6} {'RTF':>6} {'pause':>6}  hypothesis"]
    for r in rows:
        lines.append(f"{r['clip']:48} {r['seconds']:6.2f} {r['wer']:6.3f} {r['rtf']:6.3f} "
                     f"{r['pause_decode_s']:6.3f}  {r['hypothesis'][:60]}")
    lines.append(f"\npooled WER {figures['pooled_wer']:.3f}   median RTF "
                 f"{figures['median_rtf']:.3f}   median decode at pause "
                 f"{figures['median_pause_decode_s']:.3f} s   ({args.stt}, {args.runs} runs)")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
