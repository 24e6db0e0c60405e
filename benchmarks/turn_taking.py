"""Turn-taking: end-of-turn delay and false cut-offs, VAD-only against the hybrid endpointer,
and the barge-in stop latency.

    python benchmarks/turn_taking.py [--data DIR] [--clips ...] [--runs 3] [--telephone]
        [--json]

Test set (voiceagent_eval.turn_eval): every clip whole with silence after it (complete
turns), and split at word boundaries with 0.5/1.0/1.5 s of silence inserted mid-sentence
(unfinished turns). Each pause is measured with the real models (their scores and latencies on this
machine); each policy setting is then replayed over the measurements. Barge-in: a real session
answers a clip; once the agent has talked for 1 s a second clip is spoken over it; the latency
runs from the user's speech onset to the agent's audio going silent, and to the interruption
being confirmed. ``--telephone`` first passes every clip through a phone line (8 kHz G.711
mu-law), as the SIP bridge hears it.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from common import clips, emit, median, ms, parser

from voiceagent import Agent, registry
from voiceagent.agent import EndpointingOptions
from voiceagent.audio import PIPELINE_RATE, load_audio, resample
from voiceagent.events import BargeInEvent, UserSpeakingEvent
from voiceagent.session import AgentSession, resolve_backends
from voiceagent.telephony.media import PCMU, TELEPHONE_RATE
from voiceagent.transports.file import FileAudioOutput
from voiceagent_eval.turn_eval import (
    ScriptedUserInput,
    build_cases,
    evaluate,
    measure_pauses,
    silent_from,
)

LATENCIES = ("audio_latency", "decode_latency", "completeness_latency")
VAD_TIMEOUTS = (0.3, 0.5, 0.7, 1.0, 1.3, 1.6, 2.0)
HYBRID_COMPLETE_SCORE = (0.92, 0.95, 0.97)
HYBRID_INCOMPLETE_SCORE = (0.5, 0.9, 0.94)
HYBRID_AUDIO_WEIGHT = (0.0, 0.02, 0.1)
TEXT_SIGNALS = ("stt", "completeness")


def phone_line(audio: np.ndarray) -> np.ndarray:
    """``audio`` as it reaches the agent over a call: 8 kHz mu-law, back at the pipeline rate."""
    narrow = PCMU.decode(PCMU.encode(resample(audio, PIPELINE_RATE, TELEPHONE_RATE)))
    return resample(narrow, TELEPHONE_RATE, PIPELINE_RATE)


def policy_rows(measured, base: EndpointingOptions) -> tuple[list[dict], list[dict]]:
    def row(opts: EndpointingOptions, **label) -> dict:
        out = evaluate(measured, opts)
        return {**label, "median_delay_s": None if out.median_delay is None
                else round(out.median_delay, 3),
                "false_cutoff_rate": round(out.cutoff_rate, 3), "cutoffs": out.cutoffs,
                "splits": out.splits, "missed": out.missed}

    vad = [row(base.model_copy(update={"mode": "vad", "silence_timeout": t}), silence_timeout=t)
           for t in VAD_TIMEOUTS]
    hybrid = [row(base.model_copy(update={"mode": "hybrid", "text_signal": s,
                                          "complete_score": c, "incomplete_score": i,
                                          "audio_weight": w}),
                  text_signal=s, complete_score=c, incomplete_score=i, audio_weight=w)
              for s in TEXT_SIGNALS for c in HYBRID_COMPLETE_SCORE
              for i in HYBRID_INCOMPLETE_SCORE if i < c for w in HYBRID_AUDIO_WEIGHT]
    return vad, hybrid


async def barge_in_once(agent: Agent, backends, first: np.ndarray, second: np.ndarray) -> dict:
    script = ScriptedUserInput(first, second, after=1.0)
    session = AgentSession(agent, script.node, lambda rt: FileAudioOutput(rt), backends=backends)
    events: list = []
    session.events.subscribe(events.append)
    await session.run(timeout=90)
    out = session.output.audio
    if script.second_at is None:
        return {}
    onset = next((e.ts for e in events if isinstance(e, UserSpeakingEvent) and e.speaking
                  and e.ts >= script.second_at - 0.1), None)
    confirmed = next((e.ts for e in events if isinstance(e, BargeInEvent)
                      and e.action == "interrupted" and e.ts >= script.second_at), None)
    if onset is None:
        return {}
    silent_at = silent_from(out, script.second_at, hold=0.2)
    return {"onset_to_silent_s": None if silent_at is None else round(silent_at - onset, 3),
            "onset_to_confirmed_s": None if confirmed is None else round(confirmed - onset, 3)}


async def main() -> None:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--no-barge-in", action="store_true", help="skip the real-time barge-in runs")
    p.add_argument("--telephone", action="store_true",
                   help="pass every clip through a phone line (8 kHz G.711 mu-law) first")
    args = p.parse_args()
    channel = phone_line if args.telephone else (lambda audio: audio)
    selected = clips(args)
    base = EndpointingOptions()
    stt = registry.get("stt", "whisper")
    vad = registry.get("vad", "silero")
    detector = registry.get("turn", "smart-turn")
    completeness = registry.get("completeness", "llamacpp")

    t0 = time.perf_counter()
    measured = []
    for clip in selected:
        audio = channel(load_audio(clip.path))
        words = stt.timed_words(audio)
        for case in build_cases(clip.name, audio, words, clip.text):
            runs = [measure_pauses(case, vad, stt, detector, completeness, base)
                    for _ in range(max(1, args.runs))]
            # Latencies vary run to run: keep the median latency per pause.
            pauses = runs[0]
            for k, pause in enumerate(pauses):
                for name in LATENCIES:
                    setattr(pause, name, float(np.median([getattr(r[k], name) for r in runs
                                                          if k < len(r)])))
            measured.append((case, pauses))
    all_pauses = [p for _, ps in measured for p in ps]
    vad_rows, hybrid_rows = policy_rows(measured, base)
    default = evaluate(measured, base)

    barge = []
    if not args.no_barge_in:
        agent = Agent("You are a storyteller. Always answer with a story of several sentences.")
        backends = resolve_backends(agent)
        shortest = min(selected, key=lambda c: c.seconds)
        question = channel(load_audio(shortest.path))  # one turn, so the agent answers it at once
        for clip in [c for c in selected if c is not shortest][:3]:
            result = await barge_in_once(agent, backends, question, channel(load_audio(clip.path)))
            if result:
                barge.append({"clip": clip.name, **result})

    figures = {
        "cases": len(measured), "complete": sum(c.kind == "complete" for c, _ in measured),
        "split": sum(c.kind == "split" for c, _ in measured), "pauses": len(all_pauses),
        **{f"median_{name}_s": median([getattr(p, name) for p in all_pauses])
           for name in LATENCIES},
        "default_hybrid": {"median_delay_s": default.median_delay,
                           # every delay: how far the median sits from the slow turns
                           "delays_s": sorted(round(d, 3) for d in default.delays),
                           "false_cutoff_rate": round(default.cutoff_rate, 3)},
        "vad_only": vad_rows, "hybrid": hybrid_rows,
        "barge_in": barge,
        "barge_in_median_onset_to_silent_s": median([b["onset_to_silent_s"] for b in barge]),
        "barge_in_median_onset_to_confirmed_s": median([b["onset_to_confirmed_s"]
                                                        for b in barge]),
        "measure_seconds": round(time.perf_counter() - t0, 1), "telephone": args.telephone,
    }

    lines = [f"{figures['complete']} complete and {figures['split']} split cases, "
             f"{figures['pauses']} pauses; median model latency: audio "
             f"{ms(figures['median_audio_latency_s'], 6)} ms, transcript with its end "
             f"probability {ms(figures['median_decode_latency_s'], 6)} ms, completeness model "
             f"after it {ms(figures['median_completeness_latency_s'], 6)} ms", "",
             "VAD-only: silence_timeout -> median end-of-turn delay (ms), false cut-offs"]
    for r in vad_rows:
        lines.append(f"  {r['silence_timeout']:4.1f} s  {ms(r['median_delay_s'], 6)}  "
                     f"{r['false_cutoff_rate']:6.1%} ({r['cutoffs']}/{r['splits']})")
    lines.append("hybrid: text signal, complete/incomplete score, audio weight -> median delay "
                 "(ms), false cut-offs")
    for r in hybrid_rows:
        lines.append(f"  {r['text_signal']:12s} "
                     f"{r['complete_score']:.2f}/{r['incomplete_score']:.2f} "
                     f"{r['audio_weight']:.2f}  "
                     f"{ms(r['median_delay_s'], 6)}  {r['false_cutoff_rate']:6.1%} "
                     f"({r['cutoffs']}/{r['splits']})")
    lines.append("default hybrid, delay per complete turn (ms): "
                 + " ".join(ms(d, 0) for d in sorted(default.delays)))
    lines.append(f"default hybrid: median delay {ms(default.median_delay, 6)} ms, false cut-offs "
                 f"{default.cutoff_rate:.1%}")
    for b in barge:
        lines.append(f"barge-in {b['clip']}: onset->silent {ms(b['onset_to_silent_s'], 6)} ms, "
                     f"onset->confirmed {ms(b['onset_to_confirmed_s'], 6)} ms")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
