"""The multi-stream engine: batched streams decode exactly as each stream alone."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from voiceagent_plugins.transducer.decoding import GreedyDecoder  # noqa: E402
from voiceagent_plugins.transducer.engine import TransducerEngine  # noqa: E402
from voiceagent_plugins.transducer.model import ModelConfig, Transducer  # noqa: E402
from voiceagent_plugins.transducer.streaming import transcribe  # noqa: E402

torch.set_num_threads(1)


def random_model(front_end: str = "log_mel") -> Transducer:
    """Random weights; ``front_end="whisper"``: a random head on Whisper's real encoder."""
    torch.manual_seed(3)
    cfg = ModelConfig([f"w{i}" for i in range(12)], d_model=32, n_heads=4, n_layers=2,
                      subsampling_channels=8, conv_kernel=5, chunk_frames=2, left_context=6,
                      pred_hidden=32, joint_hidden=32, durations=[0, 1, 2, 3],
                      front_end=front_end)
    model = Transducer(cfg).eval()
    with torch.no_grad():  # make tokens likelier than blank now and then
        model.joint.joint_net[2].bias[:12] += 1.5
    return model


def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.arange(16_000 * 3) / 16_000
    return [(0.3 * np.sin(2 * np.pi * (200 + 150 * k) * t[: n] * (1 + t[: n]))
             + 0.05 * rng.standard_normal(n)).astype(np.float32)
            for k, n in enumerate([16_000, 27_000, 41_000, 9_500])]


@pytest.mark.parametrize("decoding,front_end", [("tdt", "log_mel"), ("rnnt", "log_mel"),
                                               ("beam", "log_mel"), ("tdt", "whisper")])
async def test_batched_streams_equal_streams_alone(decoding, front_end):
    if front_end == "whisper":
        pytest.importorskip("faster_whisper")
    model = random_model(front_end)
    engine = TransducerEngine(model, decoding, max_batch=8, max_wait_ms=20)
    audio = clips()

    async def run(stream, samples, piece):
        for start in range(0, len(samples), piece):
            await stream.feed(samples[start:start + piece])
        return await stream.feed(np.zeros(0, np.float32), flush=True), stream.joint_calls

    streams = [engine.stream() for _ in audio]
    try:
        results = await asyncio.gather(*(run(s, a, p) for s, a, p in
                                         zip(streams, audio, [320, 1280, 2560, 700])))
    finally:
        for s in streams:
            s.close()
    assert engine._thread is None  # the last stream closed: the worker stopped
    assert max(engine.batch_sizes) > 1
    alone = TransducerEngine(model, decoding)
    for samples, (tokens, calls) in zip(audio, results):
        stream = alone.stream()
        assert (await stream.feed(samples, flush=True), stream.joint_calls) == (tokens, calls)
        stream.close()
    if decoding != "beam":
        greedy = GreedyDecoder(model, tdt=decoding == "tdt")
        assert [model.text(t) for t, _ in results] == [transcribe(model, a, greedy)
                                                         for a in audio]
    assert any(tokens for tokens, _ in results)


async def test_streams_join_and_leave_while_others_run():
    model = random_model()
    engine = TransducerEngine(model, "tdt", max_batch=2, max_wait_ms=1)
    first = engine.stream()
    await first.feed(clips()[0][:8000])
    late = engine.stream()  # joins mid-way, with empty caches of its own
    a, b = await asyncio.gather(first.feed(clips()[0][8000:], flush=True),
                                late.feed(clips()[1], flush=True))
    first.close()  # leaves; `late` goes on alone with a new utterance
    late.reset()
    c = await late.feed(clips()[2], flush=True)
    late.close()
    assert engine._thread is None
    alone = TransducerEngine(model, "tdt")
    for samples, tokens in ((clips()[0], a), (clips()[1], b), (clips()[2], c)):
        stream = alone.stream()
        assert tokens == await stream.feed(samples, flush=True)
        stream.close()


async def test_closing_the_last_stream_does_not_wait_for_the_worker(monkeypatch):
    """A session that closes never waits for a thread: the worker finishes its step on its
    own, and a worker started meanwhile waits for it (the model never runs twice at once)."""
    import threading
    import time

    engine = TransducerEngine(random_model(), "rnnt")
    step, inside, most = engine._round, [0], [0]
    entered = threading.Event()

    def slow_round(active):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        entered.set()
        time.sleep(0.5)
        try:
            return step(active)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(engine, "_round", slow_round)
    first = engine.stream()
    feeding = asyncio.ensure_future(first.feed(clips()[0][:8000]))
    assert await asyncio.to_thread(entered.wait, 10)
    t0 = time.monotonic()
    first.close()
    assert time.monotonic() - t0 < 0.1  # it did not join the worker in its 0.5 s step
    second = engine.stream()  # while the first worker is still in its step
    try:
        tokens = await asyncio.wait_for(second.feed(clips()[1], flush=True), 30)
    finally:
        second.close()
    await asyncio.gather(feeding, return_exceptions=True)
    assert isinstance(tokens, list) and most[0] == 1
