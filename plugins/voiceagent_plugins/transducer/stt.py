"""The ``transducer`` STT backend: a streaming transducer behind the voiceagent STT protocol.

Unlike Whisper, which re-decodes a growing window, a transducer decodes every chunk once:
partial transcripts appear one chunk (``chunk_ms``) after the words are spoken, and greedy
partials never change (``stable`` is the whole text). With beam search only the prefix the
beams agree on is stable. The shipped model reads Whisper tiny.en's encoder
(``whisper_front.py``), which re-encodes the turn so far at each chunk; the decoding is still
once per chunk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from voiceagent.audio import check_finite, to_mono_float
from voiceagent.backends import Transcript
from voiceagent.deps import require
from voiceagent.errors import ConfigError
from voiceagent.registry import BackendOptions, validate_options

SAMPLE_RATE = 16_000
_FRAME_MS = 80  # one encoder frame: 10 ms features x 8 subsampling, or 4 Whisper frames


class TransducerOptions(BackendOptions):
    """What :class:`TransducerSTT` takes (its docstring says what each does)."""

    checkpoint: Path | None = None
    decoding: str | None = None
    chunk_ms: int = 160
    quantize: bool = False
    beam: int = 4
    max_batch: int = 16
    max_wait_ms: float = 5.0
    device: str = "auto"
    threads: int = 0


class TransducerSTT:
    """The shared model and engine. Options are an agent's ``stt_options``.

    ``checkpoint``: our ``.pt`` (default: the shipped phone-command model, a head on Whisper
    tiny.en's encoder, trained with 160 ms chunks) or a NeMo ``.nemo`` FastConformer
    RNN-T/TDT. ``decoding``: ``tdt`` | ``rnnt`` (greedy) | ``beam`` (default: the
    checkpoint's own, ``tdt`` unless it says otherwise; ``rnnt`` for a model without a
    duration head). ``chunk_ms``: the attention chunk (the Whisper front end: audio per
    encode), a multiple of 80 ms (latency vs accuracy).
    ``quantize``: int8 dynamic quantisation on CPU. ``max_batch``/``max_wait_ms``: how the
    engine batches chunks of concurrent streams.
    """

    sample_rate = SAMPLE_RATE

    Options = TransducerOptions

    def __init__(self, **options: Any) -> None:
        opts = validate_options(TransducerOptions, options, "transducer STT")
        checkpoint, decoding, chunk_ms = opts.checkpoint, opts.decoding, opts.chunk_ms
        threads, device = opts.threads, opts.device
        torch = require("torch", "torch", extra="transducer")
        from .checkpoint import SHIPPED, load
        from .engine import DECODINGS, TransducerEngine
        from .nemo import load_nemo

        if decoding is not None and decoding not in DECODINGS:
            raise ConfigError(f"decoding must be one of {', '.join(DECODINGS)}")
        if chunk_ms < _FRAME_MS or chunk_ms % _FRAME_MS:
            raise ConfigError(f"chunk_ms must be a positive multiple of {_FRAME_MS}")
        path = Path(checkpoint) if checkpoint is not None else SHIPPED
        if not path.exists():
            raise ConfigError(f"transducer checkpoint {path} not found")
        if threads:
            torch.set_num_threads(threads)
        try:
            model = load_nemo(path) if path.suffix == ".nemo" or path.is_dir() else load(path)
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"cannot load the transducer checkpoint {path}: {exc}") from exc
        decoding = decoding or model.cfg.decoding
        if decoding == "tdt" and not model.cfg.durations:
            decoding = "rnnt"  # a plain RNN-T model has no duration head
        self.engine = TransducerEngine(model, decoding, chunk_frames=chunk_ms // _FRAME_MS,
                                       max_batch=opts.max_batch, max_wait_ms=opts.max_wait_ms,
                                       beam=opts.beam, quantize=opts.quantize, device=device)
        self.stable_is_all = decoding != "beam"

    def stream(self) -> TransducerStream:
        return TransducerStream(self)


class TransducerStream:
    def __init__(self, stt: TransducerSTT) -> None:
        self._stt = stt
        self._stream = stt.engine.stream()
        self._text = ""

    def _transcript(self) -> Transcript:
        stream = self._stream
        text = stream.engine.model.text(stream.tokens)
        if self._stt.stable_is_all:
            return Transcript(text, stable=text)
        beams = [b.tokens for b in stream.hyp.beams]
        common = 0
        while all(len(b) > common and b[common] == beams[0][common] for b in beams):
            common += 1
        return Transcript(text, stable=stream.engine.model.text(beams[0][:common]))

    async def push(self, samples: np.ndarray) -> Transcript | None:
        chunk = check_finite(to_mono_float(samples), "audio pushed to the transducer STT")
        if chunk.size == 0:
            return None
        await self._stream.feed(chunk.copy())
        transcript = self._transcript()
        if transcript.text == self._text:
            return None
        self._text = transcript.text
        return transcript

    async def pause(self) -> Transcript:
        """Everything up to the last whole chunk is already decoded: nothing to run early."""
        return self._transcript()

    async def finish(self) -> Transcript:
        await self._stream.feed(np.zeros(0, np.float32), flush=True)
        text = self._transcript().text
        self._stream.reset()
        self._text = ""
        return Transcript(text, stable=text)

    async def aclose(self) -> None:
        self._stream.close()
