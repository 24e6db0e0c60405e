"""Our NeMo loader against NeMo itself: ``tests/data/nemo/`` holds a FastConformer RNN-T and a
TDT model that NeMo 3.0.0 built (random weights) and saved with ``save_to``, with NeMo's own
outputs on a real clip (``benchmarks/nemo_interop.py`` made them; ``nemo_version.json`` says
with which NeMo). No NeMo is needed here.

Tolerances (float32 throughout):
* features 2e-4 on log-mels of magnitude up to ~17: NeMo's ``torch.stft`` and our framed
  ``torch.fft.rfft`` round differently (observed 7e-5); everything else is the same formula;
* encoder 1e-4, from NeMo's features (observed: bit-identical) and streamed chunk by chunk
  from our own features, which carry the front end's rounding (observed 3.5e-6);
* joint log-probabilities 1e-5 (observed 1e-6);
* greedy tokens: identical.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("yaml")

from voiceagent.audio import load_audio  # noqa: E402
from voiceagent_plugins.transducer.decoding import GreedyDecoder  # noqa: E402
from voiceagent_plugins.transducer.nemo import load_nemo  # noqa: E402
from voiceagent_plugins.transducer.streaming import ChunkFeeder  # noqa: E402

DATA = Path(__file__).parent / "data" / "nemo"
MODELS = ["fastconformer_rnnt", "fastconformer_tdt"]


@pytest.fixture(scope="module")
def audio(speech_dir):
    clip = json.loads((DATA / "nemo_version.json").read_text())["clip"]
    return load_audio(speech_dir / clip, 16_000)


def streamed(model, audio, decoder, frames: int):
    """Our streaming path, as the engine runs it: features piece by piece, encoder chunk by
    chunk with caches, greedy decoding carried across chunks, over the first ``frames``
    encoder frames (NeMo's count: our flush's silence would decode further)."""
    feeder = ChunkFeeder(model, model.cfg.chunk_frames)
    feats = feeder.push(audio)
    state, hyp, outs = model.encoder.init_state(1), decoder.initial(), []
    with torch.inference_mode():
        for chunk in feats + feeder.flush():
            enc, state = model.encoder.stream(chunk[None], state)
            keep = frames - sum(len(o) for o in outs)
            outs.append(enc[0])
            if keep > 0:
                decoder.decode(model.joint.enc(enc[:, :keep]), [hyp])
    return torch.cat(feats), torch.cat(outs), hyp.tokens


@pytest.mark.parametrize("name", MODELS)
def test_nemo_model_loads_and_matches_nemo(name, audio):
    ref = {k: torch.from_numpy(v) for k, v in np.load(DATA / f"{name}.npz").items()}
    model = load_nemo(DATA / f"{name}.nemo")
    tdt = name.endswith("tdt")
    assert bool(model.cfg.durations) == tdt
    decoder = GreedyDecoder(model, tdt=tdt, max_symbols=8)  # NeMo's greedy.max_symbols

    feats, enc_streamed, tokens = streamed(model, audio, decoder, len(ref["encoder"]))
    n = len(feats)
    assert n >= len(ref["features"]) - 16  # all but the last incomplete chunk
    torch.testing.assert_close(feats, ref["features"][:n], rtol=0, atol=2e-4)

    with torch.inference_mode():
        usable = len(ref["features"]) // 8 * 8  # NeMo's causal padding adds a last frame
        enc = model.encoder(ref["features"][None, :usable])[0]
    torch.testing.assert_close(enc, ref["encoder"][:len(enc)], rtol=0, atol=1e-4)
    m = min(len(enc_streamed), len(ref["encoder_streamed"]) - model.cfg.chunk_frames)
    torch.testing.assert_close(enc_streamed[:m], ref["encoder_streamed"][:m], rtol=0, atol=1e-4)

    with torch.inference_mode():
        f = model.joint.enc(ref["encoder"][None, :ref["joint_logits"].shape[0]])
        g, _ = model.decoder(ref["joint_tokens"][None])
        tok, dur = model.joint(f[:, :, None], model.joint.pred(g)[:, None])
        hyp = decoder.initial()
        decoder.decode(model.joint.enc(ref["encoder"][None]), [hyp])
    logits, v = ref["joint_logits"], model.cfg.blank + 1
    torch.testing.assert_close(tok[0], logits[..., :v].log_softmax(-1), rtol=0, atol=1e-5)
    if tdt:
        torch.testing.assert_close(dur[0], logits[..., v:].log_softmax(-1), rtol=0, atol=1e-5)

    expected = ref["greedy_tokens"].tolist()
    assert expected, "the recorded model emits tokens"
    assert hyp.tokens == expected  # NeMo's encoder output, our greedy decoding
    assert tokens == expected  # our whole streaming path from audio


async def test_nemo_front_end_streams_batched_in_any_pieces(audio):
    """Pre-emphasis and the centring lead carry per stream: streams fed in different piece
    sizes and batched together decode exactly as the clip fed whole."""
    from voiceagent_plugins.transducer.engine import TransducerEngine

    model = load_nemo(DATA / "fastconformer_tdt.nemo")
    engine = TransducerEngine(model, "tdt", max_batch=4, max_wait_ms=20)

    async def run(piece: int) -> list[int]:
        stream = engine.stream()
        try:
            for start in range(0, len(audio), piece):
                await stream.feed(audio[start:start + piece])
            return await stream.feed(np.zeros(0, np.float32), flush=True)
        finally:
            stream.close()

    results = await asyncio.gather(*(run(p) for p in (320, 701, 4096)))
    assert max(engine.batch_sizes) > 1
    whole = engine.stream()
    try:
        expected = await whole.feed(audio, flush=True)
    finally:
        whole.close()
    assert expected and results == [expected] * 3
