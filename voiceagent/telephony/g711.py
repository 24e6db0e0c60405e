"""G.711 mu-law (PCMU) and A-law (PCMA): the codecs every phone network speaks.

Table-driven with numpy (the stdlib's ``audioop`` is gone from Python 3.13). Decoding is a
256-entry lookup; encoding is a lookup over all 65,536 16-bit values, built once on import.
"""

from __future__ import annotations

import numpy as np

_BIAS = 0x84
_CLIP = 32635


def _ulaw_encode_one(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), _CLIP) + _BIAS
    exponent = max(magnitude.bit_length() - 8, 0)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def _ulaw_decode_one(code: int) -> int:
    code = ~code & 0xFF
    magnitude = ((((code & 0x0F) << 3) + _BIAS) << ((code >> 4) & 0x07)) - _BIAS
    return -magnitude if code & 0x80 else magnitude


def _alaw_encode_one(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    magnitude = (~sample if sample < 0 else sample) >> 3  # 13-bit, as G.191 does
    if magnitude < 32:
        code = magnitude >> 1
    else:
        exponent = magnitude.bit_length() - 5
        code = (exponent << 4) | ((magnitude >> exponent) & 0x0F)
    return (sign | code) ^ 0x55


def _alaw_decode_one(code: int) -> int:
    code ^= 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    if exponent == 0:
        magnitude = (mantissa << 4) + 8
    else:
        magnitude = ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if code & 0x80 else -magnitude


_ALL = range(-32768, 32768)
_ULAW_ENCODE = np.array([_ulaw_encode_one(s) for s in _ALL], np.uint8)
_ALAW_ENCODE = np.array([_alaw_encode_one(s) for s in _ALL], np.uint8)
_ULAW_DECODE = np.array([_ulaw_decode_one(c) for c in range(256)], np.float32) / 32768.0
_ALAW_DECODE = np.array([_alaw_decode_one(c) for c in range(256)], np.float32) / 32768.0


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).astype(np.int32) + 32768


def encode_ulaw(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] to mu-law bytes."""
    return _ULAW_ENCODE[_to_int16(samples)].tobytes()


def encode_alaw(samples: np.ndarray) -> bytes:
    return _ALAW_ENCODE[_to_int16(samples)].tobytes()


def decode_ulaw(payload: bytes) -> np.ndarray:
    """mu-law bytes to float32 in [-1, 1]."""
    return _ULAW_DECODE[np.frombuffer(payload, np.uint8)]


def decode_alaw(payload: bytes) -> np.ndarray:
    return _ALAW_DECODE[np.frombuffer(payload, np.uint8)]
