"""A checkpoint in NeMo's FastConformer RNN-T/TDT layout, built here with random weights,
loads into our model, and our forward equals a reference written with NeMo's formulas (its
``rel_shift`` attention and causal subsampling), independent of our implementation."""

from __future__ import annotations

import io
import math
import tarfile

import pytest

torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

from torch.nn import functional as F  # noqa: E402

from voiceagent_plugins.transducer.nemo import load_nemo  # noqa: E402

D, H, LAYERS, FEAT, CH, K, PRED, JOINT = 32, 4, 2, 16, 8, 5, 24, 20
LABELS = [" ", "a", "b", "c", "'"]
DURATIONS = [0, 1, 2, 3, 4]
V = len(LABELS) + 1


def nemo_state_dict() -> dict[str, torch.Tensor]:
    """Parameter names and shapes as NeMo's ConformerEncoder / RNNTDecoder / RNNTJoint."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    sd = {"preprocessor.featurizer.window": r(400), "preprocessor.featurizer.fb": r(1, FEAT, 257),
          "encoder.pre_encode.conv.0.weight": r(CH, 1, 3, 3),
          "encoder.pre_encode.conv.0.bias": r(CH)}
    for i in (2, 5):
        sd[f"encoder.pre_encode.conv.{i}.weight"] = r(CH, 1, 3, 3)
        sd[f"encoder.pre_encode.conv.{i}.bias"] = r(CH)
        sd[f"encoder.pre_encode.conv.{i + 1}.weight"] = r(CH, CH, 1, 1)
        sd[f"encoder.pre_encode.conv.{i + 1}.bias"] = r(CH)
    sd["encoder.pre_encode.out.weight"] = r(D, CH * FEAT // 8)
    sd["encoder.pre_encode.out.bias"] = r(D)
    for n in range(LAYERS):
        p = f"encoder.layers.{n}."
        for norm in ("norm_feed_forward1", "norm_self_att", "norm_conv", "norm_feed_forward2",
                     "norm_out"):
            sd[p + norm + ".weight"], sd[p + norm + ".bias"] = 1 + r(D), r(D)
        for ff in ("feed_forward1", "feed_forward2"):
            sd[p + ff + ".linear1.weight"], sd[p + ff + ".linear1.bias"] = r(4 * D, D), r(4 * D)
            sd[p + ff + ".linear2.weight"], sd[p + ff + ".linear2.bias"] = r(D, 4 * D), r(D)
        for lin in ("linear_q", "linear_k", "linear_v", "linear_out"):
            sd[p + f"self_attn.{lin}.weight"], sd[p + f"self_attn.{lin}.bias"] = r(D, D), r(D)
        sd[p + "self_attn.linear_pos.weight"] = r(D, D)
        sd[p + "self_attn.pos_bias_u"], sd[p + "self_attn.pos_bias_v"] = r(H, D // H), r(H, D // H)
        sd[p + "conv.pointwise_conv1.weight"] = r(2 * D, D, 1)
        sd[p + "conv.pointwise_conv1.bias"] = r(2 * D)
        sd[p + "conv.depthwise_conv.weight"], sd[p + "conv.depthwise_conv.bias"] = r(D, 1, K), r(D)
        sd[p + "conv.batch_norm.weight"], sd[p + "conv.batch_norm.bias"] = 1 + r(D), r(D)
        sd[p + "conv.batch_norm.running_mean"] = r(D)
        sd[p + "conv.batch_norm.running_var"] = 1 + r(D).abs()
        sd[p + "conv.batch_norm.num_batches_tracked"] = torch.tensor(7)
        sd[p + "conv.pointwise_conv2.weight"] = r(D, D, 1)
        sd[p + "conv.pointwise_conv2.bias"] = r(D)
    emb = r(V, PRED)
    emb[V - 1] = 0  # blank_as_pad: the blank (padding) row is zero
    sd["decoder.prediction.embed.weight"] = emb
    for name, shape in (("weight_ih_l0", (4 * PRED, PRED)), ("weight_hh_l0", (4 * PRED, PRED)),
                        ("bias_ih_l0", (4 * PRED,)), ("bias_hh_l0", (4 * PRED,))):
        sd[f"decoder.prediction.dec_rnn.lstm.{name}"] = r(*shape)
    sd["joint.enc.weight"], sd["joint.enc.bias"] = r(JOINT, D), r(JOINT)
    sd["joint.pred.weight"], sd["joint.pred.bias"] = r(JOINT, PRED), r(JOINT)
    sd["joint.joint_net.2.weight"] = r(V + len(DURATIONS), JOINT)
    sd["joint.joint_net.2.bias"] = r(V + len(DURATIONS))
    return sd


CONFIG = {
    "labels": LABELS,
    "model_defaults": {"tdt_durations": DURATIONS},
    "encoder": {"feat_in": FEAT, "n_layers": LAYERS, "d_model": D, "n_heads": H,
                "subsampling": "dw_striding", "subsampling_factor": 8,
                "subsampling_conv_channels": CH, "causal_downsampling": True,
                "ff_expansion_factor": 4, "self_attention_model": "rel_pos",
                "att_context_size": [-1, -1], "xscaling": True, "conv_kernel_size": K,
                "conv_norm_type": "batch_norm", "conv_context_size": "causal"},
    "decoder": {"vocab_size": len(LABELS), "blank_as_pad": True,
                "prednet": {"pred_hidden": PRED, "pred_rnn_layers": 1}},
    "joint": {"num_classes": len(LABELS), "num_extra_outputs": len(DURATIONS),
              "jointnet": {"joint_hidden": JOINT, "activation": "relu", "encoder_hidden": D,
                           "pred_hidden": PRED}},
}


def write_nemo(path, sd) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("model_config.yaml", yaml.safe_dump(CONFIG).encode()),
                           ("model_weights.ckpt", _saved(sd))):
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _saved(sd) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


# ------------------------------------------------- reference forward, NeMo's formulas


def ref_encoder(sd, x):
    """Full context; NeMo's CausalConv2D pads time (2, 1), frequency (1, 1). Its right pad
    makes one extra frame at the end, dropped here (ours makes exactly T / 8)."""
    frames, x = x.shape[1] // 8, x.unsqueeze(1)
    for conv, pw in ((0, None), (2, 3), (5, 6)):
        w = sd[f"encoder.pre_encode.conv.{conv}.weight"]
        x = F.conv2d(F.pad(x, (1, 1, 2, 1)), w, sd[f"encoder.pre_encode.conv.{conv}.bias"],
                     stride=2, groups=1 if conv == 0 else CH)
        if pw is not None:
            x = F.conv2d(x, sd[f"encoder.pre_encode.conv.{pw}.weight"],
                         sd[f"encoder.pre_encode.conv.{pw}.bias"])
        x = F.relu(x)
    x = x[:, :, :frames]
    b, c, t, f = x.shape
    x = F.linear(x.transpose(1, 2).reshape(b, t, c * f), sd["encoder.pre_encode.out.weight"],
                 sd["encoder.pre_encode.out.bias"]) * math.sqrt(D)
    positions = torch.arange(t - 1, -t, -1.0).unsqueeze(1)  # RelPositionalEncoding
    div = torch.exp(torch.arange(0, D, 2).float() * -(math.log(10000.0) / D))
    pe = torch.zeros(2 * t - 1, D)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(positions * div), torch.cos(positions * div)
    for n in range(LAYERS):
        x = ref_layer(sd, f"encoder.layers.{n}.", x, pe.unsqueeze(0))
    return x


def _ln(sd, name, x):
    return F.layer_norm(x, (D,), sd[name + ".weight"], sd[name + ".bias"])


def _lin(sd, name, x):
    return F.linear(x, sd[name + ".weight"], sd.get(name + ".bias"))


def _ff(sd, p, x):
    return _lin(sd, p + ".linear2", F.silu(_lin(sd, p + ".linear1", x)))


def rel_shift(x):
    b, h, qlen, pos_len = x.size()
    x = F.pad(x, pad=(1, 0)).view(b, h, -1, qlen)
    return x[:, :, 1:].view(b, h, qlen, pos_len)


def ref_layer(sd, p, x, pe):
    x = x + 0.5 * _ff(sd, p + "feed_forward1", _ln(sd, p + "norm_feed_forward1", x))
    a = _ln(sd, p + "norm_self_att", x)
    b, t, _ = a.shape
    q = _lin(sd, p + "self_attn.linear_q", a).view(b, t, H, D // H)
    k = _lin(sd, p + "self_attn.linear_k", a).view(b, t, H, D // H).transpose(1, 2)
    v = _lin(sd, p + "self_attn.linear_v", a).view(b, t, H, D // H).transpose(1, 2)
    pos = F.linear(pe, sd[p + "self_attn.linear_pos.weight"]).view(1, -1, H, D // H).transpose(1, 2)
    ac = (q + sd[p + "self_attn.pos_bias_u"]).transpose(1, 2) @ k.transpose(-2, -1)
    bd = rel_shift((q + sd[p + "self_attn.pos_bias_v"]).transpose(1, 2) @ pos.transpose(-2, -1))
    att = torch.softmax((ac + bd[..., :t]) / math.sqrt(D // H), -1) @ v
    x = x + _lin(sd, p + "self_attn.linear_out", att.transpose(1, 2).reshape(b, t, D))
    c = F.conv1d(_ln(sd, p + "norm_conv", x).transpose(1, 2), sd[p + "conv.pointwise_conv1.weight"],
                 sd[p + "conv.pointwise_conv1.bias"])
    c = F.conv1d(F.pad(F.glu(c, dim=1), (K - 1, 0)), sd[p + "conv.depthwise_conv.weight"],
                 sd[p + "conv.depthwise_conv.bias"], groups=D)
    bn = p + "conv.batch_norm."
    c = F.batch_norm(c, sd[bn + "running_mean"], sd[bn + "running_var"], sd[bn + "weight"],
                     sd[bn + "bias"])
    c = F.conv1d(F.silu(c), sd[p + "conv.pointwise_conv2.weight"],
                 sd[p + "conv.pointwise_conv2.bias"])
    x = x + c.transpose(1, 2)
    x = x + 0.5 * _ff(sd, p + "feed_forward2", _ln(sd, p + "norm_feed_forward2", x))
    return _ln(sd, p + "norm_out", x)


def ref_joint(sd, f, tokens):
    """Prediction network from the zero start state, then the joint (tokens, durations)."""
    emb = F.embedding(torch.tensor(tokens)[None], sd["decoder.prediction.embed.weight"])
    lstm = torch.nn.LSTM(PRED, PRED, batch_first=True)
    lstm.load_state_dict({k.split("lstm.")[1]: v for k, v in sd.items() if ".lstm." in k})
    g, _ = lstm(emb)
    h = F.relu(_lin(sd, "joint.enc", f)[:, :, None] + _lin(sd, "joint.pred", g)[:, None])
    logits = _lin(sd, "joint.joint_net.2", h)
    return logits[..., :V].log_softmax(-1), logits[..., V:].log_softmax(-1)


def test_nemo_checkpoint_round_trip(tmp_path):
    sd = nemo_state_dict()
    path = tmp_path / "fastconformer_tdt.nemo"
    write_nemo(path, sd)
    model = load_nemo(path)
    cfg = model.cfg
    assert cfg.durations == DURATIONS and cfg.blank == len(LABELS)
    ours = model.state_dict()
    for name, value in sd.items():
        if not name.startswith("preprocessor."):
            torch.testing.assert_close(ours[name], value, rtol=0, atol=0)

    feats = torch.randn(2, 64, FEAT)
    with torch.inference_mode():
        ref = ref_encoder(sd, feats)
        enc = model.encoder(feats, chunk=64, left=64)  # full context, like the reference
        torch.testing.assert_close(enc, ref, rtol=1e-4, atol=1e-4)

        tokens = [len(LABELS), 1, 3]  # start (blank), "a", "c"
        ref_tok, ref_dur = ref_joint(sd, enc, tokens)
        g, _ = model.decoder(torch.tensor(tokens)[None])
        tok, dur = model.joint(model.joint.enc(enc)[:, :, None], model.joint.pred(g)[:, None])
    torch.testing.assert_close(tok, ref_tok, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dur, ref_dur, rtol=1e-5, atol=1e-5)
    assert model.text([1, 0, 2, 4, 3]) == "a b'c"
