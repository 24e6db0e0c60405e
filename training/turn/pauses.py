"""Measure the pauses of synthetic turns with the real models: the end-of-turn model's
training set.

    python -m training.turn.pauses --data DIR [DIR ...] --out pauses.pkl [--limit N]

Each synthetic utterance (``synth.py``'s manifest: audio with Whisper's word timings) goes
through a random channel (clean, a G.711 phone line, noise at 5-20 dB SNR, a reverberant
room), then becomes a complete turn and turns split at a word with a pause of 0.3-2.5 s
inserted (:func:`voiceagent_eval.turn_eval.build_cases`). Every pause the VAD finds is scored by
the models the endpointer runs (Smart Turn, Whisper's decode with its end probability) and
its prosody measured (:func:`voiceagent_eval.turn_eval.measure_pauses`), exactly as the benchmark
does on real recordings. Only synthetic speech goes in: the real clips are evaluation data.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voiceagent import registry
from voiceagent.agent import EndpointingOptions
from voiceagent.audio import load_audio
from voiceagent_eval.turn_eval import Case, Pause, build_cases, measure_pauses

from .augment import add_noise, phone_line, reverb

CHANNELS = ("clean", "phone", "noise", "reverb")
CHANNEL_WEIGHTS = (0.35, 0.25, 0.25, 0.15)


@dataclass(frozen=True)
class _Word:
    text: str
    start: float
    end: float


@dataclass
class MeasuredCase:
    case: Case
    pauses: list[Pause]
    voice: str
    channel: str
    #: the speaker is done where the utterance ends (False: it trails off, "eggs, milk and")
    complete: bool = True


def apply_channel(audio: np.ndarray, channel: str, rng: np.random.Generator,
                  babble: list[np.ndarray]) -> np.ndarray:
    """A whole case through the channel (its pauses get the same noise as its speech)."""
    if channel == "phone":
        return phone_line(audio)
    if channel == "noise":
        return add_noise(audio, float(rng.uniform(5, 20)), rng, sources=babble)
    if channel == "reverb":
        return reverb(audio, rng)
    return audio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", nargs="+", required=True, help="synth.py output folders")
    p.add_argument("--out", required=True)
    p.add_argument("--limit", type=int, default=0, help="at most this many utterances")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shard", default="0/1", metavar="K/N",
                   help="measure only every N-th utterance from the K-th (parallel runs)")
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    opts = EndpointingOptions()
    stt = registry.get("stt", "whisper")
    vad = registry.get("vad", "silero")
    detector = registry.get("turn", "smart-turn")
    rows = [(Path(d), json.loads(line)) for d in args.data
            for line in (Path(d) / "manifest.jsonl").read_text().splitlines()
            if line.endswith("}")]  # a manifest still being written may end mid-line
    rows = [(d, r) for d, r in rows if r.get("kind", "turn") == "turn"]
    shard, shards = (int(k) for k in args.shard.split("/"))
    rows = rows[shard::shards]
    order = rng.permutation(len(rows))
    if args.limit:
        order = order[:args.limit]
    babble = [load_audio(d / r["file"]) for d, r in (rows[i] for i in order[-24:])]
    measured: list[MeasuredCase] = []
    t0 = time.perf_counter()
    for n, i in enumerate(order):
        folder, row = rows[i]
        channel = str(rng.choice(CHANNELS, p=CHANNEL_WEIGHTS))
        audio = load_audio(folder / row["file"])
        words = [_Word(str(w), float(s), float(e)) for w, s, e in row["words"]]
        gaps = tuple(float(g) for g in rng.uniform(0.3, 2.5, size=2))
        for case in build_cases(f"{folder.name}/{row['file']}", audio, words, row["text"],
                                splits=2, gaps=gaps):
            case.audio = apply_channel(case.audio, channel, rng, babble)
            pauses = measure_pauses(case, vad, stt, detector, None, opts)
            measured.append(MeasuredCase(case, pauses, row.get("voice", "?"), channel,
                                         bool(row.get("complete", True))))
        if (n + 1) % 50 == 0:
            print(f"{n + 1}/{len(order)} utterances, {len(measured)} cases, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            _save(args.out, measured)
    _save(args.out, measured)
    print(f"{len(measured)} cases, {sum(len(m.pauses) for m in measured)} pauses -> {args.out}")


def _save(path: str, measured: list[MeasuredCase]) -> None:
    for m in measured:  # the audio is not needed any more, and it is most of the size
        m.case.audio = m.case.audio[:0]
    tmp = Path(f"{path}.tmp")
    tmp.write_bytes(pickle.dumps(measured))
    tmp.replace(path)


if __name__ == "__main__":
    main()
