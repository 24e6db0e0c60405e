"""Log-mel features in plain torch (no torchaudio), computable incrementally.

Frames are not centred (frame ``t`` covers samples ``[t*hop, t*hop + win)``), so a stream that
feeds audio piece by piece gets exactly the frames of the whole signal. NeMo's front end
(pre-emphasis, a centred STFT padded with zeros, its own window and Slaney filterbank, an
additive log guard) is the same computation once the stream starts with ``lead`` zeros
(centring frame ``t`` on sample ``t*hop``) and each piece is pre-emphasised with the previous
piece's last sample (:meth:`LogMel.emphasise`); ``nemo.py`` builds it from a checkpoint.
"""

from __future__ import annotations

import math

import numpy as np
import torch

SAMPLE_RATE = 16_000


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """Triangular HTK-scale filters, shape ``(n_fft // 2 + 1, n_mels)``."""
    fmax = fmax or sample_rate / 2

    def mel(f: float | torch.Tensor):
        return 2595.0 * (torch.log10(1 + f / 700.0) if torch.is_tensor(f)
                         else math.log10(1 + f / 700.0))

    points = torch.linspace(mel(fmin), mel(fmax), n_mels + 2)
    hz = 700.0 * (10 ** (points / 2595.0) - 1)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = hz[:-2], hz[1:-1], hz[2:]
    up = (freqs[:, None] - lower) / (centre - lower)
    down = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(up, down), min=0.0)


class LogMel(torch.nn.Module):
    """``(B, samples) -> (B, frames, n_mels)``; 25 ms windows every 10 ms by default.

    ``preemph``: pre-emphasis coefficient (0: none); ``centred``: frames centred on
    ``t * hop`` as in a centred STFT (the stream starts with ``lead`` zeros); ``window``,
    ``fbank`` ``(n_fft // 2 + 1, n_mels)``: given tensors instead of ours; ``log_guard``:
    added before the log."""

    def __init__(self, n_mels: int = 80, win: int = 400, hop: int = 160, n_fft: int = 512, *,
                 preemph: float = 0.0, centred: bool = False, log_guard: float = 1e-6,
                 window: torch.Tensor | None = None, fbank: torch.Tensor | None = None) -> None:
        super().__init__()
        self.win, self.hop, self.n_fft = win, hop, n_fft
        self.preemph, self.log_guard = preemph, log_guard
        # a centred STFT's frame t spans [t*hop - n_fft/2, + n_fft) with the window in its
        # middle: the windowed samples start win/2 before t*hop
        self.lead = n_fft // 2 - (n_fft - win) // 2 if centred else 0
        self.register_buffer("window", torch.hann_window(win) if window is None
                             else window.float().clone(), persistent=False)
        self.register_buffer("fbank", mel_filterbank(n_mels, n_fft) if fbank is None
                             else fbank.float().clone(), persistent=False)

    def emphasise(self, samples: np.ndarray, previous: float) -> np.ndarray:
        """Pre-emphasis of one piece of a stream, ``previous`` the sample before it."""
        if not self.preemph or not len(samples):
            return samples
        out = samples.copy()
        out[1:] -= self.preemph * samples[:-1]
        out[0] -= self.preemph * previous
        return out

    def frames(self, samples: int) -> int:
        return 0 if samples < self.win else 1 + (samples - self.win) // self.hop

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        n = self.frames(audio.shape[-1])
        if n == 0:
            return audio.new_zeros(audio.shape[0], 0, self.fbank.shape[1])
        framed = audio[..., : self.win + (n - 1) * self.hop].unfold(-1, self.win, self.hop)
        spec = torch.fft.rfft(framed * self.window, n=self.n_fft).abs() ** 2
        return torch.log(spec @ self.fbank + self.log_guard)
