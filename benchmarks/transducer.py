"""Streaming transducer speed: per chunk size, per decoding, per batch size.

    python benchmarks/transducer.py [--data DIR] [--clips NAME ...] [--runs 3] [--json]
        [--checkpoint PATH] [--chunks-ms 80 160 320 640] [--batches 1 2 4 8 16] [--threads 1]
        [--only SECTION ...] [--held-out DIR ...]

* ``chunks``: each clip pushed through the ``transducer`` STT backend in 20 ms pieces, as fast
  as possible. ``rtf`` = compute / audio time; ``ms_per_chunk`` = compute per encoder chunk;
  ``first_partial_s`` = audio pushed when the first partial appeared (what a user waits for,
  plus compute: the model emits a word only after the chunk holding its end is complete).
  ``int8`` repeats the default chunk with dynamic int8 quantisation.
* ``decoding``: greedy RNN-T vs TDT on the same encoder output: joint calls and decode time;
  ``durations`` is TDT's histogram of predicted durations (frames jumped) at its joint calls,
  for blanks and for tokens.
* ``real_voice``: the in-domain word error rate on the real recordings with numbers
  (``voiceagent_plugins/transducer/real_speech.py`` says which clips and the exact rule),
  clean and through a phone line (8 kHz G.711 mu-law): ours with greedy RNN-T and TDT (and
  their joint calls) beside Whisper tiny.en (the ``whisper`` backend) on the same audio.
* ``synthetic``: pooled WER and joint calls of greedy RNN-T and TDT on held-out synthetic
  speech, streaming: each ``--held-out DIR`` is a corpus written by
  ``python -m voiceagent_plugins.transducer.synth --out DIR --seed 424242 --count 100`` (a seed
  no training run uses); without one the set is synthesised here (the TTS engines of
  ``training/turn/setup.sh``). Keep the folder: Piper samples differently on every run, so
  checkpoints compare only on the same stored audio.
* ``batching``: one batched encoder+decoder step for N streams (all replaying the first
  clip); ``throughput`` = N x chunk / step, the streams one thread keeps in real time when
  they are batched N at a time (the throughput curve); ``streams_real_time`` is the largest N
  whose step fits in the chunk's duration on this machine (one CPU thread unless
  ``--threads``). ``front_end_ms_per_chunk``: the feeder's time per chunk and stream (log-mel,
  or the Whisper encoder, which is not batched); ``throughput_with_front_end`` counts it.
* ``engine``: N streams fed concurrently through the engine (``max_batch`` N) in 20 ms
  pieces, as fast as possible: ``throughput`` = N x clip duration / wall time, the streams in
  real time the whole path sustains (features per piece, the hop to the worker thread,
  batching), not just the model step; ``mean_batch`` = average streams per model call.

``load`` is the machine's load average before and after (it is shared).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
from common import clips, emit, median, parser

from voiceagent import registry
from voiceagent.audio import load_audio

PIECE = 320  # 20 ms
HELD_OUT_SEED = 424242  # never a training seed
SECTIONS = ["chunks", "decoding", "real_voice", "synthetic", "batching", "engine"]


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


def decoding_figures(args, model, audios) -> dict:
    import torch

    from voiceagent_plugins.transducer.decoding import GreedyDecoder
    from voiceagent_plugins.transducer.streaming import feeder

    out: dict = {}
    for tdt in (False, True):
        decoder = GreedyDecoder(model, tdt=tdt)
        calls, times = 0, []
        for audio in audios:
            cut = feeder(model, model.cfg.chunk_frames)
            feats = torch.cat(cut.push(audio) + cut.flush())
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
    if model.cfg.durations:
        out["durations"] = duration_histogram(model, audios)
    return out


def duration_histogram(model, audios) -> dict[str, dict[int, int]]:
    """TDT greedy over ``audios``: how often each duration was predicted, for blanks and for
    tokens (read off the joint's outputs by a hook: the decoder itself keeps no tally)."""
    from voiceagent_plugins.transducer.decoding import GreedyDecoder
    from voiceagent_plugins.transducer.streaming import transcribe

    durations, blank = model.cfg.durations, model.cfg.blank
    counts: dict[str, dict[int, int]] = {"blank": dict.fromkeys(durations, 0),
                                         "token": dict.fromkeys(durations, 0)}

    def tally(_module, _inputs, output) -> None:
        token_lp, dur_lp = output
        for token, d in zip(token_lp.argmax(-1).flatten().tolist(),
                            dur_lp.argmax(-1).flatten().tolist()):
            counts["blank" if token == blank else "token"][durations[d]] += 1

    hook = model.joint.register_forward_hook(tally)
    try:
        for audio in audios:
            transcribe(model, audio, GreedyDecoder(model, tdt=True))
    finally:
        hook.remove()
    return counts


def greedy_scores(model, clips: dict[str, tuple[str, np.ndarray]], wer) -> dict:
    """Greedy RNN-T and TDT over ``clips`` (name -> reference, audio), streaming: ``wer`` of
    the (reference, hypothesis) pairs, joint calls and the texts, per decoding."""
    from voiceagent_plugins.transducer.decoding import GreedyDecoder
    from voiceagent_plugins.transducer.streaming import decode_clip

    out = {}
    for decoding in ("rnnt", "tdt"):
        decoder = GreedyDecoder(model, tdt=decoding == "tdt")
        hyps = {name: decode_clip(model, audio, decoder) for name, (_, audio) in clips.items()}
        texts = {name: model.text(hyp.tokens) for name, hyp in hyps.items()}
        out[decoding] = {"wer": round(wer((clips[n][0], t) for n, t in texts.items()), 4),
                         "joint_calls": sum(hyp.joint_calls for hyp in hyps.values()),
                         "texts": texts}
    return out


def real_voice_figures(args, model) -> dict:
    from training.turn.augment import phone_line
    from voiceagent_plugins.transducer.real_speech import (CLIPS, in_domain_wer, load_clips,
                                                             score)

    whisper = registry.get("stt", "whisper")
    clean = load_clips(args.data)
    out: dict = {"clips": list(clean)}
    for channel, audios in (("clean", clean),
                            ("phone", {k: phone_line(a) for k, a in clean.items()})):
        row = greedy_scores(model, {c: (CLIPS[c], a) for c, a in audios.items()},
                            in_domain_wer)
        wer, texts = score(lambda a: whisper.decode(a, final=True).text, audios)
        row["whisper_tiny_en"] = {"wer": round(wer, 3), "texts": texts}
        out[channel] = row
    return out


def synthetic_figures(args, model) -> dict:
    """Greedy RNN-T and TDT over each held-out set: pooled WER and joint calls."""
    from voiceagent_eval.wer import pooled_wer
    from voiceagent_plugins.transducer.synth import load_corpus, synthesize

    sets = ({str(d): load_corpus(d) for d in args.held_out} if args.held_out
            else {f"synthesize(100, {HELD_OUT_SEED})": list(synthesize(100, HELD_OUT_SEED))})
    out: dict = {}
    for name, utterances in sets.items():
        if not utterances:
            raise SystemExit(f"--held-out {name}: no shard-*.npz (transducer.synth writes them)")
        out[name] = {"clips": len(utterances),
                     "words": sum(len(u.text.split()) for u in utterances),
                     **greedy_scores(model, {str(i): (u.text, u.audio)
                                             for i, u in enumerate(utterances)}, pooled_wer)}
    return out


def batching_figures(args, model, audios, chunk_ms: int) -> dict:
    """N streams all saying the first clip (caches filling as in real use): median time of
    one batched encoder + greedy decoding step over ``--runs`` replays."""
    import torch

    from voiceagent_plugins.transducer.decoding import GreedyDecoder
    from voiceagent_plugins.transducer.streaming import feeder

    fronts = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        cut = feeder(model, chunk_ms // 80)
        chunks = cut.push(audios[0]) + cut.flush()
        fronts.append((time.perf_counter() - t0) / len(chunks))
    front_ms = 1000 * float(np.median(fronts))  # per stream: the feeder is not batched
    decoder = GreedyDecoder(model, tdt=bool(model.cfg.durations))
    rows = []
    for n in args.batches:
        times = []
        for _ in range(args.runs):
            state = model.encoder.init_state(n)
            hyps = [decoder.initial() for _ in range(n)]
            with torch.inference_mode():
                for i, feats in enumerate(chunks):
                    t0 = time.perf_counter()
                    enc, state = model.encoder.stream(feats.expand(n, -1, -1), state)
                    decoder.decode(model.joint.enc(enc), hyps)
                    if i:  # the first step of a run warms up
                        times.append(time.perf_counter() - t0)
        step_ms = 1000 * float(np.median(times))
        whole_ms = step_ms + n * front_ms
        rows.append({"streams": n, "step_ms": round(step_ms, 2),
                     "throughput": int(n * chunk_ms / step_ms), "real_time": step_ms < chunk_ms,
                     "throughput_with_front_end": int(n * chunk_ms / whole_ms)})
    capacity = max([r["streams"] for r in rows if r["real_time"]], default=0)
    return {"chunk_ms": chunk_ms, "front_end_ms_per_chunk": round(front_ms, 2), "steps": rows,
            "streams_real_time": capacity}


def engine_figures(args, model, audios) -> list[dict]:
    from voiceagent_plugins.transducer.engine import TransducerEngine

    audio, rows = audios[0], []

    async def run(engine: TransducerEngine) -> None:
        stream = engine.stream()
        try:
            for i in range(0, len(audio), PIECE):
                await stream.feed(audio[i:i + PIECE])
            await stream.feed(np.zeros(0, np.float32), flush=True)
        finally:
            stream.close()

    async def streams(engine: TransducerEngine, n: int) -> None:
        await asyncio.gather(*(run(engine) for _ in range(n)))

    for n in args.engine_streams:
        engine = TransducerEngine(model, "tdt", max_batch=n)
        asyncio.run(streams(engine, 1))  # warm-up
        engine.batch_sizes.clear()
        t0 = time.perf_counter()
        asyncio.run(streams(engine, n))
        wall = time.perf_counter() - t0
        rows.append({"streams": n, "wall_s": round(wall, 2),
                     "throughput": round(n * len(audio) / 16_000 / wall, 1),
                     "mean_batch": round(float(np.mean(engine.batch_sizes)), 1)})
    return rows


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--chunks-ms", type=int, nargs="+", default=[80, 160, 320, 640])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16, 64, 128, 256])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--engine-streams", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--held-out", type=Path, nargs="+", metavar="DIR",
                   help="synthetic: stored held-out corpora (default: synthesise one)")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=SECTIONS)
    args = p.parse_args()
    if "synthetic" in args.only and not args.held_out:
        from voiceagent_plugins.transducer.synth import speaking_voices

        if not speaking_voices():
            p.error("synthetic: no TTS engine here to speak a held-out set: give --held-out "
                    "DIR (a stored one), or install them with training/turn/setup.sh")
    import torch

    from voiceagent_plugins.transducer.checkpoint import SHIPPED, load as load_checkpoint

    torch.set_num_threads(args.threads)
    selected = clips(args)
    model = load_checkpoint(args.checkpoint or SHIPPED)  # one Whisper encoder for all sections
    audios = [load_audio(c.path, 16_000) for c in selected]
    load = [round(x, 2) for x in os.getloadavg()]
    figures = {
        "clips": [c.name for c in selected], "threads": args.threads, "cpus": os.cpu_count(),
        "chunks": [chunk_figures(args, audios, ms) for ms in args.chunks_ms]
        + [chunk_figures(args, audios, 160, quantize=True)] if "chunks" in args.only else [],
        "decoding": decoding_figures(args, model, audios) if "decoding" in args.only else None,
        "real_voice": real_voice_figures(args, model) if "real_voice" in args.only else None,
        "synthetic": synthetic_figures(args, model) if "synthetic" in args.only else None,
        "batching": [batching_figures(args, model, audios, ms) for ms in (160, 640)]
        if "batching" in args.only else [],
        "engine": engine_figures(args, model, audios) if "engine" in args.only else [],
    }
    figures["load"] = {"before": load, "after": [round(x, 2) for x in os.getloadavg()]}
    lines = ["chunk_ms int8   rtf  ms/chunk  first_partial_s"] if figures["chunks"] else []
    lines += [f"{c['chunk_ms']:>8} {str(c['int8']):>5} {c['rtf']:.3f} {c['ms_per_chunk']:>8} "
              f"{c['first_partial_s']}" for c in figures["chunks"]]
    if d := figures["decoding"]:
        lines.append(f"\ngreedy rnnt: {d['rnnt']['joint_calls']} joint calls, "
                     f"{d['rnnt']['decode_ms']} ms; tdt: {d['tdt']['joint_calls']} joint calls, "
                     f"{d['tdt']['decode_ms']} ms")
        for kind, counts in d.get("durations", {}).items():
            lines.append(f"TDT durations predicted for {kind}s: " + ", ".join(
                f"{k}: {v}" for k, v in counts.items()))
    if r := figures["real_voice"]:
        for channel in ("clean", "phone"):
            row = r[channel]
            lines.append(f"\nreal voices ({channel}), in-domain WER: rnnt {row['rnnt']['wer']} "
                         f"({row['rnnt']['joint_calls']} joint calls), tdt {row['tdt']['wer']} "
                         f"({row['tdt']['joint_calls']} joint calls), whisper tiny.en "
                         f"{row['whisper_tiny_en']['wer']}")
    for name, row in (figures["synthetic"] or {}).items():
        lines.append(f"\nheld-out synthetic {name} ({row['clips']} clips, {row['words']} "
                     f"words): rnnt {row['rnnt']['wer']} ({row['rnnt']['joint_calls']} joint "
                     f"calls), tdt {row['tdt']['wer']} ({row['tdt']['joint_calls']} joint calls)")
    for b in figures["batching"]:
        steps = ", ".join(f"{r['streams']}: {r['step_ms']} ms ({r['throughput']} real-time)"
                          for r in b["steps"])
        lines.append(f"\nbatch step at {b['chunk_ms']} ms chunks ({steps}); streams in real "
                     f"time: {b['streams_real_time']}; front end {b['front_end_ms_per_chunk']} "
                     "ms per stream and chunk (unbatched), with it: " + ", ".join(
                         f"{r['streams']}: {r['throughput_with_front_end']}" for r in b["steps"]))
    if figures["engine"]:
        lines.append("\nengine, streams at once: " + ", ".join(
            f"{r['streams']}: {r['throughput']} real-time (batch {r['mean_batch']})"
            for r in figures["engine"]))
    lines.append(f"\nload average before {figures['load']['before']}, after "
                 f"{figures['load']['after']} on {figures['cpus']} CPUs")
    emit(figures, args.json, "\n".join(lines))


if __name__ == "__main__":
    main()
