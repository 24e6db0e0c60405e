"""Synthetic training speech for the closed phone-command domain.

Real labelled speech is not available offline (the shared real recordings are evaluation
data, never trained on), so phrases are spoken by every local TTS engine the end-of-turn
training uses (``training/turn/voices.py``: Piper joe, hibari, flite, festival and espeak-ng's
accents and variants), each at a random speaking rate and pitch. A model trained on one or two
voices learns those voices, not the words: the old shipped model heard a real "one two three"
as "four two". Channel effects (noise, room, phone line, gain) are added at training time
(:func:`augment`), so one synthesised clip serves many epochs.

``python -m voiceagent_plugins.transducer.synth --out DIR --seed S --minutes M`` writes a
corpus in shards (``shard-*.npz``, one every 250 clips, so a stop keeps what was made) for
``train.py --corpus DIR``.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.turn import augment as channel
from training.turn.voices import Voice, available, registry

SAMPLE_RATE = 16_000

DIGITS = "zero one two three four five six seven eight nine".split()
TEENS = ("ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen "
         "nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
COMMANDS = [
    "yes", "no", "yes please", "no thanks", "okay", "cancel", "stop", "start", "repeat",
    "go back", "next", "previous", "help", "menu", "operator", "call mom", "call home",
    "call the office", "hang up", "redial", "call back", "hold", "resume", "mute", "unmute",
    "volume up", "volume down", "speaker on", "speaker off", "transfer the call",
    "send a message", "read my messages", "delete", "save", "confirm", "check my balance",
    "pay my bill", "talk to an agent", "main menu", "thank you", "goodbye", "hello",
    "press one", "press two", "extension", "hundred", "dial", "star", "pound",
]


def number_words(n: int) -> str:
    """0..999 as spoken words ("one hundred twenty three")."""
    if n < 10:
        return DIGITS[n]
    if n < 20:
        return TEENS[n - 10]
    if n < 100:
        return TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + DIGITS[n % 10])
    rest = n % 100
    return DIGITS[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))


def vocabulary() -> list[str]:
    """Every word of the domain: the model's output tokens (blank comes after them)."""
    words = set(DIGITS + TEENS + TENS)
    for phrase in COMMANDS:
        words.update(phrase.split())
    return sorted(words)


def random_phrase(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return " ".join(rng.choice(DIGITS) for _ in range(rng.randint(1, 6)))
    if kind < 0.55:
        return number_words(rng.randint(0, 999))
    if kind < 0.9:
        return rng.choice(COMMANDS)
    return f"{rng.choice(['dial', 'press', 'extension'])} " + " ".join(
        rng.choice(DIGITS) for _ in range(rng.randint(1, 4)))


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    audio: np.ndarray  # 16 kHz mono float32


# A family's share of the utterances: espeak-ng's 312 accent x variant voices would otherwise
# drown the few natural-sounding ones (Piper, hibari, the festival HTS voice).
FAMILY_SHARE = {"piper": 0.25, "hibari": 0.15, "flite": 0.2, "festival": 0.15, "espeak": 0.25}


def speaking_voices() -> dict[str, list[Voice]]:
    """The installed voices by family; one probe per family (an engine that is not installed
    fails for all its voices alike)."""
    families: dict[str, list[Voice]] = {}
    for voice in registry():
        families.setdefault(voice.family, []).append(voice)
    return {family: members for family, members in families.items()
            if family in FAMILY_SHARE and available(members[:1])}


def synthesize(count: int, seed: int, families: Collection[str] = tuple(FAMILY_SHARE)
               ) -> Iterator[Utterance]:
    """``count`` random phrases, each spoken by a random voice of ``families`` (family first,
    by :data:`FAMILY_SHARE`) at a random rate (0.75-1.35) and pitch (0.85-1.2)."""
    rng = random.Random(seed)
    families = {f: voices for f, voices in speaking_voices().items() if f in families}
    if not families:
        raise RuntimeError("no TTS engine speaks here (training/turn/setup.sh installs them)")
    names = sorted(families)
    weights = [FAMILY_SHARE[f] for f in names]
    for _ in range(count):
        text = random_phrase(rng)
        voice = rng.choice(families[rng.choices(names, weights)[0]])
        audio = voice(text, rng.uniform(0.75, 1.35), rng.uniform(0.85, 1.2))
        yield Utterance(text, voice.name, audio.astype(np.float32))


def augment(audio: np.ndarray, rng: np.random.Generator,
            babble: Sequence[np.ndarray] = ()) -> np.ndarray:
    """One training view of a clean clip: leading/trailing silence, then (each by chance) a
    synthetic room, noise at 0-30 dB SNR (white, pink, brown, hum, or babble of ``babble``:
    other synthetic clips), the G.711 phone line, and a random gain."""
    lead, tail = rng.integers(0, 8000), rng.integers(1600, 8000)
    x = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
    if rng.random() < 0.35:
        x = channel.reverb(x, rng)
    if rng.random() < 0.8:
        x = channel.add_noise(x, float(rng.uniform(0, 30)), rng, sources=babble)
    if rng.random() < 0.3:
        x = channel.phone_line(x)
    return (x * 10 ** rng.uniform(-1.0, 0.5)).astype(np.float32)


def save_shard(path: Path, utterances: list[Utterance]) -> None:
    np.savez(path, texts=np.array([u.text for u in utterances]),
             voices=np.array([u.voice for u in utterances]),
             offsets=np.cumsum([0] + [len(u.audio) for u in utterances]),
             audio=np.concatenate([u.audio for u in utterances]))


def load_corpus(directory: Path) -> list[Utterance]:
    """Every shard of a corpus written by :func:`main`, in name order."""
    out = []
    for shard in sorted(Path(directory).glob("shard-*.npz")):
        with np.load(shard) as z:
            audio, off = z["audio"], z["offsets"]  # each z[...] reads the file anew
            out += [Utterance(str(t), str(v), audio[a:b])
                    for t, v, a, b in zip(z["texts"], z["voices"], off[:-1], off[1:])]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="Synthesise a phone-command corpus in shards.")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, required=True, help="one seed per corpus part")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--minutes", type=float, default=20.0, help="wall-time budget")
    p.add_argument("--shard", type=int, default=250)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + 60 * args.minutes
    batch: list[Utterance] = []
    shards = 0
    for utterance in synthesize(args.count, args.seed):
        batch.append(utterance)
        if len(batch) == args.shard or time.monotonic() > deadline:
            save_shard(args.out / f"shard-{args.seed:03d}-{shards:04d}.npz", batch)
            shards += 1
            print(f"{shards * args.shard} clips", flush=True)
            batch = []
            if time.monotonic() > deadline:
                return
    if batch:
        save_shard(args.out / f"shard-{args.seed:03d}-{shards:04d}.npz", batch)


if __name__ == "__main__":
    main()
