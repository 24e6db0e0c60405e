"""Whisper tiny.en's frozen encoder as a transducer's front end, streamed.

Our own Conformer encoder has only heard synthetic voices; Whisper's encoder has heard 680,000
hours of real ones, and a small head on it learns the phone-command domain from synthetic
speech alone and still hears real callers (docs/transducer.md). Whisper's encoder attends to
its whole window, so it cannot run chunk by chunk with caches. Instead, at every chunk
boundary it encodes the utterance so far (the last ``WINDOW_S`` seconds: a few milliseconds
for a short command) and hands on only the new chunk's frames, which have seen everything
before them and nothing after. The end of an utterance is encoded once more, whole, with
silence after it. Training computes its features with this same feeder, so the head learns
from exactly what it will see live. Four 20 ms Whisper frames are stacked into one 80 ms
transducer frame; a unidirectional LSTM (the head, :class:`WhisperHeadEncoder`) carries the
context from chunk to chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

WHISPER_WIDTH = 384  # tiny.en's encoder output
STACK = 4  # Whisper frames (20 ms) per transducer frame (80 ms)
FRAME_SAMPLES = 320  # 20 ms at 16 kHz
WINDOW_S = 10  # the most audio encoded at once; an older start slides forward


class WhisperFrames:
    """The frozen encoder (the bundled tiny.en, one thread): audio -> ``(frames, 384)``."""

    def __init__(self) -> None:
        from voiceagent_plugins.whisper_stt import WhisperSTT

        self._whisper = WhisperSTT(cpu_threads=1)

    def encode(self, audio: np.ndarray) -> np.ndarray:
        return self._whisper.encode(audio)

    def __deepcopy__(self, memo: dict) -> WhisperFrames:
        return self  # frozen: a copy of the model (int8 quantisation makes one) shares it


class WhisperChunkFeeder:
    """Buffers one stream's audio and cuts it into chunks of ``chunk`` transducer frames,
    ``(chunk, STACK * 384)`` each (see the module's docstring)."""

    def __init__(self, front: WhisperFrames, chunk: int) -> None:
        self.front, self.chunk = front, chunk
        self.chunk_samples = chunk * STACK * FRAME_SAMPLES
        self._audio = np.zeros(0, np.float32)
        self._start = 0  # the stream position of _audio[0]
        self._done = 0  # stream samples already handed on as frames

    def push(self, samples: np.ndarray) -> list[torch.Tensor]:
        self._audio = np.concatenate([self._audio, samples.astype(np.float32, copy=False)])
        chunks = []
        while self._start + len(self._audio) - self._done >= self.chunk_samples:
            chunks.append(self._frames(self._done + self.chunk_samples))
        self._trim()
        return chunks

    def flush(self, tail_ms: int = 240) -> list[torch.Tensor]:
        """``tail_ms`` of silence (room for the last word's tokens), padded to whole chunks,
        encoded once with the whole utterance: the rest of its frames, chunk by chunk."""
        end = self._start + len(self._audio) + tail_ms * 16
        end += -(end - self._done) % self.chunk_samples
        self._audio = np.concatenate(
            [self._audio, np.zeros(end - self._start - len(self._audio), np.float32)])
        if end == self._done:
            return []
        frames = self._frames(end)
        return list(frames.split(self.chunk))

    def _frames(self, end: int) -> torch.Tensor:
        """The frames from ``_done`` to ``end`` (stream samples), from one encode of the
        audio up to ``end``."""
        first = max(self._start, end - WINDOW_S * 16_000)
        first -= (first - self._start) % FRAME_SAMPLES
        encoded = self.front.encode(self._audio[first - self._start:end - self._start])
        lo, hi = (self._done - first) // FRAME_SAMPLES, (end - first) // FRAME_SAMPLES
        self._done = end
        return torch.from_numpy(encoded[lo:hi].reshape(-1, STACK * WHISPER_WIDTH))

    def _trim(self) -> None:
        """Forget audio no later encode can reach."""
        drop = self._start + len(self._audio) - WINDOW_S * 16_000 - self.chunk_samples
        drop -= drop % FRAME_SAMPLES
        if drop > self._start:
            self._audio = self._audio[drop - self._start:]
            self._start = drop


@dataclass
class LSTMEncoderState:
    """The head's per-stream state, batched along dim 1 (torch's LSTM layout)."""

    h: torch.Tensor  # (layers, B, hidden)
    c: torch.Tensor

    @staticmethod
    def stack(states: list[LSTMEncoderState]) -> LSTMEncoderState:
        return LSTMEncoderState(torch.cat([s.h for s in states], 1),
                                torch.cat([s.c for s in states], 1))

    def split(self) -> list[LSTMEncoderState]:
        return [LSTMEncoderState(self.h[:, i:i + 1], self.c[:, i:i + 1])
                for i in range(self.h.shape[1])]


class WhisperHeadEncoder(nn.Module):
    """Stacked Whisper frames -> ``d_model``: a projection and a unidirectional LSTM, so
    chunks carry their state and a whole sequence gives the same as its chunks."""

    def __init__(self, d_model: int, layers: int) -> None:
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(STACK * WHISPER_WIDTH),
                                 nn.Linear(STACK * WHISPER_WIDTH, d_model), nn.ReLU(),
                                 nn.Dropout(0.1))
        self.lstm = nn.LSTM(d_model, d_model, layers, batch_first=True)

    def init_state(self, batch: int = 1) -> LSTMEncoderState:
        zero = self.inp[0].weight.new_zeros(self.lstm.num_layers, batch, self.lstm.hidden_size)
        return LSTMEncoderState(zero, zero)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None,
                chunk: int | None = None, left: int | None = None) -> torch.Tensor:
        """Whole sequences ``(B, T, STACK * 384)`` (training, reference); ``lengths``,
        ``chunk`` and ``left`` are the Conformer's and change nothing here (causal)."""
        return self.lstm(self.inp(feats))[0]

    def stream(self, feats: torch.Tensor, state: LSTMEncoderState
               ) -> tuple[torch.Tensor, LSTMEncoderState]:
        out, (h, c) = self.lstm(self.inp(feats), (state.h, state.c))
        return out, LSTMEncoderState(h, c)
