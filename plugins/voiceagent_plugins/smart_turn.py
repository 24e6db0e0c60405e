"""Smart Turn v3.2: an audio end-of-turn model (ONNX, BSD-2-Clause) from the pipecat-ai wheel.

It hears the last 8 s of the user's turn and says how likely the user has finished: prosody,
not words. Input is Whisper's log-mel spectrogram of zero-mean, unit-variance audio, left-padded
to 8 s; faster-whisper's feature extractor computes exactly that. The ONNX session is shared;
calls are independent, so any number of sessions may use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from voiceagent.deps import onnx_session, packaged_file, require
from voiceagent.registry import BackendOptions, validate_options

SAMPLE_RATE = 16_000
WINDOW_SECONDS = 8


def bundled_model_path() -> Path:
    # The wheel is installed --no-deps for this file alone; pipecat itself is not imported.
    return packaged_file("pipecat", "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
                         "pipecat-ai")


class SmartTurnOptions(BackendOptions):
    #: an ONNX file instead of the one the pipecat-ai wheel ships
    model: Path | None = None
    #: onnxruntime threads for one score (about 30 ms on one)
    threads: int = Field(1, ge=1)


class SmartTurn:
    Options = SmartTurnOptions

    def __init__(self, **options: Any) -> None:
        opts = validate_options(SmartTurnOptions, options, "smart-turn detector")
        features = require("faster_whisper.feature_extractor", "faster-whisper", extra="turn")
        self._session = onnx_session(opts.model or bundled_model_path(), opts.threads,
                                     extra="turn")
        self._features = features.FeatureExtractor(
            feature_size=80, sampling_rate=SAMPLE_RATE, hop_length=160,
            chunk_length=WINDOW_SECONDS, n_fft=400)

    def probability(self, audio: np.ndarray) -> float:
        """P(the turn is complete) for 16 kHz mono audio ending now (blocking; ~30 ms)."""
        n = WINDOW_SECONDS * SAMPLE_RATE
        x = np.asarray(audio, dtype=np.float32)[-n:]
        x = np.pad(x, (n - len(x), 0))
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        mel = self._features(x, padding=0)[:, : n // 160]
        out = self._session.run(None, {"input_features": mel[None].astype(np.float32)})[0]
        return float(out[0, 0])
