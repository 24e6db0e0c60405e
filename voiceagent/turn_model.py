"""The learned end-of-turn model: a hazard over the pause.

At every 20 ms of a pause the endpointer asks: given what the turn sounded and read like
and how long the silence has lasted, is the user done? The model answers with a probability
from a small network over the evidence of :mod:`voiceagent.turn_features` plus the silence so
far, so a turn that sounds finished ends after a short silence and an unfinished one needs
a long one, with no fixed bounds in between. It was trained on synthetic speech only (many
voices, phone-line, noise and reverberation augmentation; ``training/turn/``) and is judged on
real recordings (benchmarks/turn_taking.py). It is a few kilobytes of JSON shipped in the
package and runs in microseconds of numpy.
"""

from __future__ import annotations

import json
import math
from dataclasses import astuple, dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from .turn_features import Prosody, TextShape, speaking_rate, text_shape

#: the shipped model (training/turn/train.py writes it)
MODEL_FILE = "turn_model.json"


@dataclass(frozen=True)
class PauseEvidence:
    """What is known about one pause, apart from its length. The model decides only once
    both scores are in (the policy waits for them)."""

    end_probability: float  # the recogniser's: a sentence ends here
    audio_score: float  # the audio end-of-turn model's (Smart Turn)
    shape: TextShape
    prosody: Prosody
    rate: float  # words per second of speech

    @classmethod
    def of(cls, end_probability: float, audio_score: float, transcript: str,
           prosody: Prosody, speech_seconds: float) -> PauseEvidence:
        """The evidence of a pause from the transcript decoded at it and the turn's speech
        so far (the endpointer and the benchmark build it alike)."""
        return cls(end_probability, audio_score, text_shape(transcript), prosody,
                   speaking_rate(transcript, speech_seconds))


def logit(p: float) -> float:
    """log(p / (1 - p)), with ``p`` kept off 0 and 1."""
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def feature_names() -> list[str]:
    """Every feature :func:`features` computes; a model file names the ones it reads."""
    return ["end_logit", "audio_logit", "silence", "log_silence", "end_logit_x_log_silence",
            "log_words", "rate",
            *[f"shape_{n}" for n in TextShape.__dataclass_fields__ if n != "words"],
            *[f"prosody_{n}" for n in Prosody.__dataclass_fields__]]


def features(evidence: PauseEvidence, silence: float) -> list[float]:
    """The model's input vector (in :func:`feature_names` order)."""
    end = logit(evidence.end_probability)
    log_silence = math.log(max(silence, 0.02))
    shape = astuple(evidence.shape)
    return [end, logit(evidence.audio_score), silence, log_silence, end * log_silence,
            math.log1p(shape[0]), evidence.rate,
            *(float(v) for v in shape[1:]), *astuple(evidence.prosody)]


class TurnModel:
    """A one-hidden-layer network (or, with no hidden layer, a logistic regression) over
    the standardised features it ``names``; ``threshold`` is the probability that ends a
    turn."""

    def __init__(self, *, names: list[str], mean: list[float], scale: list[float],
                 layers: list[dict], threshold: float, meta: dict | None = None) -> None:
        known = feature_names()
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"the turn model reads features this version does not compute "
                             f"({', '.join(unknown)}); retrain it (training/turn/train.py)")
        self.names = names
        self._columns = [known.index(n) for n in names]
        self.mean = np.asarray(mean, np.float64)
        self.scale = np.asarray(scale, np.float64)
        self.layers = [(np.asarray(layer["w"], np.float64), np.asarray(layer["b"], np.float64))
                       for layer in layers]
        self.threshold = threshold
        self.meta = meta or {}

    def reads(self, prefix: str) -> bool:
        """Whether the model reads a feature whose name starts with ``prefix`` (what it does
        not read need not be computed)."""
        return any(n.startswith(prefix) for n in self.names)

    def probability(self, evidence: PauseEvidence, silence: float) -> float:
        """P(the turn is over) after ``silence`` seconds of this pause."""
        return float(self.predict(np.asarray([features(evidence, silence)]))[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for rows of :func:`features` vectors (every feature, in order)."""
        h = (x[:, self._columns] - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.tanh(h)
        return 1.0 / (1.0 + np.exp(-h[:, 0]))

    def to_json(self) -> dict:
        return {"names": self.names, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "layers": [{"w": w.tolist(), "b": b.tolist()} for w, b in self.layers],
                "threshold": self.threshold, "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict) -> TurnModel:
        return cls(names=data["names"], mean=data["mean"], scale=data["scale"],
                   layers=data["layers"], threshold=data["threshold"], meta=data.get("meta"))

    @classmethod
    def load(cls, path: str | Path | None = None) -> TurnModel:
        """A model file, by default the one shipped in the package."""
        if path is None:
            return shipped_model()
        return cls.from_json(json.loads(Path(path).read_text()))


@cache
def shipped_model() -> TurnModel:
    """The packaged model, read once per process (it is immutable)."""
    text = resources.files("voiceagent.models").joinpath(MODEL_FILE).read_text()
    return TurnModel.from_json(json.loads(text))
