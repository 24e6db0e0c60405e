"""NeMo's own outputs for our NeMo loader to match (issue 14, item 1). Run with NeMo's venv:

    /work/venv-nemo/bin/python benchmarks/nemo_interop.py [--clip PATH] [--out tests/data/nemo]

Builds a FastConformer RNN-T and a TDT model from NeMo's own classes (``EncDecRNNTModel``,
``AudioToMelSpectrogramPreprocessorConfig``, ``ConformerEncoder``, ``RNNTDecoder``,
``RNNTJoint``) with random weights, in the cache-aware streaming flavour of parakeet's
FastConformer, scaled down: dw_striding x8 subsampling (causal), rel_pos attention chunked to
2 frames with 16 frames of left context, causal depthwise convolution, un-normalised log-mels
(NeMo's streaming configs), TDT durations [0, 1, 2, 3, 4]. Each model is saved with
``save_to`` and NeMo's outputs on a real clip go to ``<name>.npz``: preprocessor features,
encoder output (full forward and cache-aware streaming), raw joint logits for a few frames and
prefixes, and greedy transcript tokens. ``tests/test_transducer_nemo_interop.py`` loads the
``.nemo`` with our backend (no NeMo needed) and compares.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile
import torch

LABELS = [" "] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["'"]
DURATIONS = [0, 1, 2, 3, 4]
D_MODEL, PRED, JOINT, MAX_SYMBOLS = 64, 64, 64, 8
ATT_CONTEXT = [16, 1]  # 16 frames of left context, chunks of 2 frames (160 ms)
BLANK_BIAS = 3.0  # with the x4 joint: 120 RNN-T and 6 TDT tokens on the clip, not 0 or all
JOINT_FRAMES, PREFIX = 12, [3, 8]  # joint logits: first frames x (start, "c", "ch")


def model_config(tdt: bool):
    from nemo.collections.asr.modules.audio_preprocessing import (
        AudioToMelSpectrogramPreprocessorConfig,
    )
    from omegaconf import OmegaConf

    pre = AudioToMelSpectrogramPreprocessorConfig(
        window_size=0.025, window_stride=0.01, features=80, n_fft=512, normalize="NA",
        dither=0.0, pad_to=0)
    cfg = {
        "sample_rate": 16000, "labels": LABELS,
        "model_defaults": {"enc_hidden": D_MODEL, "pred_hidden": PRED},
        "preprocessor": asdict(pre),
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80,
            "feat_out": -1, "n_layers": 2, "d_model": D_MODEL, "subsampling": "dw_striding",
            "subsampling_factor": 8, "subsampling_conv_channels": 32,
            "causal_downsampling": True, "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos", "n_heads": 4, "att_context_size": ATT_CONTEXT,
            "att_context_style": "chunked_limited", "xscaling": True,
            "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": 9,
            "conv_norm_type": "batch_norm", "conv_context_size": "causal", "dropout": 0.0,
            "dropout_pre_encoder": 0.0, "dropout_emb": 0.0, "dropout_att": 0.0},
        "decoder": {
            "_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
            "random_state_sampling": False, "blank_as_pad": True, "vocab_size": len(LABELS),
            "prednet": {"pred_hidden": PRED, "pred_rnn_layers": 1, "t_max": None,
                        "dropout": 0.0}},
        "joint": {
            "_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
            "preserve_memory": False, "fuse_loss_wer": False, "num_classes": len(LABELS),
            "vocabulary": LABELS, "num_extra_outputs": len(DURATIONS) if tdt else 0,
            "jointnet": {"joint_hidden": JOINT, "activation": "relu", "dropout": 0.0,
                         "encoder_hidden": D_MODEL, "pred_hidden": PRED}},
        "decoding": {"strategy": "greedy", "greedy": {"max_symbols": MAX_SYMBOLS}},
        "loss": {"loss_name": "default"},
    }
    if tdt:
        cfg["model_defaults"]["tdt_durations"] = DURATIONS
        cfg["decoding"].update(model_type="tdt", durations=DURATIONS)
        cfg["loss"] = {"loss_name": "tdt", "tdt_kwargs": {
            "fastemit_lambda": 0.0, "clamp": -1.0, "durations": DURATIONS, "sigma": 0.02,
            "omega": 0.1}}
    return OmegaConf.create(cfg)


def randomise(model, seed: int) -> None:
    """NeMo initialises some tensors to constants (position biases 0, batch-norm statistics
    0 / 1); random values make every one of them count in the comparison. The joint's blank
    bias is raised so the random model emits a mix of tokens and blanks."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.named_parameters():
            if "pos_bias" in name or "batch_norm" in name:
                t.copy_(torch.randn(t.shape, generator=g) * 0.3 + ("weight" in name))
        for name, t in model.named_buffers():
            if name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.3)
            elif name.endswith("running_var"):
                t.copy_(1 + torch.rand(t.shape, generator=g))
        out = model.joint.joint_net[-1]
        out.weight *= 4  # logits that depend on the audio more than on the biases
        out.bias[len(LABELS)] += BLANK_BIAS


