"""RNN-T and TDT losses in plain torch (no torchaudio, no numba).

Both run the forward algorithm one encoder frame at a time; within a frame, emissions that do
not advance time form a log-space linear recurrence over the label axis, solved at once with a
cumulative sum and ``logcumsumexp``. Autograd provides the gradients. Fine for the short
utterances and small vocabularies this package trains on.
"""

from __future__ import annotations

import torch

_NEG = -1e4


def _within_frame(arrive: torch.Tensor, emit: torch.Tensor) -> torch.Tensor:
    """alpha[u] = logaddexp(arrive[u], alpha[u-1] + emit[u-1]) for all u at once."""
    e = torch.cat([emit.new_zeros(emit.shape[0], 1), emit[:, :-1].cumsum(1)], dim=1)
    return e + torch.logcumsumexp(arrive - e, dim=1)


def _gather(token_lp: torch.Tensor, targets: torch.Tensor, blank: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, U+1) blank log-probs and (B, T, U+1) log-probs of the next label (last: unused)."""
    b, t, u1, _ = token_lp.shape
    labels = torch.cat([targets, targets.new_full((b, 1), blank)], dim=1)
    emit = token_lp.gather(3, labels[:, None, :, None].expand(b, t, u1, 1)).squeeze(3)
    return token_lp[..., blank], emit


def rnnt_loss(token_lp: torch.Tensor, targets: torch.Tensor, frames: torch.Tensor,
              labels: torch.Tensor, blank: int) -> torch.Tensor:
    """Mean negative log-likelihood. ``token_lp`` (B, T, U+1, V) log-softmaxed."""
    blank_lp, emit = _gather(token_lp, targets, blank)
    b, t_max, u1 = blank_lp.shape
    arrive = torch.full((b, u1), _NEG).index_fill(1, torch.tensor([0]), 0.0)
    finals = []
    for t in range(t_max):
        alpha = _within_frame(arrive, emit[:, t])
        finals.append(alpha.gather(1, labels[:, None]).squeeze(1) + blank_lp[:, t].gather(
            1, labels[:, None]).squeeze(1))
        arrive = alpha + blank_lp[:, t]
    ll = torch.stack(finals, 1).gather(1, (frames - 1)[:, None]).squeeze(1)
    return -(ll / labels.clamp(min=1)).mean()


def tdt_loss(token_lp: torch.Tensor, duration_lp: torch.Tensor, targets: torch.Tensor,
             frames: torch.Tensor, labels: torch.Tensor, blank: int,
             durations: list[int], sigma: float = 0.0) -> torch.Tensor:
    """Token-and-Duration Transducer loss (Xu et al. 2023): every emission also predicts how
    many frames to advance; blanks advance at least one. ``duration_lp`` (B, T, U+1, D).

    ``sigma`` is the paper's logit under-normalisation: every token or blank emission costs
    ``sigma`` nats more, so of two alignments the one with fewer emissions (longer jumps over
    blanks) is preferred; the model learns to skip (NeMo's default is 0.05)."""
    blank_lp, emit = _gather(token_lp - sigma, targets, blank)
    b, t_max, u1 = blank_lp.shape
    alphas: list[torch.Tensor] = []
    ends: list[torch.Tensor] = []  # log-prob of finishing exactly at frame t + 1
    for t in range(t_max + 1):
        arrive = torch.full((b, u1), _NEG)
        if t == 0:
            arrive[:, 0] = 0.0
        end = torch.full((b,), _NEG)
        for i, d in enumerate(durations):
            if d == 0 or t - d < 0:
                continue
            s = t - d
            by_blank = alphas[s] + blank_lp[:, s] + duration_lp[:, s, :, i]
            by_token = alphas[s] + emit[:, s] + duration_lp[:, s, :, i]
            arrive = torch.logaddexp(arrive, by_blank)
            arrive = torch.logaddexp(arrive, torch.cat(
                [arrive.new_full((b, 1), _NEG), by_token[:, :-1]], dim=1))
            end = torch.logaddexp(end, by_blank.gather(1, labels[:, None]).squeeze(1))
        ends.append(end)
        if t == t_max:
            break
        alpha = arrive
        if 0 in durations:
            alpha = _within_frame(arrive, emit[:, t] + duration_lp[:, t, :, durations.index(0)])
        alphas.append(alpha)
    ll = torch.stack(ends, 1).gather(1, frames[:, None]).squeeze(1)
    return -(ll / labels.clamp(min=1)).mean()
