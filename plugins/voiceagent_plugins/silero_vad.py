"""Silero VAD on onnxruntime, with the ONNX file the ``silero-vad`` wheel ships.

The model is stateful (an RNN state plus 64 samples of left context); that state lives in
each :class:`SileroVADStream`, while the ONNX session is shared (onnxruntime's ``run`` is
thread-safe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from voiceagent.deps import onnx_session, packaged_file
from voiceagent.registry import BackendOptions, validate_options

_CONTEXT = 64  # samples of left context the 16 kHz model expects before each window


def bundled_model_path() -> Path:
    return packaged_file("silero_vad", "data/silero_vad.onnx", "silero-vad")


class SileroVADStream:
    def __init__(self, vad: SileroVAD) -> None:
        self._vad = vad
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)

    def probability(self, window: np.ndarray) -> float:
        if window.shape != (self._vad.window_samples,):
            raise ValueError(f"Silero VAD takes windows of {self._vad.window_samples} samples")
        x = np.concatenate([self._context, window.reshape(1, -1).astype(np.float32)], axis=1)
        out, self._state = self._vad.session.run(
            None, {"input": x, "state": self._state, "sr": self._vad._sr})
        self._context = x[:, -_CONTEXT:]
        return float(out[0, 0])


class SileroOptions(BackendOptions):
    #: an ONNX file instead of the one the silero-vad wheel ships
    model: Path | None = None
    #: onnxruntime threads for one window (under a millisecond on one)
    threads: int = Field(1, ge=1)


class SileroVAD:
    Options = SileroOptions
    sample_rate = 16_000
    window_samples = 512  # 32 ms, the window the model was trained on at 16 kHz

    def __init__(self, **options: Any) -> None:
        opts = validate_options(SileroOptions, options, "silero VAD")
        self.session = onnx_session(opts.model or bundled_model_path(), opts.threads,
                                    extra="vad")
        self._sr = np.array(self.sample_rate, dtype=np.int64)

    def stream(self) -> SileroVADStream:
        return SileroVADStream(self)
