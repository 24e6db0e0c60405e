"""LiveKit audio frames (interleaved int16) to and from voiceagent's mono float32 arrays."""

from __future__ import annotations

import numpy as np
from livekit import rtc

from voiceagent.audio import check_finite, to_mono_float


def to_float(frame: rtc.AudioFrame) -> np.ndarray:
    """A frame's samples as mono float32 in [-1, 1] (channels averaged)."""
    pcm = np.frombuffer(frame.data, dtype=np.int16).reshape(-1, frame.num_channels)
    return to_mono_float(pcm)


def to_pcm(samples: np.ndarray) -> bytes:
    """Mono float32 samples as int16 PCM (clipped); NaN or infinity is an error."""
    clean = check_finite(np.asarray(samples, dtype=np.float32), "audio for LiveKit")
    return (np.clip(clean, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def to_frame(samples: np.ndarray, rate: int) -> rtc.AudioFrame:
    """Mono float32 samples as one LiveKit frame."""
    return rtc.AudioFrame(data=to_pcm(samples), sample_rate=rate, num_channels=1,
                          samples_per_channel=len(samples))
