"""Turn-taking: end-of-turn delay against false cut-offs for the learned model, the hybrid
endpointer, Smart Turn alone and VAD only; and the barge-in stop latency.

    python benchmarks/turn_taking.py [--data DIR] [--clips ...] [--runs 3] [--telephone]
        [--noise SNR_DB] [--no-barge-in] [--json]

Test set (voiceagent_eval.turn_eval): every clip whole with silence after it (complete turns), and
split at word boundaries with 0.5/1.0/1.5 s of silence inserted mid-sentence (unfinished
turns). Each pause is measured with the real models (their scores and latencies on this
machine); each policy is then replayed over the measurements, at its default and over a sweep
of its one parameter (the model's threshold, the hybrid's score bounds, Smart Turn's bound,
the VAD's silence), which gives the curve in the style of LiveKit's eot-bench: the fewest
false cut-offs within a 300 ms and a 600 ms median delay, and the shortest median delay
within 5 % and 10 % false cut-offs. Barge-in: a real session answers a clip; once the agent
has talked for 1 s a second clip is spoken over it; the latency runs from the user's speech
onset to the agent's audio going silent, and to the interruption being confirmed.
``--ceiling`` adds the completeness model's score to every pause and prints an upper bound: the
most complete turns any weighted sum of the three scores could end within 0.25 / 0.6 s with at
most one false cut-off, fitted on the cases themselves.
``--telephone`` passes every clip through a phone line (8 kHz G.711 mu-law) first, as the
SIP bridge hears it; ``--noise`` adds pink noise at that SNR to the whole case, pauses included.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from common import clips, emit, median, ms, parser

from training.turn.augment import add_noise, phone_line
from voiceagent import Agent, registry
from voiceagent.agent import EndpointingOptions
from voiceagent.audio import load_audio
from voiceagent.events import BargeInEvent, UserSpeakingEvent
from voiceagent.session import AgentSession, resolve_backends
from voiceagent.transports.file import FileAudioOutput
from voiceagent.turn_model import TurnModel
from voiceagent_eval.turn_eval import (
    ScriptedUserInput,
    build_cases,
    curve,
    cutoffs_within,
    delay_within,
    evaluate,
    measure_pauses,
    signal_ceiling,
    silent_from,
)

LATENCIES = ("audio_latency", "decode_latency")
BOUNDS = tuple(np.round(np.arange(0.30, 0.996, 0.01), 3))
VAD_TIMEOUTS = tuple(np.round(np.arange(0.2, 2.01, 0.05), 2))


def policies(base: EndpointingOptions) -> dict[str, list[tuple[float, EndpointingOptions]]]:
    """Each policy's sweep of its one parameter (the default is replayed separately)."""
    def hybrid(bound: float, **update) -> EndpointingOptions:
        return base.model_copy(update={"mode": "hybrid", "complete_score": bound,
                                       "incomplete_score": bound - 0.01, **update})

    return {
        "model": [(t, base.model_copy(update={"mode": "model", "model_threshold": t}))
                  for t in BOUNDS],
        "hybrid": [(b, hybrid(b)) for b in BOUNDS],
        "smart_turn": [(b, hybrid(b, audio_weight=1.0, confident_audio=b)) for b in BOUNDS],
        "vad": [(t, base.model_copy(update={"mode": "vad", "silence_timeout": t}))
                for t in VAD_TIMEOUTS],
    }


