"""Silero VAD on onnxruntime, with the ONNX file the ``silero-vad`` wheel ships.

The model is stateful (an RNN state plus 64 samples of left context); that state lives in
each :class:`SileroVADStream`, while the ONNX session is shared (onnxruntime's ``run`` is
thread-safe).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voiceagent.deps import onnx_session, packaged_file

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


class SileroVAD:
    sample_rate = 16_000
    window_samples = 512  # 32 ms, the window the model was trained on at 16 kHz

    def __init__(self, model: str | None = None, threads: int = 1) -> None:
        self.session = onnx_session(model or bundled_model_path(), threads, extra="vad")
        self._sr = np.array(self.sample_rate, dtype=np.int64)

    def stream(self) -> SileroVADStream:
        return SileroVADStream(self)
