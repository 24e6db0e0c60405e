"""Channel effects applied at feature time, so one clean clip yields many conditions.

The stored clips stay clean (their word timings and silences exact); training draws a channel
per example: a phone line, noise at some SNR, a room. All randomness comes from the ``rng``
passed in (``numpy.random.Generator``), so an example is reproducible from its seed. Every
function keeps the length and the 16 kHz rate, so word timings still hold. The noise is
synthetic or made from other synthetic utterances: no real recording enters training data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voiceagent.audio import PIPELINE_RATE, resample
from voiceagent.telephony.media import PCMU, TELEPHONE_RATE

RATE = PIPELINE_RATE
NOISES = ("white", "pink", "brown", "hum", "babble")


def phone_line(audio: np.ndarray) -> np.ndarray:
    """``audio`` as it reaches the agent over a call: 8 kHz G.711 mu-law, back at 16 kHz
    (the channel of benchmarks/turn_taking.py --telephone)."""
    narrow = PCMU.decode(PCMU.encode(resample(audio, RATE, TELEPHONE_RATE)))
    return resample(narrow, TELEPHONE_RATE, RATE)[:len(audio)]


def _coloured(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power falling as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0)  # flat below 20 Hz: no DC drift
    return np.fft.irfft(spectrum / freqs ** (exponent / 2), n)


def _hum(n: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and a few harmonics, over a little hiss."""
    t = np.arange(n) / RATE
    base = rng.choice([50.0, 60.0])
    hum = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.3))
              for k in range(1, 6))
    return hum + 0.05 * rng.standard_normal(n)


def _babble(n: int, sources: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Three to six other (synthetic) speakers at once, each looped from a random offset."""
    out = np.zeros(n)
    for k in rng.choice(len(sources), size=min(len(sources), int(rng.integers(3, 7))),
                        replace=False):
        voice = np.asarray(sources[k], dtype=np.float64)
        voice = np.roll(np.tile(voice, n // len(voice) + 1), -int(rng.integers(len(voice))))[:n]
        out += voice / (np.sqrt(np.mean(voice ** 2)) + 1e-9)
    return out


def noise(kind: str, n: int, rng: np.random.Generator,
          sources: Sequence[np.ndarray] = ()) -> np.ndarray:
    """``n`` samples of noise ``kind`` (one of :data:`NOISES`); babble needs ``sources``."""
    if kind == "babble":
        if not sources:
            raise ValueError("babble noise needs other utterances as sources")
        return _babble(n, sources, rng)
    if kind == "hum":
        return _hum(n, rng)
    return _coloured(n, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind], rng)


def _speech_power(audio: np.ndarray, frame: int = 160) -> float:
    """Mean power of the frames within 40 dB of the loudest: the SNR is the speech's, not
    lowered by the silences around it."""
    n = max(1, len(audio) // frame)
    power = np.mean(np.resize(audio.astype(np.float64), n * frame).reshape(n, frame) ** 2,
                    axis=1)
    return float(np.mean(power[power > power.max() * 1e-4]))


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator,
              kind: str | None = None, sources: Sequence[np.ndarray] = ()) -> np.ndarray:
    """``audio`` with noise at ``snr_db`` (speech power over noise power). ``kind`` is drawn
    from :data:`NOISES` if not given (babble only when ``sources`` are given: other
    synthetic utterances, never the clip's own text or a real recording)."""
    if kind is None:
        kind = str(rng.choice(NOISES if len(sources) else NOISES[:-1]))
    sound = noise(kind, len(audio), rng, sources)
    gain = np.sqrt(_speech_power(audio) / (np.mean(sound ** 2) + 1e-12) / 10 ** (snr_db / 10))
    return (audio + gain * sound).astype(np.float32)


def room_impulse(rng: np.random.Generator, rt60: float | None = None) -> np.ndarray:
    """A synthetic room: the direct sound, then noise decaying by 60 dB in ``rt60`` seconds
    (0.2-0.8 s if not given), at a random direct-to-reverberant ratio."""
    rt60 = rng.uniform(0.2, 0.8) if rt60 is None else rt60
    t = np.arange(int(rt60 * RATE)) / RATE
    tail = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)  # ln(1000) = 6.9: -60 dB
    delay = int(rng.uniform(0.002, 0.01) * RATE)  # the first reflection comes a little later
    impulse = np.concatenate([[1.0], np.zeros(delay), tail * rng.uniform(0.05, 0.3)])
    return impulse / np.sqrt(np.sum(impulse ** 2))


def reverb(audio: np.ndarray, rng: np.random.Generator, rt60: float | None = None) -> np.ndarray:
    """``audio`` in a synthetic room, cut to its own length (the tail that spills into the
    trailing silence stays, as in a real room), at the same peak level."""
    impulse = room_impulse(rng, rt60)
    size = len(audio) + len(impulse) - 1
    wet = np.fft.irfft(np.fft.rfft(audio, size) * np.fft.rfft(impulse, size), size)[:len(audio)]
    peak = float(np.abs(audio).max())
    return (wet * (peak / (np.abs(wet).max() + 1e-12))).astype(np.float32)
