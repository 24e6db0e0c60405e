"""Whisper's encoder as the transducer's streamed front end (whisper_front.py): the feeder
hands on the same frames however the audio arrives, a chunk never sees audio after it, long
turns slide the window, and the LSTM head streams exactly."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("faster_whisper")

from voiceagent.audio import load_audio  # noqa: E402
from voiceagent_plugins.transducer.whisper_front import (  # noqa: E402
    STACK, WHISPER_WIDTH, WINDOW_S, WhisperChunkFeeder, WhisperFrames, WhisperHeadEncoder)

torch.set_num_threads(1)
CHUNK = 2  # transducer frames (160 ms)


@pytest.fixture(scope="module")
def front():
    return WhisperFrames()


@pytest.fixture(scope="module")
def clip(speech_dir):
    return load_audio(speech_dir / "cmu_cards_005.wav", 16_000)


def feed(front, audio: np.ndarray, piece: int | None = None) -> list[torch.Tensor]:
    feeder = WhisperChunkFeeder(front, CHUNK)
    piece = piece or len(audio)
    chunks = []
    for start in range(0, len(audio), piece):
        chunks += feeder.push(audio[start:start + piece])
    return chunks + feeder.flush()


def test_pieces_give_the_frames_of_the_whole(front, clip):
    whole = feed(front, clip)
    assert all(c.shape == (CHUNK, STACK * WHISPER_WIDTH) for c in whole)
    # the clip, 240 ms of silence after it, whole chunks of 160 ms
    assert len(whole) == -(-(len(clip) + 240 * 16) // 2560)
    for piece in (320, 700, 16_000):
        torch.testing.assert_close(torch.cat(feed(front, clip, piece)), torch.cat(whole),
                                   rtol=0, atol=0)


def test_a_chunk_sees_no_audio_after_it(front, clip):
    cut = 16_000  # 1 s: the end of chunk 6
    changed = clip.copy()
    changed[cut:] = np.random.default_rng(0).standard_normal(len(clip) - cut) * 0.1
    a, b = feed(front, clip), feed(front, changed)
    assert all(torch.equal(x, y) for x, y in zip(a[:6], b[:6]))
    assert not torch.equal(a[6], b[6])


def test_a_long_turn_slides_the_window_and_forgets_old_audio(front, clip):
    long = np.tile(clip, 1 + int(WINDOW_S * 16_000 / len(clip)) + 1)
    feeder = WhisperChunkFeeder(front, CHUNK)
    chunks = feeder.push(long)
    assert len(chunks) == len(long) // 2560
    assert len(feeder._audio) <= (WINDOW_S * 16_000 + 2 * 2560)
    chunks += feeder.flush()
    assert torch.isfinite(torch.cat(chunks)).all()


def test_the_head_streams_as_it_runs_whole():
    torch.manual_seed(0)
    head = WhisperHeadEncoder(32, 2).eval()
    feats = torch.randn(3, 10, STACK * WHISPER_WIDTH)
    with torch.inference_mode():
        whole = head(feats)
        state, parts = head.init_state(3), []
        for start in range(0, 10, CHUNK):
            out, state = head.stream(feats[:, start:start + CHUNK], state)
            parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole)


async def test_the_shipped_model_quantised_shares_the_encoder_and_transcribes(speech_dir):
    from voiceagent import registry

    stt = registry.get("stt", "transducer", quantize=True)
    stream = stt.stream()
    try:
        audio = load_audio(speech_dir / "uberi_one_two_three.wav", 16_000)
        await stream.push(audio)
        final = await stream.finish()
    finally:
        await stream.aclose()
    assert final.text == "one two three"
