"""Synthesise the end-of-turn training set: clean speech with word timings, many voices.

    python -m training.turn.synth --out DIR --count N --seed S [--jobs 1]
        [--backchannels 0.1] [--families piper,flite,...]

Writes ``DIR/NNNNN.wav`` (16 kHz mono 16-bit) and a line per kept utterance in
``DIR/manifest.jsonl``: file, text, voice, family, kind (turn/backchannel), category, complete
(whether the speaker is done where the audio ends), rate, pitch, speech_start/end (s), the
Whisper transcript and ``words`` ([word, start_s, end_s], Whisper's word timings on this very
audio) and ``cuts`` (between each two words, the quietest point near their boundary: where to
cut or insert a pause). Utterance i is planned from (seed, i) alone,
families take turns (balanced), and a rerun resumes where the manifest stops, so a run can be
stopped at any time and its manifest stays consistent. Synthesis that Whisper does not
recognise as the text (a broken voice, a mangled word) is dropped and logged in
``DIR/dropped.jsonl``. The audio is clean: noise, phone line and reverb are applied at feature
time (training/turn/augment.py).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from training.turn import texts, voices
from voiceagent.text import normalize
from voiceagent_eval.wer import edit_distance

RATE = voices.RATE
MAX_MISMATCH = 0.35  # word error rate (numbers and fillers aside) above which a clip is broken
MAX_UNTIMED_TAIL_S = 0.4  # speech after the last kept word: real words cut off as hallucinated
# Whisper writes numbers as digits ("555-213") and drops fillers, so neither is compared
_APOSTROPHE = re.compile(r"\s+'")
_AM_PM = re.compile(r"\b([ap])\.?\s?m\b\.?", re.IGNORECASE)
_DIGIT_OF = {w: str(i) for i, w in enumerate(texts.DIGITS)} | {"oh": "0"}
_UNCOMPARED = set(texts.DIGITS + "oh ten eleven twelve thirteen fourteen fifteen sixteen "
                  "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
                  "ninety hundred thousand".split() + texts.FILLERS + ["mm", "er", "hmm"]
                  + [o for o in texts.ORDINALS if " " not in o])


@dataclass(frozen=True)
class Job:
    index: int
    text: str
    kind: str
    category: str
    complete: bool
    voice: str
    rate: float
    pitch: float
    lead_s: float   # silence kept before the speech
    tail_s: float   # and after it
    peak: float     # the clip's peak level


def plan(seed: int, count: int, names: dict[str, list[str]], backchannels: float) -> list[Job]:
    """Job i depends on (seed, i) and the voice list only."""
    turns = texts.turns(seed, count)
    chats = texts.backchannels()
    families = sorted(names)
    jobs = []
    for i in range(count):
        r = random.Random(f"{seed}:{i}")
        said = r.choice(chats) if r.random() < backchannels else turns[i]
        family = families[i % len(families)]
        jobs.append(Job(
            index=i, text=said.text, kind="backchannel" if said in chats else "turn",
            category=said.category, complete=said.complete, voice=r.choice(names[family]),
            rate=round(r.uniform(0.85, 1.2), 3), pitch=round(r.uniform(0.9, 1.12), 3),
            lead_s=round(r.uniform(0.1, 0.3), 3), tail_s=round(r.uniform(0.1, 0.3), 3),
            peak=round(r.uniform(0.3, 0.9), 3)))
    return jobs


def speech_bounds(audio: np.ndarray, frame: int = 160) -> tuple[int, int]:
    """First and last sample of speech: frames within 40 dB of the loudest 10 ms frame."""
    n = len(audio) // frame
    rms = np.sqrt(np.mean(audio[:n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(rms > rms.max() * 0.01)
    return int(loud[0]) * frame, (int(loud[-1]) + 1) * frame


def trimmed(audio: np.ndarray, job: Job) -> np.ndarray:
    """The speech with ``lead_s``/``tail_s`` of silence (the engine's own, or zeros)."""
    start, end = speech_bounds(audio)
    lead, tail = int(job.lead_s * RATE), int(job.tail_s * RATE)
    clip = audio[max(0, start - lead):end + tail]
    clip = np.concatenate([np.zeros(max(0, lead - start), np.float32), clip,
                           np.zeros(max(0, end + tail - len(audio)), np.float32)])
    return (clip * (job.peak / max(float(np.abs(clip).max()), 1e-6))).astype(np.float32)


def _digits(text: str) -> str:
    """The digits said or written, in order: "five oh 9-1" -> "5091"."""
    return "".join(_DIGIT_OF.get(t, t if t.isdigit() else "")
                   for t in re.findall(r"[a-z]+|\d", text.lower()))


def _spelled(text: str) -> str:
    """Whisper's way of writing some words ("o 'clock", "PM") as the texts write them."""
    return _AM_PM.sub(r"\1m", _APOSTROPHE.sub("'", text))


def mismatch(text: str, heard: str) -> float:
    """Word error rate of ``heard`` against ``text``, numbers and fillers left out; where
    ``text`` dictates digits, the digit sequences are compared as well."""
    text, heard = _spelled(text), _spelled(heard)
    ref = [w for w in normalize(text) if w not in _UNCOMPARED]
    hyp = [w for w in normalize(heard)
           if w not in _UNCOMPARED and not any(c.isdigit() for c in w)]
    edits, length = edit_distance(ref, hyp), len(ref)
    said = _digits(text)
    if len(said) >= 3:
        edits, length = edits + edit_distance(said, _digits(heard)), length + len(said)
    return edits / max(length, 1)


def without_hallucinated_tail(text: str, words: list) -> list:
    """Whisper tiny often adds "Thank you." (or repeats a word) after the speech: the longest
    prefix of the words that matches the text best is what was said."""
    scores = [mismatch(text, " ".join(w[0] for w in words[:k])) for k in range(len(words) + 1)]
    return words[:max(k for k, score in enumerate(scores) if score == min(scores))]


def cut_points(clip: np.ndarray, words: list, frame: int = 160) -> list[float]:
    """Between each two words, the quietest 10 ms near Whisper's boundary (its word times are
    only good to ~0.1 s): where to cut the clip or insert a pause without clipping a sound."""
    n = len(clip) // frame
    energy = np.mean(clip[:n * frame].reshape(n, frame) ** 2, axis=1)
    cuts = []
    for (_, _, end), (_, start, _) in zip(words, words[1:]):
        lo = max(0, int((min(end, start) - 0.1) * RATE / frame))
        hi = max(lo + 1, min(n, int((max(end, start) + 0.1) * RATE / frame)))
        cuts.append(round((lo + int(np.argmin(energy[lo:hi])) + 0.5) * frame / RATE, 3))
    return cuts


_VOICES: dict[str, voices.Voice] = {}


def _stt():
    from voiceagent import registry
    return registry.get("stt", "whisper", cpu_threads=1)


def make(job: Job, out: Path) -> tuple[bool, dict]:
    """Synthesise, trim, time and check one utterance; (kept, its manifest record)."""
    clip = trimmed(_VOICES[job.voice](job.text, job.rate, job.pitch), job)
    start, end = speech_bounds(clip)
    lo, hi = start / RATE, end / RATE  # Whisper's first word often starts at 0
    words = [[w.text, round(min(max(w.start, lo), hi), 3), round(min(max(w.end, lo), hi), 3)]
             for w in _stt().timed_words(clip) if any(c.isalnum() for c in w.text)]
    heard_all = len(words)
    words = without_hallucinated_tail(job.text, words)
    heard = " ".join(w[0] for w in words)
    record = {"file": f"{job.index:05d}.wav", **asdict(job),
              "family": _VOICES[job.voice].family, "duration_s": len(clip) / RATE,
              "speech_start_s": start / RATE, "speech_end_s": end / RATE, "transcript": heard,
              "mismatch": round(mismatch(job.text, heard), 3), "words": words,
              "cuts": cut_points(clip, words)}
    # backchannels are kept as they are: Whisper often hears "mm-hmm" as nothing or "Hmm"
    # if words were cut off as hallucinated, the rest must still reach the end of the speech
    kept = job.kind == "backchannel" or (
        bool(words) and record["mismatch"] <= MAX_MISMATCH
        and (len(words) == heard_all
             or words[-1][2] >= record["speech_end_s"] - MAX_UNTIMED_TAIL_S))
    if kept:
        sf.write(out / record["file"], clip, RATE, subtype="PCM_16")
    return kept, record


def _init(names: list[str]) -> None:
    _VOICES.update({v.name: v for v in voices.registry() if v.name in names})


def _make(args: tuple[Job, Path]) -> tuple[bool, dict]:
    """``make``, with an engine's failure logged as a dropped utterance, not a stopped run."""
    try:
        return make(*args)
    except Exception as exc:  # any engine failure: one bad clip must not end a long run
        return False, {**asdict(args[0]), "error": repr(exc)}


def _done(path: Path) -> set[int]:
    if not path.exists():
        return set()
    return {json.loads(line)["index"] for line in path.read_text().splitlines() if line}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (1: this one)")
    p.add_argument("--backchannels", type=float, default=0.1, help="share of backchannels")
    p.add_argument("--families", help="comma-separated voice families (default: all working)")
    args = p.parse_args(argv)

    wanted = set(args.families.split(",")) if args.families else None
    working = voices.available([v for v in voices.registry()
                                if wanted is None or v.family in wanted])
    names: dict[str, list[str]] = {}
    for v in working:
        names.setdefault(v.family, []).append(v.name)
    print("voices:", {f: len(n) for f, n in sorted(names.items())}, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    manifest, dropped = args.out / "manifest.jsonl", args.out / "dropped.jsonl"
    done = _done(manifest) | _done(dropped)
    todo = [(j, args.out) for j in plan(args.seed, args.count, names, args.backchannels)
            if j.index not in done]
    all_names = [n for group in names.values() for n in group]
    t0, dropped_count = time.monotonic(), 0
    if args.jobs > 1:
        pool = ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(all_names,))
        results = pool.map(_make, todo, chunksize=4)
    else:
        _init(all_names)
        results = map(_make, todo)
    with manifest.open("a") as kept_log, dropped.open("a") as dropped_log:
        for n, (kept, record) in enumerate(results, 1):
            log = kept_log if kept else dropped_log
            log.write(json.dumps(record) + "\n")
            log.flush()
            dropped_count += not kept
            if n % 25 == 0 or n == len(todo):
                print(f"{n}/{len(todo)} {(time.monotonic() - t0) / n:.2f} s each, "
                      f"dropped {dropped_count}", flush=True)


if __name__ == "__main__":
    main()