def defaults(base: EndpointingOptions) -> dict[str, EndpointingOptions]:
    return {"model": base.model_copy(update={"mode": "model"}),
            "hybrid": base.model_copy(update={"mode": "hybrid"}),
            "smart_turn": base.model_copy(update={"mode": "hybrid", "audio_weight": 1.0,
                                                  "confident_audio": 0.5, "complete_score": 0.5,
                                                  "incomplete_score": 0.49}),
            "vad": base.model_copy(update={"mode": "vad"})}


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
    p.add_argument("--noise", type=float, metavar="SNR_DB",
                   help="add noise at this signal-to-noise ratio (dB)")
    p.add_argument("--ceiling", action="store_true",
                   help="also score each pause with the completeness model and print the most "
                        "complete turns any weighted sum of the three scores could end within "
                        "0.25 / 0.6 s at one false cut-off, fitted on these cases (a bound)")
    args = p.parse_args()
    rng = np.random.default_rng(0)

    def channel(audio: np.ndarray) -> np.ndarray:
        if args.noise is not None:
            audio = add_noise(audio, args.noise, rng, kind="pink")
        return phone_line(audio) if args.telephone else audio

    selected = clips(args)
    base = EndpointingOptions()
    model = TurnModel.load()
    stt = registry.get("stt", "whisper")
    vad = registry.get("vad", "silero")
    detector = registry.get("turn", "smart-turn")
    completeness = registry.get("completeness", "llamacpp") if args.ceiling else None

    t0 = time.perf_counter()
    measured = []
    for clip in selected:
        audio = load_audio(clip.path)
        words = stt.timed_words(channel(audio))
        for case in build_cases(clip.name, audio, words, clip.text):
            case.audio = channel(case.audio)  # the inserted pauses hear the noise too
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

    results = {}
    for name, sweep in policies(base).items():
        points = curve(measured, sweep, model)
        out = evaluate(measured, defaults(base)[name], model)
        results[name] = {
            "default": {"median_delay_s": out.median_delay, "p90_delay_s": out.p90_delay,
                        "false_cutoff_rate": round(out.cutoff_rate, 3),
                        "cutoffs": out.cutoffs, "splits": out.splits, "missed": out.missed,
                        "delays_s": [round(d, 3) for d in out.delays]},
            "cutoffs_at_300ms": cutoffs_within(points, 0.3),
            "cutoffs_at_600ms": cutoffs_within(points, 0.6),
            "delay_at_5pct": delay_within(points, 0.05),
            "delay_at_10pct": delay_within(points, 0.10),
            "curve": [vars(p) for p in points],
        }
    complete = [c.name for c, _ in measured if c.kind == "complete"]
    ceiling = ({f"within_{within}s": signal_ceiling(measured, within) for within in (0.25, 0.6)}
               if args.ceiling else None)

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
        "cases": len(measured), "complete": len(complete),
        "split": sum(c.kind == "split" for c, _ in measured), "pauses": len(all_pauses),
        **{f"median_{name}_s": median([getattr(p, name) for p in all_pauses])
           for name in LATENCIES},
        "complete_cases": complete, "policies": results,
        "barge_in": barge,
        "barge_in_median_onset_to_silent_s": median([b["onset_to_silent_s"] for b in barge]),
        "barge_in_median_onset_to_confirmed_s": median([b["onset_to_confirmed_s"]
                                                        for b in barge]),
        "measure_seconds": round(time.perf_counter() - t0, 1), "telephone": args.telephone,
        "noise_snr_db": args.noise, "signal_ceiling": ceiling,
    }

    def pct(rate: float | None) -> str:
        return f"{rate:6.1%}" if rate is not None else f"{'-':>6}"

    lines = [f"{figures['complete']} complete and {figures['split']} split cases, "
             f"{figures['pauses']} pauses; median model latency: audio "
             f"{ms(figures['median_audio_latency_s'], 6)} ms, transcript with its end "
             f"probability {ms(figures['median_decode_latency_s'], 6)} ms", "",
             "policy      | default: median  p90 (ms)  cut-offs | cut-offs within 300 / 600 ms "
             "| median delay within 5 % / 10 % cut-offs (ms)"]
    for name, r in results.items():
        d = r["default"]
        lines.append(f"{name:11s} | {ms(d['median_delay_s'], 6)} {ms(d['p90_delay_s'], 6)}  "
                     f"{pct(d['false_cutoff_rate'])} ({d['cutoffs']}/{d['splits']})"
                     f" | {pct(r['cutoffs_at_300ms'])} / {pct(r['cutoffs_at_600ms'])}"
                     f" | {ms(r['delay_at_5pct'], 6)} / {ms(r['delay_at_10pct'], 6)}")
    for name in ("model", "hybrid"):
        d = results[name]["default"]
        lines.append(f"\n{name} default, delay per complete turn (ms):")
        lines += [f"  {ms(delay, 6)}  {clip}" for clip, delay in zip(complete, d["delays_s"])]
    if ceiling is not None:
        lines.append(f"\nat best (any weighted sum of the three scores, fitted here, one false "
                     f"cut-off): {ceiling['within_0.25s']} of {len(complete)} complete turns "
                     f"within 0.25 s, {ceiling['within_0.6s']} within 0.6 s")
    for b in barge:
        lines.append(f"barge-in {b['clip']}: onset->silent {ms(b['onset_to_silent_s'], 6)} ms, "
                     f"onset->confirmed {ms(b['onset_to_confirmed_s'], 6)} ms")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