def stream_encoder(model, feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """NeMo's cache-aware streaming as its ``speech_to_text_cache_aware_streaming_infer.py``
    runs it: ``CacheAwareStreamingAudioBuffer`` chunks, ``conformer_stream_step`` with the
    caches and the previous hypotheses. Returns the streamed encoder output and tokens."""
    from nemo.collections.asr.parts.utils.streaming_utils import CacheAwareStreamingAudioBuffer

    model.encoder.setup_streaming_params()
    buffer = CacheAwareStreamingAudioBuffer(model=model, online_normalization=False)
    buffer.append_processed_signal(feats)
    caches = model.encoder.get_initial_cache_state(batch_size=1)
    hyps, pred_out, outs, step = None, None, [], 0
    captured: list[torch.Tensor] = []
    hook = model.decoding.rnnt_decoder_predictions_tensor

    def capture(encoder_output, encoded_lengths, **kw):  # the encoder output of each chunk
        captured.append(encoder_output[0, :, :int(encoded_lengths[0])].T.clone())
        return hook(encoder_output=encoder_output, encoded_lengths=encoded_lengths, **kw)

    model.decoding.rnnt_decoder_predictions_tensor = capture
    try:
        for chunk, lengths in buffer:
            drop = 0 if step == 0 else model.encoder.streaming_cfg.drop_extra_pre_encoded
            pred_out, texts, *caches, hyps = model.conformer_stream_step(
                processed_signal=chunk, processed_signal_length=lengths,
                cache_last_channel=caches[0], cache_last_time=caches[1],
                cache_last_channel_len=caches[2], keep_all_outputs=buffer.is_buffer_empty(),
                previous_hypotheses=hyps, previous_pred_out=pred_out,
                drop_extra_pre_encoded=drop, return_transcription=True)
            step += 1
    finally:
        model.decoding.rnnt_decoder_predictions_tensor = hook
    outs = torch.cat(captured).numpy()
    return outs, np.asarray(hyps[0].y_sequence, dtype=np.int64)


def nemo_outputs(model, audio: np.ndarray) -> dict[str, np.ndarray]:
    signal = torch.from_numpy(audio)[None]
    length = torch.tensor([len(audio)])
    with torch.inference_mode():
        feats, feat_len = model.preprocessor(input_signal=signal, length=length)
        enc, enc_len = model.encoder(audio_signal=feats, length=feat_len)
        hyp = model.decoding.rnnt_decoder_predictions_tensor(
            encoder_output=enc, encoded_lengths=enc_len, return_hypotheses=True)[0]
        tokens = torch.tensor([[len(LABELS)] + PREFIX])  # start (blank), then the prefix
        g, _ = model.decoder.predict(tokens, state=None, add_sos=False, batch_size=1)
        f = model.joint.project_encoder(enc.transpose(1, 2)[:, :JOINT_FRAMES])
        logits = model.joint.joint_after_projection(f, model.joint.project_prednet(g))
    with torch.inference_mode():
        streamed, streamed_tokens = stream_encoder(model, feats[:, :, :int(feat_len[0])])
    hyp = hyp[0] if isinstance(hyp, list) else hyp
    return {"features": feats[0, :, :int(feat_len[0])].T.numpy(),
            "encoder": enc[0, :, :int(enc_len[0])].T.numpy(), "encoder_streamed": streamed,
            "joint_tokens": tokens[0].numpy(), "joint_logits": logits[0].numpy(),
            "greedy_tokens": np.asarray(hyp.y_sequence, dtype=np.int64),
            "streamed_tokens": streamed_tokens}


def main() -> None:
    import nemo
    from nemo.collections.asr.models import EncDecRNNTModel

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", default="/work/shared/data/speech/uberi_one_two_three.wav")
    p.add_argument("--out", default="tests/data/nemo")
    args = p.parse_args()
    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    audio, rate = soundfile.read(args.clip, dtype="float32")
    assert rate == 16000 and audio.ndim == 1, "a 16 kHz mono clip"
    summary = {"nemo": nemo.__version__, "torch": torch.__version__,
               "clip": Path(args.clip).name, "models": {}}
    for seed, name, tdt in ((1, "fastconformer_rnnt", False), (2, "fastconformer_tdt", True)):
        torch.manual_seed(seed)
        model = EncDecRNNTModel(cfg=model_config(tdt)).eval()
        randomise(model, seed)
        model.save_to(str(out / f"{name}.nemo"))
        outputs = nemo_outputs(model, audio)
        np.savez_compressed(out / f"{name}.npz", **outputs)
        text = "".join(LABELS[t] for t in outputs["greedy_tokens"])
        summary["models"][name] = {
            "parameters": sum(t.numel() for t in model.parameters()),
            "feature_frames": len(outputs["features"]), "encoder_frames": len(outputs["encoder"]),
            "streamed_frames": len(outputs["encoder_streamed"]),
            "greedy_tokens": len(outputs["greedy_tokens"]), "greedy_text": text,
            "streamed_text": "".join(LABELS[t] for t in outputs["streamed_tokens"])}
    (out / "nemo_version.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
