"""Synthetic training speech for the closed phone-command domain.

Real labelled speech is not available offline, so phrases are spoken by local voices: Piper's
joe voice (speed and variability varied) and, when ``espeak-ng`` is installed, several of its
voices with rate and pitch variation. Noise and gain are added at training time
(:func:`augment`), so one synthesised clip serves many epochs.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from voiceagent.audio import resample

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


class PiperVoice:
    """The joe voice, resampled to 16 kHz; speed and phoneme noise vary per call."""

    def __init__(self) -> None:
        from piper import PiperVoice as _Voice, SynthesisConfig
        from voiceagent_plugins.piper_tts import bundled_model_path
        self._voice = _Voice.load(bundled_model_path())
        self._config = SynthesisConfig
        self._rate = int(self._voice.config.sample_rate)

    def say(self, text: str, rng: random.Random) -> np.ndarray:
        cfg = self._config(length_scale=rng.uniform(0.75, 1.35),
                           noise_scale=rng.uniform(0.4, 0.9), noise_w_scale=rng.uniform(0.5, 1.0))
        audio = np.concatenate([np.asarray(c.audio_float_array, np.float32)
                                for c in self._voice.synthesize(text, syn_config=cfg)])
        return _to_16k(audio, self._rate)


ESPEAK_VOICES = ["en-us", "en", "en-us+m3", "en-us+f2", "en-us+f4", "en+m7", "en-gb-x-rp",
                 "en-us+klatt", "en+f3", "en-029"]


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def espeak_say(text: str, voice: str, rng: random.Random) -> np.ndarray:
    out = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(rng.randint(120, 200)), "-p", str(rng.randint(25, 75)),
         "--stdout", text], check=True, capture_output=True).stdout
    pcm = np.frombuffer(out[44:], dtype=np.int16).astype(np.float32) / 32768.0  # 22.05 kHz wav
    return _to_16k(pcm, 22_050)


def _to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    return resample(audio, rate, SAMPLE_RATE).astype(np.float32)


def synthesize(count: int, seed: int, espeak_share: float = 0.5) -> Iterator[Utterance]:
    """``count`` random phrases, each spoken by a random local voice."""
    rng = random.Random(seed)
    piper = PiperVoice()
    use_espeak = espeak_available()
    for _ in range(count):
        text = random_phrase(rng)
        if use_espeak and rng.random() < espeak_share:
            voice = rng.choice(ESPEAK_VOICES)
            yield Utterance(text, f"espeak:{voice}", espeak_say(text, voice, rng))
        else:
            yield Utterance(text, "piper:joe", piper.say(text, rng))


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gain, leading/trailing silence, and white or brown noise at 5-35 dB SNR."""
    lead, tail = rng.integers(0, 8000), rng.integers(1600, 8000)
    x = np.concatenate([np.zeros(lead, np.float32), audio, np.zeros(tail, np.float32)])
    noise = rng.standard_normal(x.size).astype(np.float32)
    if rng.random() < 0.4:
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(400) / 400, mode="same")  # brown, no drift
    power = float(np.mean(audio ** 2)) + 1e-9
    snr = rng.uniform(5, 35)
    noise *= np.sqrt(power / 10 ** (snr / 10) / (np.mean(noise ** 2) + 1e-12))
    return ((x + noise) * 10 ** rng.uniform(-1.0, 0.5)).astype(np.float32)
