"""One stream's audio -> encoder chunks: the incremental front end shared by the engine and
by :func:`transcribe` (offline, for training evaluation and tests)."""

from __future__ import annotations

import numpy as np
import torch

from .decoding import BeamDecoder, BeamState, GreedyDecoder, Hypothesis
from .model import Transducer
from .whisper_front import WhisperChunkFeeder, WhisperFrames


class ChunkFeeder:
    """Buffers audio and cuts it into encoder chunks of ``chunk`` encoder frames
    (``chunk * subsampling_factor`` feature frames each). Exact: the features of the pieces
    are those of the whole signal."""

    def __init__(self, model: Transducer, chunk: int) -> None:
        self.model, self.chunk = model, chunk
        self.feature_frames = chunk * model.cfg.subsampling_factor
        self._audio = np.zeros(model.features.lead, np.float32)
        self._previous = 0.0  # last raw sample pushed (pre-emphasis of the next piece)
        self._feats: list[torch.Tensor] = []
        self._pending = 0

    def push(self, samples: np.ndarray) -> list[torch.Tensor]:
        """New chunks ``(feature_frames, n_mels)`` made ready by ``samples``."""
        fe = self.model.features
        samples = samples.astype(np.float32, copy=False)
        emphasised = fe.emphasise(samples, self._previous)
        if len(samples):
            self._previous = float(samples[-1])
        self._audio = np.concatenate([self._audio, emphasised])
        n = fe.frames(len(self._audio))
        if n:
            framed = torch.from_numpy(self._audio[: fe.win + (n - 1) * fe.hop]).to(
                fe.fbank.device)
            with torch.inference_mode():
                self._feats.append(fe(framed[None])[0])
            self._audio = self._audio[n * fe.hop:]
            self._pending += n
        chunks = []
        while self._pending >= self.feature_frames:
            feats = torch.cat(self._feats)
            chunks.append(feats[: self.feature_frames])
            self._feats = [feats[self.feature_frames:]]
            self._pending -= self.feature_frames
        return chunks

    def flush(self, tail_ms: int = 240) -> list[torch.Tensor]:
        """``tail_ms`` of silence (room for the last word's tokens), then the rest padded
        with silence to whole chunks."""
        fe = self.model.features
        chunks = self.push(np.zeros(tail_ms * 16, np.float32))
        missing = (-self._pending) % self.feature_frames
        if missing:
            pad = fe.win + (missing - 1) * fe.hop - len(self._audio)
            chunks += self.push(np.zeros(max(pad, 0), np.float32))
        return chunks


def feeder(model: Transducer, chunk: int) -> ChunkFeeder | WhisperChunkFeeder:
    """The feeder for ``model``'s front end."""
    if isinstance(model.features, WhisperFrames):
        return WhisperChunkFeeder(model.features, chunk)
    return ChunkFeeder(model, chunk)


def decode_clip(model: Transducer, audio: np.ndarray, decoder: GreedyDecoder | BeamDecoder,
                chunk: int | None = None) -> Hypothesis | BeamState:
    """Decode a whole clip as one stream, chunk by chunk (what the engine does, unbatched):
    the final hypothesis (tokens, joint calls)."""
    cut = feeder(model, chunk or model.cfg.chunk_frames)
    state, hyp = model.encoder.init_state(1), decoder.initial()
    with torch.inference_mode():
        for feats in cut.push(audio) + cut.flush():
            enc, state = model.encoder.stream(feats[None], state)
            decoder.decode(model.joint.enc(enc), [hyp])
    return hyp


def transcribe(model: Transducer, audio: np.ndarray, decoder: GreedyDecoder | BeamDecoder,
               chunk: int | None = None) -> str:
    """The text of :func:`decode_clip`."""
    return model.text(decode_clip(model, audio, decoder, chunk).tokens)
