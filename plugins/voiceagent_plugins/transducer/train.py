"""Train the shipped phone-command model on this CPU: ``python -m
voiceagent_plugins.transducer.train --out PATH [--corpus DIR] [--init CHECKPOINT]``.

Speech is synthesised by many voices (``synth.py``; ``--corpus`` reads a corpus written ahead
by ``python -m voiceagent_plugins.transducer.synth``, otherwise ``--utterances`` clips are made
here), then augmented anew every epoch (room, noise, phone line, gain, silence,
SpecAugment-style masks). Each batch uses a random attention chunk so one model serves several
``chunk_ms`` settings. The loss is TDT (durations 0-8) with the paper's two knobs: ``sigma``
logit under-normalisation, which makes the model jump over blanks in long steps, and
``omega``, the chance that a batch trains the plain RNN-T loss on the token logits instead, so
the same checkpoint also decodes with RNN-T greedy and beam search (durations ignored). From
scratch, an auxiliary CTC loss on the encoder (a head thrown away after training) gets it past
the all-blank plateau sooner, which matters on a CPU budget.

``--front-end whisper`` trains the LSTM head on Whisper tiny.en's frozen encoder instead
(``whisper_front.py``, the shipped model). Encoding is too slow to redo every epoch, so each
clip is augmented ``--views`` times and encoded once per view, up front, by the streaming
feeder itself (``--workers`` processes); ``--features`` caches that work for the next run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from voiceagent.audio import load_audio
from voiceagent.text import normalize
from voiceagent_eval.wer import pooled_wer

from .decoding import GreedyDecoder
from .engine import DECODINGS
from .checkpoint import load, save
from .loss import rnnt_loss, tdt_loss
from .model import ModelConfig, Transducer
from .streaming import transcribe
from .synth import augment, load_corpus, synthesize, vocabulary
from .whisper_front import WhisperChunkFeeder, WhisperFrames

DURATIONS = list(range(9))  # up to 8 frames of 80 ms: a jump over most pauses
PEAK_LR = 3e-3
LAYERS = 2  # on this budget 4 layers stayed on the all-blank plateau; 2 leave it early
CTC_WEIGHT = 0.3
SIGMA = 0.05  # NeMo's default
# The paper's omega is ~0.1; more here because RNN-T greedy must also decode this model well
# (with too little, RNN-T decoding repeats every token: a TDT token moves on by its duration)
OMEGA = 0.3
WHISPER_HEAD = {"d_model": 256, "n_layers": 2}  # on Whisper's encoder: 1.66 M with the joint

Data = list[tuple[str, np.ndarray]]
# a batch of clips (indices into the data) -> features, their frames, targets, target lengths
BatchMaker = Callable[[list[int]], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


def batches(lengths: list[int], size: int, rng: random.Random):
    """Random batches of clips of similar length in samples (fewer padded frames)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] + rng.randint(0, 8000))
    groups = [order[i:i + size] for i in range(0, len(order), size)]
    rng.shuffle(groups)
    yield from groups


def spec_mask(feats: torch.Tensor, rng: random.Random) -> torch.Tensor:
    feats = feats.clone()
    for row in feats:
        f = rng.randint(0, 12)
        f0 = rng.randint(0, row.shape[1] - f)
        row[:, f0:f0 + f] = 0.0
        if row.shape[0] > 40 and rng.random() < 0.5:
            t = rng.randint(0, 8)
            t0 = rng.randint(0, row.shape[0] - t)
            row[t0:t0 + t] = 0.0
    return feats


