"""Streaming transducer speed: per chunk size, per decoding, per batch size.

    python benchmarks/transducer.py [--data DIR] [--clips NAME ...] [--runs 3] [--json]
        [--checkpoint PATH] [--chunks-ms 80 160 320 640] [--batches 1 2 4 8 16] [--threads 1]

* ``chunks``: each clip pushed through the ``transducer`` STT backend in 20 ms pieces, as fast
  as possible. ``rtf`` = compute / audio time; ``ms_per_chunk`` = compute per encoder chunk;
  ``first_partial_s`` = audio pushed when the first partial appeared (what a user waits for,
  plus compute: the model emits a word only after the chunk holding its end is complete).
  ``int8`` repeats the default chunk with dynamic int8 quantisation.
* ``decoding``: greedy RNN-T vs TDT on the same encoder output: joint calls and decode time.
* ``batching``: one batched encoder+decoder step for N streams (all replaying the first
  clip); ``streams_real_time`` is the
  largest N whose step fits in the chunk's duration on this machine (one CPU thread unless
  ``--threads``).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from common import clips, emit, median, parser

from voiceagent import registry
from voiceagent.audio import load_audio

PIECE = 320  # 20 ms


async def stream_clip(stt, audio: np.ndarray) -> tuple[float, float | None, str]:
    stream = stt.stream()
    first = None
    t0 = time.perf_counter()
    for i in range(0, len(audio), PIECE):
        if await stream.push(audio[i:i + PIECE]) is not None and first is None:
            first = (i + PIECE) / 16_000
    final = await stream.finish()
    compute = time.perf_counter() - t0
    await stream.aclose()
    return compute, first, final.text


def chunk_figures(args, audios, chunk_ms: int, quantize: bool = False) -> dict:
    stt = registry.get("stt", "transducer", checkpoint=args.checkpoint, chunk_ms=chunk_ms,
                       quantize=quantize)
    seconds = sum(len(a) for a in audios) / 16_000
    computes, firsts, texts = [], [], []
    asyncio.run(stream_clip(stt, audios[0]))  # warm-up, not timed
    for _ in range(args.runs):
        for audio in audios:
            compute, first, text = asyncio.run(stream_clip(stt, audio))
            computes.append(compute)
            firsts.append(first)
            texts.append(text)
    total = sum(computes) / args.runs
    chunks = seconds / (chunk_ms / 1000)
    return {"chunk_ms": chunk_ms, "int8": quantize, "rtf": round(total / seconds, 4),
            "ms_per_chunk": round(1000 * total / chunks, 2),
            "first_partial_s": median([f for f in firsts if f is not None]),
            "texts": texts[: len(audios)]}


def decoding_figures(args, audios) -> dict:
    import torch

    from voiceagent_plugins.transducer.checkpoint import SHIPPED, load
    from voiceagent_plugins.transducer.decoding import GreedyDecoder
    from voiceagent_plugins.transducer.streaming import ChunkFeeder

    model = load(args.checkpoint or SHIPPED)
    out = {}
    for tdt in (False, True):
        decoder = GreedyDecoder(model, tdt=tdt)
        calls, times = 0, []
        for audio in audios:
            feeder = ChunkFeeder(model, model.cfg.chunk_frames)
            feats = torch.cat(feeder.push(audio) + feeder.flush())
            with torch.inference_mode():
                f = model.joint.enc(model.encoder(feats[None]))
            for _ in range(args.runs):
                hyp = decoder.initial()
                t0 = time.perf_counter()
                decoder.decode(f, [hyp])
                times.append(time.perf_counter() - t0)
            calls += hyp.joint_calls
        out["tdt" if tdt else "rnnt"] = {
            "joint_calls": calls, "decode_ms": round(1000 * sum(times) / args.runs, 2)}
    return out


def batching_figures(args, audios, chunk_ms: int) -> dict:
    """N streams all saying the first clip (caches filling as in real use): median time of
    one batched encoder + greedy decoding step."""
    import torch

    from voiceagent_plugins.transducer.checkpoint import SHIPPED, load
    from voiceagent_plugins.transducer.decoding import GreedyDecoder
    from voiceagent_plugins.transducer.model import EncoderState
    from voiceagent_plugins.transducer.streaming import ChunkFeeder

    model = load(args.checkpoint or SHIPPED)
    feeder = ChunkFeeder(model, chunk_ms // 80)
    chunks = feeder.push(audios[0]) + feeder.flush()
    decoder = GreedyDecoder(model, tdt=bool(model.cfg.durations))
    rows = []
    for n in args.batches:
        state = EncoderState.stack([model.encoder.init_state(1) for _ in range(n)])
        hyps = [decoder.initial() for _ in range(n)]
        times = []
        with torch.inference_mode():
            for feats in chunks:
                t0 = time.perf_counter()
                enc, state = model.encoder.stream(feats.expand(n, -1, -1), state)
                decoder.decode(model.joint.enc(enc), hyps)
                times.append(time.perf_counter() - t0)
        step_ms = 1000 * float(np.median(times[1:] or times))
        rows.append({"streams": n, "step_ms": round(step_ms, 2),
                     "real_time": step_ms < chunk_ms})
    capacity = max([r["streams"] for r in rows if r["real_time"]], default=0)
    return {"chunk_ms": chunk_ms, "steps": rows, "streams_real_time": capacity}


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--chunks-ms", type=int, nargs="+", default=[80, 160, 320, 640])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 128, 256])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    selected = clips(args)
    audios = [load_audio(c.path, 16_000) for c in selected]
    figures = {
        "clips": [c.name for c in selected], "threads": args.threads,
        "chunks": [chunk_figures(args, audios, ms) for ms in args.chunks_ms]
        + [chunk_figures(args, audios, 160, quantize=True)],
        "decoding": decoding_figures(args, audios),
        "batching": [batching_figures(args, audios, ms) for ms in (160, 640)],
    }
    lines = ["chunk_ms int8   rtf  ms/chunk  first_partial_s"]
    lines += [f"{c['chunk_ms']:>8} {str(c['int8']):>5} {c['rtf']:.3f} {c['ms_per_chunk']:>8} "
              f"{c['first_partial_s']}" for c in figures["chunks"]]
    d = figures["decoding"]
    lines.append(f"\ngreedy rnnt: {d['rnnt']['joint_calls']} joint calls, "
                 f"{d['rnnt']['decode_ms']} ms; tdt: {d['tdt']['joint_calls']} joint calls, "
                 f"{d['tdt']['decode_ms']} ms")
    for b in figures["batching"]:
        steps = ", ".join(f"{r['streams']}: {r['step_ms']} ms" for r in b["steps"])
        lines.append(f"\nbatch step at {b['chunk_ms']} ms chunks ({steps}); streams in real "
                     f"time: {b['streams_real_time']}")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    main()
