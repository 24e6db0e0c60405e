"""Does the phone-command domain carry over to real voices from Whisper's encoder? A probe.

    PYTHONPATH=.:plugins .venv/bin/python -m training.transducer.whisper_features_probe \
        --corpus CORPUS [--minutes 10] [--data ../shared/data/speech]

A small CTC head (a linear layer and a bidirectional LSTM) learns the 90-word domain on top of
Whisper tiny.en's frozen encoder, from a synthetic corpus of ``synth.py`` only (one augmented
view of each clip, 200 clips held out). It is then scored on the held-out clips and on the real
recordings of ``real_speech.py`` (clean and over a G.711 phone line), by the same in-domain
rule as the transducer. Not a shipped model and not streaming (the head reads the whole clip):
it measures whether an encoder trained on real speech closes the gap our own encoder, trained
on synthetic voices, leaves (docs/transducer.md).
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from training.turn.augment import phone_line
from voiceagent_eval.wer import pooled_wer
from voiceagent_plugins.transducer import synth
from voiceagent_plugins.transducer.real_speech import CLIPS, in_domain_wer, load_clips
from voiceagent_plugins.whisper_stt import WhisperSTT

WINDOW_S = 7  # the most audio encoded at once; 1 s of silence follows it


class Encoder:
    """Whisper tiny.en's encoder output for a clip: (frames at 50 Hz, 384)."""

    def __init__(self) -> None:
        self._whisper = WhisperSTT(cpu_threads=2)

    def __call__(self, audio: np.ndarray) -> torch.Tensor:
        window = np.concatenate([audio[:16_000 * WINDOW_S], np.zeros(16_000, np.float32)])
        return torch.from_numpy(self._whisper.encode(window))


class Head(torch.nn.Module):
    def __init__(self, words: int) -> None:
        super().__init__()
        self.inp = torch.nn.Sequential(torch.nn.Linear(384, 256), torch.nn.ReLU())
        self.rnn = torch.nn.LSTM(256, 192, batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(384, words + 1)  # the blank last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.rnn(self.inp(x))[0]).log_softmax(-1)

    def transcribe(self, features: torch.Tensor, vocab: list[str]) -> str:
        with torch.no_grad():
            ids = self(features[None])[0].argmax(-1).tolist()
        words, previous = [], len(vocab)
        for i in ids:
            if i not in (previous, len(vocab)):
                words.append(vocab[i])
            previous = i
        return " ".join(words)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, required=True, help="shards written by synth.py")
    p.add_argument("--minutes", type=float, default=10.0, help="training time")
    p.add_argument("--data", type=Path, default=Path("../shared/data/speech"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    encode = Encoder()
    vocab = synth.vocabulary()
    index = {w: i for i, w in enumerate(vocab)}
    corpus = synth.load_corpus(args.corpus)
    random.Random(args.seed).shuffle(corpus)
    held, train = corpus[:200], corpus[200:]
    rng = np.random.default_rng(args.seed)
    babble = [u.audio for u in corpus[:50]]
    start = time.time()
    features = [encode(synth.augment(u.audio, rng, babble)) for u in train]
    labels = [torch.tensor([index[w] for w in u.text.split()]) for u in train]
    print(f"encoded {len(features)} clips in {time.time() - start:.0f} s", flush=True)

    head = Head(len(vocab))
    optimiser = torch.optim.AdamW(head.parameters(), 2e-3)
    ctc = torch.nn.CTCLoss(blank=len(vocab), zero_infinity=True)
    start, step = time.time(), 0
    while time.time() - start < 60 * args.minutes:
        batch = random.sample(range(len(features)), 32)
        x = torch.nn.utils.rnn.pad_sequence([features[i] for i in batch], batch_first=True)
        loss = ctc(head(x).transpose(0, 1), torch.cat([labels[i] for i in batch]),
                   torch.tensor([len(features[i]) for i in batch]),
                   torch.tensor([len(labels[i]) for i in batch]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 200 == 0:
            print(f"step {step} loss {loss.item():.3f} {time.time() - start:.0f} s", flush=True)

    def transcribe(audio: np.ndarray) -> str:
        return head.transcribe(encode(audio), vocab)

    print("held-out synthetic WER", round(pooled_wer((u.text, transcribe(u.audio))
                                                     for u in held), 3))
    clips = load_clips(args.data)
    for channel, through in (("clean", lambda a: a), ("phone line", phone_line)):
        texts = {name: transcribe(through(audio)) for name, audio in clips.items()}
        wer = in_domain_wer((CLIPS[name], text) for name, text in texts.items())
        print(f"real clips, {channel}: in-domain WER {wer:.3f}", texts)


if __name__ == "__main__":
    main()
