"""What the end-of-turn model knows about a pause: the turn's audio and its transcript.

Everything here is cheap numpy on audio the endpointer already holds (well under a
millisecond for the text, a few for the prosody of 8 s of audio), so it runs on the loop or
in the benchmark alike. The model itself is in :mod:`voiceagent.turn_model`.

* **Prosody** of the last few hundred milliseconds of speech against the whole turn: a
  statement or a question ends with a pitch fall (or a marked rise) and fading energy, a
  speaker holding the floor keeps pitch and energy up; a word stretched before the pause
  ("and...") shows as a long final voiced run. Pitch comes from a normalised
  autocorrelation per 10 ms, which is crude but robust to a phone line's band limits.
* **Speaking rate**: words per second of speech (slow, drawn-out speech pauses longer).
* **The transcript's shape**: the last word's class (a conjunction, a preposition, an
  article, a filler, a number being dictated), a trailing comma, how many words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

RATE = 16_000
_HOP = 160  # 10 ms
_WIN = 480  # 30 ms: two periods of a 70 Hz voice
_F0_MIN, _F0_MAX = 70.0, 400.0
_VOICED = 0.45  # normalised autocorrelation peak of a voiced frame
_TAIL = 0.3  # seconds of speech that make "the end" of the turn
_CONTEXT = 6.0  # seconds of audio the prosody looks at

CONJUNCTIONS = {"and", "or", "but", "so", "because", "cause", "if", "then", "that", "which",
                "who", "when", "while", "although", "since", "unless", "until", "whether",
                "than", "as", "plus", "nor"}
PREPOSITIONS = {"to", "for", "of", "in", "at", "on", "with", "from", "by", "about", "into",
                "onto", "over", "under", "between", "through", "after", "before", "around",
                "near", "without", "within", "per", "via", "towards", "toward"}
DETERMINERS = {"the", "a", "an", "my", "your", "his", "her", "our", "their", "its", "this",
               "these", "those", "some", "any", "every", "each", "no", "another", "more"}
SUBJECTS = {"i", "we", "you", "he", "she", "they", "it", "i'm", "we're", "you're", "it's",
            "there's", "is", "are", "was", "were", "will", "would", "can", "could", "should",
            "shall", "may", "might", "must", "have", "has", "had", "do", "does", "did", "am",
            "be", "been", "not", "don't", "can't", "i'd", "i'll", "let's", "want", "need"}
# "like" and "well" are left out: they end finished turns too ("What's the weather like?")
FILLERS = {"um", "uh", "er", "erm", "hmm", "mm", "ah", "uhm", "eh"}
NUMBERS = {"zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight",
           "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
           "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty", "fifty",
           "sixty", "seventy", "eighty", "ninety", "hundred", "thousand", "double", "triple"}
_WORD = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True)
class Prosody:
    """The end of a turn's speech against the whole of it (0 where it cannot be measured)."""

    pitch_end: float  # semitones: median pitch of the last voiced 0.3 s - the turn's median
    pitch_slope: float  # semitones per second over the last voiced 0.3 s
    energy_end: float  # dB: the last 0.3 s of speech - the turn's loud (90th pct.) level
    final_run: float  # seconds: the voiced stretch that ends the speech
    voiced: float  # share of voiced frames in the turn (low: noise, a whisper)


#: the prosody of audio too short to measure, or of a turn whose model does not read it
UNMEASURED = Prosody(0.0, 0.0, 0.0, 0.0, 0.0)


def prosody(audio: np.ndarray, speech_end: float | None = None) -> Prosody:
    """The prosody of ``audio`` (16 kHz, the turn so far) up to ``speech_end`` seconds
    from its start (default: its end)."""
    end = len(audio) if speech_end is None else int(min(speech_end * RATE, len(audio)))
    x = np.asarray(audio[max(0, end - int(_CONTEXT * RATE)):end], dtype=np.float32)
    if len(x) < _WIN * 4:
        return UNMEASURED
    frames = np.lib.stride_tricks.sliding_window_view(x, _WIN)[::_HOP]
    energy = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
    loud = float(np.percentile(energy, 90))
    speech = energy > loud - 30  # frames of the speaker, not the silence between words
    f0 = _pitch(frames, speech)
    voiced = f0 > 0
    tail_frames = int(_TAIL * RATE / _HOP)
    speech_idx = np.flatnonzero(speech)
    last = speech_idx[-tail_frames:] if len(speech_idx) else speech_idx
    energy_end = float(np.mean(energy[last]) - loud) if len(last) else 0.0
    semis = np.where(voiced, 12 * np.log2(np.maximum(f0, 1.0) / 100.0), np.nan)
    voiced_idx = np.flatnonzero(voiced)
    pitch_end = pitch_slope = 0.0
    if len(voiced_idx) >= 6:
        reference = float(np.median(semis[voiced_idx]))
        end_idx = voiced_idx[voiced_idx >= voiced_idx[-1] - tail_frames]
        pitch_end = float(np.median(semis[end_idx]) - reference)
        if len(end_idx) >= 4:
            t = end_idx * _HOP / RATE
            pitch_slope = float(np.polyfit(t - t.mean(), semis[end_idx], 1)[0])
    run = 0
    for v in voiced[::-1][: len(voiced)]:
        if v:
            run += 1
        elif run:
            break
    return Prosody(float(np.clip(pitch_end, -24, 24)), float(np.clip(pitch_slope, -120, 120)),
                   float(np.clip(energy_end, -60, 0)), run * _HOP / RATE,
                   float(voiced.mean()) if len(voiced) else 0.0)


def _pitch(frames: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """F0 in Hz per frame (0: unvoiced or silent), from the normalised autocorrelation."""
    lo, hi = int(RATE / _F0_MAX), int(RATE / _F0_MIN)
    f0 = np.zeros(len(frames))
    idx = np.flatnonzero(speech)
    if not len(idx):
        return f0
    x = frames[idx].astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    n = 1 << (2 * _WIN - 1).bit_length()
    spec = np.fft.rfft(x, n)
    ac = np.fft.irfft(spec * np.conj(spec), n)[:, :hi + 1]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    lag = lo + np.argmax(ac[:, lo:hi + 1], axis=1)
    peak = ac[np.arange(len(idx)), lag]
    f0[idx] = np.where(peak >= _VOICED, RATE / lag, 0.0)
    return f0


@dataclass(frozen=True)
class TextShape:
    """The transcript's words as the end-of-turn model reads them."""

    words: int
    last_conjunction: bool
    last_preposition: bool
    last_determiner: bool
    last_subject: bool  # a pronoun or an auxiliary: "I", "is", "can"
    last_filler: bool
    last_number: bool
    trailing_comma: bool
    terminal_mark: bool  # the recogniser wrote ". ? !"


def text_shape(text: str) -> TextShape:
    words = _WORD.findall(text.lower())
    last = words[-1] if words else ""
    stripped = text.rstrip()
    return TextShape(
        words=len(words), last_conjunction=last in CONJUNCTIONS,
        last_preposition=last in PREPOSITIONS, last_determiner=last in DETERMINERS,
        last_subject=last in SUBJECTS, last_filler=last in FILLERS,
        last_number=last in NUMBERS or last.isdigit(),
        trailing_comma=stripped.endswith((",", "-", "...", "…")),
        terminal_mark=stripped.endswith((".", "?", "!")) and not stripped.endswith("..."))


def speaking_rate(text: str, speech_seconds: float) -> float:
    """Words per second of the turn's speech (0 when unknown)."""
    if speech_seconds <= 0.2:
        return 0.0
    return min(len(_WORD.findall(text.lower())) / speech_seconds, 8.0)