def targets_of(texts: list[str], word_id: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded word ids ``(B, U)`` and their counts."""
    ys = [[word_id[w] for w in text.split()] for text in texts]
    u_max = max(len(y) for y in ys)
    return (torch.tensor([y + [0] * (u_max - len(y)) for y in ys], dtype=torch.long),
            torch.tensor([len(y) for y in ys]))


def log_mel_batches(model: Transducer, data: Data, word_id: dict[str, int],
                    rng: np.random.Generator, babble: list[np.ndarray]) -> BatchMaker:
    """Log-mel batches of clips augmented anew every time."""
    def make(group: list[int]):
        audios = [torch.from_numpy(augment(data[i][1], rng, babble)) for i in group]
        feats = [model.features(a[None])[0] for a in audios]
        factor = model.cfg.subsampling_factor
        t_max = -(-max(len(f) for f in feats) // factor) * factor
        x = torch.stack([torch.nn.functional.pad(f, (0, 0, 0, t_max - len(f))) for f in feats])
        frames = torch.tensor([-(-len(f) // factor) for f in feats])
        return (x, frames, *targets_of([data[i][0] for i in group], word_id))
    return make


_worker: dict = {}  # an encoding process's encoder and background talkers, set once


def _start_worker(babble: list[np.ndarray]) -> None:
    _worker.update(front=WhisperFrames(), babble=babble)


def _encode_views(job: tuple[np.ndarray, int, int, int]) -> list[np.ndarray]:
    """An encoding process's task: ``views`` augmented copies of a clip through the feeder."""
    audio, views, chunk, seed = job
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(views):
        feeder = WhisperChunkFeeder(_worker["front"], chunk)
        chunks = feeder.push(augment(audio, rng, _worker["babble"])) + feeder.flush()
        out.append(torch.cat(chunks).half().numpy())
    return out


def whisper_batches(model: Transducer, data: Data, word_id: dict[str, int], rng: random.Random,
                    views: int, workers: int, cache: Path | None) -> BatchMaker:
    """Batches of Whisper features computed up front, a random view of each clip. ``cache``
    holds the views by clip index: clips it has keep all their views, the others (new clips
    appended to the data) get ``views`` new ones, and the cache is rewritten."""
    blob = dict(np.load(cache)) if cache is not None and cache.exists() else {}
    feats: list[list[np.ndarray]] = [[] for _ in data]
    for key, value in blob.items():
        feats[int(key.split("_")[0])].append(value)
    missing = [i for i, f in enumerate(feats) if not f]
    if missing:
        babble = [a for _, a in data[:50]]  # sent to each process once, not with every task
        jobs = [(data[i][1], views, model.cfg.chunk_frames, i) for i in missing]
        start = time.monotonic()
        with multiprocessing.get_context("spawn").Pool(workers, _start_worker,
                                                        (babble,)) as pool:
            for i, encoded in zip(missing, pool.map(_encode_views, jobs, chunksize=32)):
                feats[i] = encoded
        print(f"encoded {len(missing)} x {views} views in {time.monotonic() - start:.0f} s",
              flush=True)
        if cache is not None:
            np.savez(cache, **{f"{i}_{v}": f for i, fs in enumerate(feats)
                               for v, f in enumerate(fs)})

    def make(group: list[int]):
        picked = [torch.from_numpy(rng.choice(feats[i])).float() for i in group]
        x = torch.nn.utils.rnn.pad_sequence(picked, batch_first=True)
        return (x, torch.tensor([len(f) for f in picked]),
                *targets_of([data[i][0] for i in group], word_id))
    return make


def evaluate(model: Transducer, data: list[tuple[str, np.ndarray]], tdt: bool) -> float:
    """Word error rate of streaming greedy decoding."""
    return pooled_wer((text, transcribe(model, audio, GreedyDecoder(model, tdt=tdt)))
                      for text, audio in data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--corpus", type=Path, help="shards written by transducer.synth")
    p.add_argument("--utterances", type=int, default=4000, help="without --corpus")
    p.add_argument("--minutes", type=float, default=22.0, help="training wall-time budget")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="augmentation and batching")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init", type=Path, help="go on training this checkpoint")
    p.add_argument("--sigma", type=float, default=SIGMA, help="TDT logit under-normalisation")
    p.add_argument("--omega", type=float, default=OMEGA, help="chance of an RNN-T-loss batch")
    p.add_argument("--lr", type=float, default=PEAK_LR,
                   help="peak learning rate (a fine-tune with --init wants less)")
    p.add_argument("--other-speech", type=Path,
                   help="clips of other words (a manifest.jsonl of file and text, as "
                        "training/turn's synthesis writes): learn to let them pass")
    p.add_argument("--front-end", choices=("log_mel", "whisper"), default="log_mel")
    p.add_argument("--decoding", choices=DECODINGS,
                   help="the backend's default decoding, written into the checkpoint")
    p.add_argument("--views", type=int, default=2, help="whisper: augmented views per clip")
    p.add_argument("--workers", type=int, default=2, help="whisper: encoding processes")
    p.add_argument("--features", type=Path, help="whisper: cache of the encoded views (.npz)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, nrng = random.Random(args.seed), np.random.default_rng(args.seed)

    start = time.monotonic()
    if args.corpus is not None:
        data = [(u.text, u.audio) for u in load_corpus(args.corpus)]
    else:
        data = [(u.text, u.audio) for seed in range(1, -(-args.utterances // 500) + 1)
                for u in synthesize(min(500, args.utterances - 500 * (seed - 1)), seed)]
    if len(data) <= 60:
        p.error("need more than the 60 clips held out for progress reports")
    print(f"synthesised {len(data)} clips in {time.monotonic() - start:.0f} s", flush=True)
    data, held_out = data[:-60], data[-60:]
    if args.other_speech is not None:
        data += other_speech(args.other_speech, set(vocabulary()))
    model, ctc_weight = initial_model(data, args.front_end, args.init, nrng)
    if args.decoding:
        model.cfg.decoding = args.decoding
    word_id = {w: i for i, w in enumerate(model.cfg.vocabulary)}
    if args.front_end == "whisper":
        make = whisper_batches(model, data, word_id, rng, args.views, args.workers,
                               args.features)
    else:
        make = log_mel_batches(model, data, word_id, nrng, [a for _, a in data[:200]])
    fit(model, ctc_weight, make, [len(a) for _, a in data], held_out, args.out, args.minutes,
        args.batch, rng, args.sigma, args.omega, args.lr)


def other_speech(directory: Path, vocabulary: set[str]) -> Data:
    """Speech mostly outside the domain, each clip's target only the domain words it holds:
    without it, a closed-domain model hears every word as one of its own ("ten of clubs"
    became "seven zero")."""
    clips = []
    for line in (directory / "manifest.jsonl").read_text().splitlines():
        row = json.loads(line)
        words = " ".join(w for w in normalize(row["text"]) if w in vocabulary)
        clips.append((words, load_audio(directory / row["file"], 16_000)))
    return clips


def widen_durations(model: Transducer, durations: list[int]) -> Transducer:
    """``model`` with the duration head ``durations``: kept durations keep their weights, new
    ones start as copies of the longest old one (so a checkpoint trained with shorter jumps
    goes on training with longer ones)."""
    old = model.cfg.durations
    if old == durations:
        return model
    if not old:
        raise ValueError("widening needs a TDT checkpoint (durations)")
    wide = Transducer(replace(model.cfg, durations=durations))
    state = model.state_dict()
    key, n = "joint.joint_net.2", model.joint.n_tokens
    for name in ("weight", "bias"):
        src = state[f"{key}.{name}"]
        rows = [src[n + old.index(d)] if d in old else src[n + old.index(max(old))]
                for d in durations]
        state[f"{key}.{name}"] = torch.cat([src[:n], torch.stack(rows)])
    wide.load_state_dict(state)
    return wide


def initial_model(data: Data, front_end: str, init: Path | None, nrng: np.random.Generator
                  ) -> tuple[Transducer, float]:
    """The model to train and its auxiliary CTC weight: ``init`` widened to our durations
    (past the plateau: no CTC help needed), or a new model of ``front_end``."""
    if init is not None:
        return widen_durations(load(init), DURATIONS).train(), 0.0
    vocab = vocabulary()
    if front_end == "whisper":
        return Transducer(ModelConfig(vocab, durations=DURATIONS, front_end="whisper",
                                      **WHISPER_HEAD)), CTC_WEIGHT
    model = Transducer(ModelConfig(vocab, durations=DURATIONS, n_layers=LAYERS))
    with torch.no_grad():  # fixed feature normalisation from augmented training audio
        sample = torch.cat([model.features(torch.from_numpy(augment(a, nrng))[None])[0]
                            for _, a in data[:300]])
        model.encoder.feat_mean.copy_(sample.mean(0))
        model.encoder.feat_std.copy_(sample.std(0) + 1e-3)
    return model, CTC_WEIGHT


def fit(model: Transducer, ctc_weight: float, make: BatchMaker, lengths: list[int],
        held_out: Data, out: Path, minutes: float, batch: int, rng: random.Random,
        sigma: float = SIGMA, omega: float = OMEGA, peak_lr: float = PEAK_LR) -> Transducer:
    """Train ``model`` for ``minutes`` on batches made by ``make`` from clips of ``lengths``
    samples; checkpoints to ``out``."""
    log_mel = model.cfg.front_end == "log_mel"
    ctc_head = torch.nn.Linear(model.cfg.d_model, model.cfg.blank + 1)
    params = list(model.parameters()) + list(ctc_head.parameters())
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=1e-3)
    tdt_losses: list[float] = []
    rnnt_losses: list[float] = []
    warmup, step, start = 200, 0, time.monotonic()
    deadline = start + minutes * 60
    while time.monotonic() < deadline:
        for group in batches(lengths, batch, rng):
            if time.monotonic() >= deadline:
                break
            model.train()
            x, frames, targets, labels = make(group)
            if log_mel:
                x = spec_mask(x, rng)
            enc = model.encoder(x, frames, chunk=rng.choice([1, 2, 2, 4, 8]),
                                left=rng.choice([8, 16, 32]))
            blank = torch.full((len(group), 1), model.cfg.blank)
            g, _ = model.decoder(torch.cat([blank, targets], 1))
            token_lp, dur_lp = model.joint(model.joint.enc(enc)[:, :, None],
                                           model.joint.pred(g)[:, None])
            rnnt_batch = rng.random() < omega
            loss = (rnnt_loss(token_lp, targets, frames, labels, model.cfg.blank) if rnnt_batch
                    else tdt_loss(token_lp, dur_lp, targets, frames, labels, model.cfg.blank,
                                  model.cfg.durations, sigma))
            ctc = torch.nn.functional.ctc_loss(
                ctc_head(enc).log_softmax(-1).transpose(0, 1), targets, frames, labels,
                blank=model.cfg.blank, zero_infinity=True) if ctc_weight else torch.zeros(())
            total = loss + ctc_weight * ctc
            (rnnt_losses if rnnt_batch else tdt_losses).append(loss.item())
            frac = (time.monotonic() - start) / (minutes * 60)
            cosine = max(0.05, 0.5 * (1 + np.cos(np.pi * frac)))
            lr = peak_lr * min(1.0, (step + 1) / warmup) * cosine
            for group_ in opt.param_groups:
                group_["lr"] = lr
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            if step % 100 == 0:
                print(f"step {step} tdt {np.mean(tdt_losses or [0]):.3f} "
                      f"rnnt {np.mean(rnnt_losses or [0]):.3f} ctc {ctc.item():.3f} "
                      f"lr {lr:.2e} {time.monotonic() - start:.0f} s", flush=True)
                tdt_losses, rnnt_losses = [], []
            if step % 500 == 0:
                model.eval()
                print(f"  held-out WER (tdt greedy) {evaluate(model, held_out[:40], True):.3f}",
                      flush=True)
                save(model, out)
    model.eval()
    print(f"trained {step} steps in {time.monotonic() - start:.0f} s; held-out WER "
          f"rnnt {evaluate(model, held_out, False):.3f} tdt {evaluate(model, held_out, True):.3f}",
          flush=True)
    save(model, out)
    return model


if __name__ == "__main__":
    main()
