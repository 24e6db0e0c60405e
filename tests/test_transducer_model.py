"""Streaming encoder caches, and the RNN-T/TDT losses against brute-force enumeration."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from voiceagent_plugins.transducer.loss import rnnt_loss, tdt_loss  # noqa: E402
from voiceagent_plugins.transducer.model import ModelConfig, Transducer  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize("conv_norm", ["layer_norm", "batch_norm"])
@pytest.mark.parametrize("chunk,left", [(1, 3), (2, 4), (4, 32)])
def test_streaming_encoder_equals_full_sequence_under_the_same_mask(chunk, left, conv_norm):
    torch.manual_seed(0)
    cfg = ModelConfig(list("abc"), d_model=32, n_heads=4, n_layers=3, subsampling_channels=8,
                      conv_kernel=5, chunk_frames=chunk, left_context=left, conv_norm=conv_norm)
    model = Transducer(cfg).eval()
    for m in model.modules():  # non-trivial norm statistics
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    frames = 8 * chunk * 5  # five chunks; the first chunks see less than `left`
    feats = torch.randn(2, frames, cfg.n_mels)
    with torch.inference_mode():
        full = model.encoder(feats, chunk=chunk, left=left)
        state, parts = model.encoder.init_state(2), []
        for start in range(0, frames, 8 * chunk):
            out, state = model.encoder.stream(feats[:, start:start + 8 * chunk], state)
            parts.append(out)
    assert full.shape == (2, frames // 8, cfg.d_model)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


def test_the_mask_bounds_left_context():
    """Changing audio more than `left` frames before a chunk changes nothing in that chunk."""
    torch.manual_seed(0)
    cfg = ModelConfig(list("ab"), d_model=32, n_heads=4, n_layers=1, subsampling_channels=8,
                      conv_kernel=1, chunk_frames=2, left_context=2)
    model = Transducer(cfg).eval()
    feats = torch.randn(1, 64, cfg.n_mels)
    changed = feats.clone()
    changed[:, :8] += 1.0  # encoder frame 0 (and the subsampling reaches frame 1 at most)
    with torch.inference_mode():
        a, b = model.encoder(feats), model.encoder(changed)
    assert not torch.allclose(a[:, :2], b[:, :2])
    torch.testing.assert_close(a[:, 6:], b[:, 6:])  # frames 6-7 see 4-7 only


def _paths(lp, dp, y, durations, blank, rnnt=False):
    """Log-likelihood of ``y`` by enumerating every alignment (tiny sizes only). RNN-T:
    tokens stay on their frame, blanks move one frame on."""
    T, U = lp.shape[0], len(y)
    total = []

    def walk(t, u, score):
        if t >= T:
            return
        for i, d in enumerate(durations):
            if u < U and t + d < T and (d == 0 or not rnnt):
                walk(t + d, u + 1, score + lp[t, u, y[u]] + (dp[t, u, i] if dp is not None else 0))
            if d > 0 and (d == 1 or not rnnt):
                b = score + lp[t, u, blank] + (dp[t, u, i] if dp is not None else 0)
                if t + d == T and u == U:
                    total.append(b)
                else:
                    walk(t + d, u, b)

    walk(0, 0, torch.tensor(0.0))
    return torch.logsumexp(torch.stack(total), 0)


def test_losses_match_brute_force_with_padding():
    torch.manual_seed(1)
    T, U, V, blank, durations = 5, 3, 4, 4, [0, 1, 2]
    lp = torch.randn(2, T, U + 1, V + 1).log_softmax(-1)
    dp = torch.randn(2, T, U + 1, len(durations)).log_softmax(-1)
    targets = torch.tensor([[0, 2, 1], [3, 1, 0]])
    frames, labels = torch.tensor([5, 4]), torch.tensor([3, 2])
    rnnt = [-_paths(lp[b, :frames[b]], None, targets[b, :labels[b]].tolist(), [0, 1], blank,
                    rnnt=True) / labels[b] for b in range(2)]
    tdt = [-_paths(lp[b, :frames[b]], dp[b, :frames[b]], targets[b, :labels[b]].tolist(),
                   durations, blank) / labels[b] for b in range(2)]
    torch.testing.assert_close(rnnt_loss(lp, targets, frames, labels, blank),
                               torch.stack(rnnt).mean())
    torch.testing.assert_close(tdt_loss(lp, dp, targets, frames, labels, blank, durations),
                               torch.stack(tdt).mean())


def test_tdt_sigma_charges_every_emission():
    """Logit under-normalisation (the TDT paper's sigma) is the TDT loss of log-probs lowered
    by sigma: an alignment with fewer emissions (longer jumps) loses less."""
    torch.manual_seed(2)
    T, U, V, blank, durations, sigma = 6, 2, 3, 3, [0, 1, 2, 4], 0.05
    lp = torch.randn(1, T, U + 1, V + 1).log_softmax(-1)
    dp = torch.randn(1, T, U + 1, len(durations)).log_softmax(-1)
    targets, frames, labels = torch.tensor([[0, 2]]), torch.tensor([T]), torch.tensor([U])
    expected = -_paths(lp[0] - sigma, dp[0], [0, 2], durations, blank) / U
    got = tdt_loss(lp, dp, targets, frames, labels, blank, durations, sigma)
    torch.testing.assert_close(got, expected)
    assert got > tdt_loss(lp, dp, targets, frames, labels, blank, durations)


def test_widening_the_duration_head_keeps_what_the_model_knew():
    from voiceagent_plugins.transducer.train import widen_durations
    torch.manual_seed(3)
    narrow = Transducer(ModelConfig(["a", "b"], d_model=16, n_heads=2, n_layers=1,
                                    durations=[0, 1, 2])).eval()
    wide = widen_durations(narrow, [0, 1, 2, 3, 4]).eval()
    assert wide.cfg.durations == [0, 1, 2, 3, 4] and narrow.cfg.durations == [0, 1, 2]
    f, g = torch.randn(5, narrow.cfg.joint_hidden), torch.randn(5, narrow.cfg.joint_hidden)
    tokens, durations = narrow.joint(f, g)
    wide_tokens, wide_durations = wide.joint(f, g)
    torch.testing.assert_close(wide_tokens, tokens)
    # kept durations keep their relative odds; 3 and 4 start as copies of 2
    torch.testing.assert_close(wide_durations[:, :3] - wide_durations[:, :1],
                               durations - durations[:, :1])
    torch.testing.assert_close(wide_durations[:, 3], wide_durations[:, 2])
    torch.testing.assert_close(wide_durations[:, 4], wide_durations[:, 2])
