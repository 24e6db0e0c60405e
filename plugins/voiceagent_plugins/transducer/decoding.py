"""Transducer search, chunk by chunk, for many streams at once.

Each stream keeps a :class:`Hypothesis` between chunks, so decoding a long utterance in chunks
gives the same tokens as decoding it whole. ``joint_calls`` counts joint evaluations per
stream (one per frame-and-symbol step), the cost that TDT's duration skipping saves.

* greedy RNN-T: a blank moves to the next frame; a token stays on the frame.
* greedy TDT: every step also predicts a duration; a blank advances by it (at least 1), a
  token by it (0 allowed). A jump past the chunk end carries into the next chunk.
* beam (RNN-T): "modified" beam search, at most one token per frame per hypothesis, with
  hypotheses of the same token sequence merged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import Transducer

LSTMState = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Hypothesis:
    tokens: list[int]
    g: torch.Tensor  # joint.pred(prediction output) after the last token, (joint_hidden,)
    state: LSTMState  # (layers, 1, pred_hidden) each
    score: float = 0.0
    skip: int = 0  # frames of the next chunk already jumped over (TDT)
    on_frame: int = 0  # tokens emitted on the current frame (the max_symbols guard)
    joint_calls: int = 0


@dataclass
class BeamState:
    beams: list[Hypothesis]
    joint_calls: int = 0

    @property
    def tokens(self) -> list[int]:
        return max(self.beams, key=lambda h: h.score).tokens


def predict(model: Transducer, tokens: torch.Tensor, states: list[LSTMState]
            ) -> tuple[torch.Tensor, list[LSTMState]]:
    """One prediction step for a batch of hypotheses: ``(N,)`` tokens -> projected g (N, J)."""
    h = torch.cat([s[0] for s in states], dim=1)
    c = torch.cat([s[1] for s in states], dim=1)
    out, (h, c) = model.decoder(tokens[:, None], (h, c))
    g = model.joint.pred(out[:, 0])
    return g, [(h[:, i:i + 1], c[:, i:i + 1]) for i in range(tokens.shape[0])]


def initial(model: Transducer) -> Hypothesis:
    layers, hidden = model.cfg.pred_layers, model.cfg.pred_hidden
    zero = model.decoder.prediction.embed.weight.new_zeros(layers, 1, hidden)
    g, (state,) = predict(model, torch.tensor([model.cfg.blank], device=zero.device),
                          [(zero, zero)])
    return Hypothesis([], g[0], state)


class GreedyDecoder:
    """Batched greedy search; ``tdt=True`` uses the duration head."""

    def __init__(self, model: Transducer, tdt: bool, max_symbols: int = 8) -> None:
        if tdt and not model.cfg.durations:
            raise ValueError("TDT decoding needs a model with a duration head")
        self.model, self.tdt, self.max_symbols = model, tdt, max_symbols
        self.durations = model.cfg.durations or [0]

    def initial(self) -> Hypothesis:
        return initial(self.model)

    @torch.inference_mode()
    def decode(self, f: torch.Tensor, hyps: list[Hypothesis]) -> None:
        """Advance ``hyps`` (one per row) over projected encoder frames ``f`` (B, T, J)."""
        model, blank, frames = self.model, self.model.cfg.blank, f.shape[1]
        pos = [h.skip for h in hyps]
        while True:
            active = [i for i, p in enumerate(pos) if p < frames]
            if not active:
                break
            idx = torch.tensor(active, device=f.device)
            enc = f[idx, torch.tensor([pos[i] for i in active], device=f.device)]
            token_lp, dur_lp = model.joint(enc, torch.stack([hyps[i].g for i in active]))
            tokens = token_lp.argmax(-1).tolist()
            steps = ([self.durations[d] for d in dur_lp.argmax(-1).tolist()] if self.tdt
                     else [0] * len(active))
            emitters = []
            for i, token, step in zip(active, tokens, steps):
                hyp = hyps[i]
                hyp.joint_calls += 1
                if token == blank:
                    step = max(step, 1)
                else:
                    emitters.append((i, token))
                    hyp.tokens.append(token)
                    hyp.on_frame += 1
                    if hyp.on_frame >= self.max_symbols:
                        step = max(step, 1)
                if step > 0:
                    hyp.on_frame = 0
                pos[i] += step
            if emitters:
                g, states = predict(model, torch.tensor([t for _, t in emitters], device=f.device),
                                    [hyps[i].state for i, _ in emitters])
                for (i, _), gi, state in zip(emitters, g, states):
                    hyps[i].g, hyps[i].state = gi, state
        for h, p in zip(hyps, pos):
            h.skip = p - frames


class BeamDecoder:
    """RNN-T beam search (token probabilities only; a TDT model's durations are ignored)."""

    def __init__(self, model: Transducer, beam: int = 4) -> None:
        self.model, self.beam = model, beam

    def initial(self) -> BeamState:
        return BeamState([initial(self.model)])

    @torch.inference_mode()
    def decode(self, f: torch.Tensor, states: list[BeamState]) -> None:
        for row, state in enumerate(states):  # hypotheses of one stream form the batch
            for t in range(f.shape[1]):
                self._frame(f[row, t], state)

    def _frame(self, enc: torch.Tensor, state: BeamState) -> None:
        beams, blank = state.beams, self.model.cfg.blank
        token_lp, _ = self.model.joint(enc[None], torch.stack([h.g for h in beams]))
        state.joint_calls += len(beams)
        scores = token_lp.cpu() + torch.tensor([h.score for h in beams])[:, None]
        top = scores.flatten().topk(min(self.beam, scores.numel()))
        merged: dict[tuple[int, ...], tuple[float, int, int]] = {}
        for score, flat in zip(top.values.tolist(), top.indices.tolist()):
            src, token = divmod(flat, scores.shape[1])
            key = tuple(beams[src].tokens) + (() if token == blank else (token,))
            if key in merged:  # candidates come best first: keep the first one's state
                best, src, token = merged[key]
                score = float(torch.logaddexp(torch.tensor(score), torch.tensor(best)))
            merged[key] = (score, src, token)
        extend = [(k, v) for k, v in merged.items() if v[2] != blank]
        new = [Hypothesis(list(k), beams[src].g, beams[src].state, score)
               for k, (score, src, token) in merged.items() if token == blank]
        if extend:
            tokens = torch.tensor([v[2] for _, v in extend], device=enc.device)
            g, lstm = predict(self.model, tokens,
                              [beams[v[1]].state for _, v in extend])
            new += [Hypothesis(list(k), gi, s, v[0]) for (k, v), gi, s in zip(extend, g, lstm)]
        state.beams = new

