"""Audio at the edges: load, validate, convert to the pipeline's 16 kHz mono float32, write.

Conversion happens once, where audio enters or leaves a session. Streams that arrive in
pieces use :class:`StreamResampler`, which keeps filter state between chunks so chunk borders
make no clicks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import AudioInputError

PIPELINE_RATE = 16_000


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) int/float samples to mono float32 in [-1, 1]."""
    a = np.asarray(samples)
    if a.dtype.kind == "i":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    elif a.dtype.kind == "u":
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float32) - (info.max + 1) / 2) / ((info.max + 1) / 2)
    else:
        a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        a = a.mean(axis=1, dtype=np.float32)
    elif a.ndim != 1:
        raise AudioInputError(f"audio must be 1-D or (samples, channels), got shape {a.shape}")
    return a


def check_finite(samples: np.ndarray, what: str = "audio") -> np.ndarray:
    if not np.all(np.isfinite(samples)):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioInputError(f"{what} contains {bad} NaN or infinite samples")
    return samples


def resample(samples: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    if src_rate == dst_rate:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, src_rate, dst_rate, quality="HQ").astype(np.float32)


class StreamResampler:
    """Chunk-by-chunk resampling with state carried across chunks."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate, self.dst_rate = src_rate, dst_rate
        self._stream = None
        if src_rate != dst_rate:
            import soxr

            self._stream = soxr.ResampleStream(src_rate, dst_rate, 1, dtype="float32",
                                               quality="HQ")

    def __call__(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples.astype(np.float32, copy=False)
        return self._stream.resample_chunk(samples.astype(np.float32, copy=False), last=last)


def load_audio(path: str | Path, rate: int = PIPELINE_RATE) -> np.ndarray:
    """Any file libsndfile reads (WAV of any rate and channel count, FLAC, OGG) as mono
    float32 at ``rate``. Raises :class:`AudioInputError` with a plain reason otherwise."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioInputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioInputError(f"{path}: the file is empty")
    try:
        data, src_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile's message says why ("Format not recognised")
        raise AudioInputError(f"{path}: not a readable audio file ({exc})") from exc
    if data.shape[0] == 0:
        raise AudioInputError(f"{path}: the file holds no audio samples")
    mono = check_finite(to_mono_float(data), str(path))
    return resample(mono, int(src_rate), rate)


class AudioTimeline:
    """Frames laid end to end on the session clock: each follows the last, and silence fills
    where frames are missing (a frame stamped half a frame or more past the end: ticks a
    stalled pacer skipped), so the audio stays on the session's timeline without the
    sub-frame jitter of the stamps cutting into it."""

    def __init__(self, rate: int, dtype: type = np.float32) -> None:
        self.rate = rate
        self.dtype = dtype
        self._frames: list[np.ndarray] = []
        self._written = 0  # samples so far

    def add(self, samples: np.ndarray, ts: float) -> None:
        gap = round(ts * self.rate) - self._written
        if gap >= max(1, len(samples) // 2):
            self._frames.append(np.zeros(gap, self.dtype))
            self._written += gap
        self._frames.append(samples.astype(self.dtype, copy=True))
        self._written += len(samples)

    def samples(self) -> np.ndarray:
        return np.concatenate(self._frames) if self._frames else np.zeros(0, self.dtype)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> None:
    import soundfile as sf

    clipped = np.clip(np.nan_to_num(samples), -1.0, 1.0)
    sf.write(str(path), clipped, rate, subtype="PCM_16")


def leading_silence(samples: np.ndarray, rate: int, floor_dbfs: float = -60.0,
                    step: float = 0.005, margin: float = 0.005) -> int:
    """How many samples of near-silence open ``samples``: those before the first ``step``-long
    window louder than ``floor_dbfs``, less ``margin`` kept so the onset stays whole (0 if no
    window is that loud). Piper opens each synthesis with 20-60 ms at about -90 dBFS, which a
    reply's listener would only wait through."""
    if not len(samples):
        return 0
    width = max(1, round(step * rate))
    starts = np.arange(0, len(samples), width)
    power = (np.add.reduceat(np.square(samples, dtype=np.float64), starts)
             / np.diff(starts, append=len(samples)))  # mean square of each window
    loud = np.flatnonzero(power > 10 ** (floor_dbfs / 10))
    return max(0, int(starts[loud[0]]) - round(margin * rate)) if len(loud) else 0


def rms_dbfs(samples: np.ndarray) -> float:
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20 * np.log10(max(rms, 1e-6))
