"""The real recordings the phone-command model is measured on (never trained on), and the
in-domain word error rate that scores it beside a general recogniser.

The shared clips with numbers: ``uberi_one_two_three`` and ``cmu_cards_004`` ("five five")
are wholly in the domain; the other ``cmu_cards_*`` hold number words among card names ("ten
of clubs") that the model cannot know. The in-domain WER therefore reduces both the reference
and the hypothesis to their number words (zero-nine, ten-nineteen, the tens, "hundred"; the
only in-domain words these clips hold), in order, and pools the edits over all clips: 11
reference words. A number heard where "clubs" was said is an insertion; a card name the model
maps to a command word ("off" for "of") is not counted, for either recogniser.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from voiceagent.audio import load_audio
from voiceagent.text import normalize
from voiceagent_eval.wer import pooled_wer

from .synth import DIGITS, TEENS, TENS

CLIPS = {"uberi_one_two_three": "one two three", "cmu_cards_001": "ten of clubs",
         "cmu_cards_002": "four queen of clubs", "cmu_cards_003": "seven of clubs",
         "cmu_cards_004": "five five",
         "cmu_cards_005": "eight of spades four of clubs seven of hearts"}
NUMBER_WORDS = frozenset(DIGITS + TEENS + TENS + ["hundred"])


def number_words(text: str) -> str:
    return " ".join(w for w in normalize(text) if w in NUMBER_WORDS)


def in_domain_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Pooled WER of (reference, hypothesis) pairs reduced to their number words."""
    return pooled_wer((number_words(r), number_words(h)) for r, h in pairs)


def load_clips(speech_dir: Path) -> dict[str, np.ndarray]:
    return {name: load_audio(Path(speech_dir) / f"{name}.wav", 16_000) for name in CLIPS}


def score(transcribe: Callable[[np.ndarray], str], audios: dict[str, np.ndarray]
          ) -> tuple[float, dict[str, str]]:
    """(in-domain WER, hypothesis per clip) of ``transcribe`` on the clips ``audios``."""
    texts = {name: transcribe(audio) for name, audio in audios.items()}
    return in_domain_wer((CLIPS[name], text) for name, text in texts.items()), texts
