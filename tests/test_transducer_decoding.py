"""Greedy RNN-T and TDT on a joint with hand-set weights: which tokens, how many joint calls."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from voiceagent_plugins.transducer.decoding import BeamDecoder, GreedyDecoder  # noqa: E402
from voiceagent_plugins.transducer.model import ModelConfig, Transducer  # noqa: E402

A, B, BLANK = 0, 1, 2
DURATIONS = [0, 1, 2, 4]


def hand_set_model() -> Transducer:
    """Tokens a, b (blank = 2), durations 0/1/2/4. The joint is the identity on its hidden
    units, so an encoder frame's projection *is* its logits; the prediction network outputs
    the one-hot of the last token, and the joint's ``pred`` turns that into "not the same
    token again on this frame": -10 to that token, +10 to blank."""
    cfg = ModelConfig(["a", "b"], d_model=8, n_heads=2, n_layers=1, pred_hidden=3,
                      joint_hidden=3 + len(DURATIONS), durations=DURATIONS)
    model = Transducer(cfg).eval()
    with torch.no_grad():
        pred = model.decoder.prediction
        pred.embed.weight.copy_(torch.eye(3))
        pred.embed.weight[BLANK] = 0.0  # the start symbol
        lstm = pred.dec_rnn.lstm  # gates i, f, g, o: remember nothing, output tanh(20 x)
        lstm.weight_hh_l0.zero_()
        lstm.weight_ih_l0.zero_()
        lstm.weight_ih_l0[6:9] = 20 * torch.eye(3)
        lstm.bias_hh_l0.zero_()
        lstm.bias_ih_l0.copy_(torch.tensor([20.0] * 3 + [-20.0] * 3 + [0.0] * 3 + [20.0] * 3))
        model.joint.pred.weight.zero_()
        model.joint.pred.bias.zero_()
        for token in (A, B):
            model.joint.pred.weight[token, token] = -10.0
            model.joint.pred.weight[BLANK, token] = 10.0
        out = model.joint.joint_net[2]
        out.weight.copy_(torch.eye(out.out_features))
        out.bias.zero_()
    return model


def frames(*spec: tuple[int, int]) -> torch.Tensor:
    """Projected encoder frames favouring (token, duration) by 15 over a base of 20."""
    f = torch.full((1, len(spec), 3 + len(DURATIONS)), 20.0)
    for t, (token, duration) in enumerate(spec):
        f[0, t, token] += 15
        f[0, t, 3 + DURATIONS.index(duration)] += 15
    return f


# f0 says a (duration 0), f1 blank (2), f2 a (1), f3 b (1), f4 blank (4)
AUDIO = [(A, 0), (BLANK, 2), (A, 1), (B, 1), (BLANK, 4)]


def test_tdt_greedy_jumps_by_durations():
    model = hand_set_model()
    decoder = GreedyDecoder(model, tdt=True)
    hyp = decoder.initial()
    decoder.decode(frames(*AUDIO), [hyp])
    # f0: a (stays, duration 0); f0 again: blank, duration 0 -> at least 1; f1: blank,
    # jump 2 over f2; f3: b, 1; f4: blank, 4 -> 3 frames past the chunk, carried over
    assert hyp.tokens == [A, B]
    assert hyp.joint_calls == 5
    assert hyp.skip == 3


def test_rnnt_greedy_visits_every_frame():
    model = hand_set_model()
    decoder = GreedyDecoder(model, tdt=False)
    hyp = decoder.initial()
    decoder.decode(frames(*AUDIO), [hyp])
    # f0: a, then blank; f1 blank; f2: a again is penalised after a -> blank; f3: b, blank;
    # f4 blank: T + U = 5 + 2 calls
    assert hyp.tokens == [A, B]
    assert hyp.joint_calls == 7
    assert hyp.skip == 0


def test_tdt_carry_over_equals_one_chunk():
    model = hand_set_model()
    decoder = GreedyDecoder(model, tdt=True)
    spec = AUDIO + [(A, 1), (B, 1), (BLANK, 1), (A, 1)]
    whole, pieces = decoder.initial(), decoder.initial()
    decoder.decode(frames(*spec), [whole])
    for start in range(0, len(spec), 2):
        decoder.decode(frames(*spec[start:start + 2]), [pieces])
    assert pieces.tokens == whole.tokens == [A, B, A]  # f4 jumps 4: f5-f7 are never seen
    assert pieces.joint_calls == whole.joint_calls


def test_beam_search_finds_the_greedy_path_here():
    model = hand_set_model()
    state = BeamDecoder(model, beam=3).initial()
    BeamDecoder(model, beam=3).decode(frames(*AUDIO), [state])
    assert state.tokens == [A, B]
    assert state.joint_calls > 5


def reference_tdt_greedy(model: Transducer, f: torch.Tensor, max_symbols: int = 8
                         ) -> tuple[list[int], int]:
    """Greedy TDT as the paper writes it, one stream, one frame at a time: (tokens, joint
    calls). A blank moves on by its duration (at least one frame), a token by its own."""
    from voiceagent_plugins.transducer.decoding import initial, predict
    hyp, t, on_frame, calls = initial(model), 0, 0, 0
    blank, durations = model.cfg.blank, model.cfg.durations
    while t < f.shape[0]:
        token_lp, dur_lp = model.joint(f[t], hyp.g)
        calls += 1
        token, step = int(token_lp.argmax()), durations[int(dur_lp.argmax())]
        if token == blank:
            step = max(step, 1)
        else:
            hyp.tokens.append(token)
            (g,), (hyp.state,) = predict(model, torch.tensor([token]), [hyp.state])
            hyp.g = g
            on_frame += 1
            if on_frame >= max_symbols:
                step = max(step, 1)
        on_frame = 0 if step else on_frame
        t += step
    return hyp.tokens, calls


@torch.inference_mode()
def test_tdt_greedy_with_long_jumps_equals_the_reference_batched_and_in_chunks():
    """Durations up to 8 frames (the shipped model's) jump over several 2-frame chunks; three
    streams decoded together, chunk by chunk, give the reference's tokens and joint calls."""
    torch.manual_seed(4)
    model = Transducer(ModelConfig(["a", "b", "c"], d_model=8, n_heads=2, n_layers=1,
                                   durations=list(range(9)))).eval()
    with torch.no_grad():  # favour long durations and blanks so that jumps happen
        model.joint.joint_net[2].bias[model.cfg.blank] += 1.0
        model.joint.joint_net[2].bias[-3:] += 2.0
    f = 3 * torch.randn(3, 40, model.cfg.joint_hidden)
    decoder = GreedyDecoder(model, tdt=True)
    hyps = [decoder.initial() for _ in range(3)]
    for start in range(0, 40, 2):
        decoder.decode(f[:, start:start + 2], hyps)
    for row, hyp in enumerate(hyps):
        tokens, calls = reference_tdt_greedy(model, f[row])
        assert (hyp.tokens, hyp.joint_calls) == (tokens, calls)
        assert tokens and calls < 40  # it emitted and it skipped
