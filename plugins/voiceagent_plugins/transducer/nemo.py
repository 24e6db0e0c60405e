"""Load NeMo FastConformer RNN-T / TDT checkpoints (``.nemo`` tarballs or their unpacked
directories: ``model_config.yaml`` + ``model_weights.ckpt``).

Our modules carry NeMo's names, so parameters map one to one:

===============================================  ===========================================
NeMo key                                         ours
===============================================  ===========================================
``encoder.pre_encode.conv.{0,2,3,5,6}.*``        same (``dw_striding`` subsampling)
``encoder.pre_encode.out.*``                     same
``encoder.layers.N.{norm_,}feed_forward{1,2}.*`` same (``linear1``, ``linear2``)
``encoder.layers.N.self_attn.linear_{q,k,v,out,pos}``, ``pos_bias_{u,v}``   same (``rel_pos``)
``encoder.layers.N.conv.{pointwise_conv1,depthwise_conv,batch_norm,pointwise_conv2}.*`` same
``encoder.layers.N.{norm_self_att,norm_conv,norm_out}.*``                   same
``decoder.prediction.embed.weight``              same (blank last, used as start symbol)
``decoder.prediction.dec_rnn.lstm.*``            same
``joint.{enc,pred}.*``, ``joint.joint_net.N.*``  ``joint_net.2`` (N = 1 when NeMo's joint
                                                 dropout is 0); TDT duration logits follow
``preprocessor.featurizer.{window,fb}``          the front end's window and Slaney filterbank
(none)                                           ``encoder.feat_mean``/``feat_std`` = 0 / 1
===============================================  ===========================================

The front end is NeMo's (pre-emphasis, centred STFT, its window and filterbank, additive log
guard; ``features.py``), computed incrementally, and equal to NeMo's preprocessor
(``tests/test_transducer_nemo_interop.py``). Not reproduced: per-utterance feature
normalisation (``normalize: per_feature``, parakeet's offline models; it cannot stream, NeMo's
cache-aware streaming models use ``NA``) and the symmetric subsampling padding and
full-context convolutions of models trained without ``causal_downsampling`` /
``conv_context_size: causal``. Such models load, but transcribe worse than in NeMo.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
from pathlib import Path

import torch
import yaml

from .features import LogMel
from .model import ModelConfig, Transducer

_CONFIG, _WEIGHTS = "model_config.yaml", "model_weights.ckpt"
_JOINT_OUT = re.compile(r"^joint\.joint_net\.\d+\.")  # the last Linear, after ReLU [Dropout]
log = logging.getLogger(__name__)


def _members(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    with tarfile.open(path, "r:*") as tar:
        return {Path(m.name).name: tar.extractfile(m).read()
                for m in tar.getmembers() if m.isfile()}


def _vocabulary(cfg: dict, files: dict[str, bytes]) -> tuple[list[str], str]:
    """Labels of a character model, or the pieces of a sentencepiece tokenizer."""
    labels = cfg.get("labels") or cfg.get("joint", {}).get("vocabulary")
    if labels and all(len(x) <= 1 for x in labels):
        return list(labels), ""
    pieces = next((v for k, v in files.items() if k.endswith("tokenizer.vocab")), None)
    if pieces is not None:  # sentencepiece "piece<TAB>score" lines, in id order
        return [line.split("\t")[0] for line in pieces.decode().splitlines() if line], ""
    if labels:
        return list(labels), ""
    raise ValueError("no labels in the config and no tokenizer vocabulary in the checkpoint")


def config_from_nemo(cfg: dict, vocabulary: list[str], separator: str) -> ModelConfig:
    enc, dec, joint = cfg["encoder"], cfg["decoder"], cfg["joint"]
    if enc.get("self_attention_model", "rel_pos") != "rel_pos":
        raise ValueError("only rel_pos attention is supported")
    if enc.get("subsampling", "dw_striding") != "dw_striding":
        raise ValueError("only dw_striding subsampling is supported")
    if joint.get("jointnet", {}).get("activation", "relu") != "relu":
        raise ValueError("only a relu joint is supported")
    left, right = (enc.get("att_context_size") or [-1, -1])[:2]
    durations = (cfg.get("model_defaults", {}).get("tdt_durations")
                 or cfg.get("loss", {}).get("tdt_kwargs", {}).get("durations") or [])
    d_model = enc["d_model"]
    channels = enc.get("subsampling_conv_channels", -1)
    return ModelConfig(
        vocabulary=vocabulary, word_separator=separator, n_mels=enc["feat_in"], d_model=d_model,
        n_heads=enc["n_heads"], n_layers=enc["n_layers"],
        ff_expansion=enc.get("ff_expansion_factor", 4),
        conv_kernel=enc.get("conv_kernel_size", 31),
        conv_norm=enc.get("conv_norm_type", "batch_norm"),
        subsampling_channels=d_model if channels in (-1, None) else channels,
        subsampling_factor=enc.get("subsampling_factor", 8),
        subsampling_freq_pad=[2, 1] if enc.get("causal_downsampling") else [1, 1],
        xscaling=enc.get("xscaling", True),
        chunk_frames=max(right, 0) + 1, left_context=left if left >= 0 else 128,
        pred_hidden=dec["prednet"]["pred_hidden"], pred_layers=dec["prednet"].get(
            "pred_rnn_layers", 1),
        joint_hidden=joint["jointnet"]["joint_hidden"], durations=list(durations))


def front_end(pre: dict, weights: dict[str, torch.Tensor]) -> LogMel:
    """NeMo's ``AudioToMelSpectrogramPreprocessor`` settings and buffers -> our ``LogMel``."""
    rate = pre.get("sample_rate", 16_000)
    if rate != 16_000:
        raise ValueError(f"only 16 kHz NeMo models are supported, not {rate}")
    unsupported = {k: pre.get(k) for k, ok in (("log", True), ("mag_power", 2.0),
                                               ("frame_splicing", 1), ("exact_pad", False),
                                               ("log_zero_guard_type", "add"))
                   if pre.get(k, ok) != ok}
    guard = pre.get("log_zero_guard_value", 2 ** -24)
    if unsupported or isinstance(guard, str):
        raise ValueError(f"unsupported NeMo preprocessor settings: {unsupported or guard}")
    if pre.get("normalize", "per_feature") not in ("NA", None, "none"):
        log.warning("NeMo preprocessor normalize=%s is per utterance and cannot stream; "
                    "features are used unnormalised", pre.get("normalize", "per_feature"))
    window, fbank = (weights.get(f"preprocessor.featurizer.{k}") for k in ("window", "fb"))
    if window is None or fbank is None:
        raise ValueError("the checkpoint lacks preprocessor.featurizer.window / .fb")
    hop = pre.get("n_window_stride") or round(pre.get("window_stride", 0.01) * rate)
    n_fft = 2 * (fbank.shape[-1] - 1)  # fb: (1, n_mels, n_fft // 2 + 1)
    return LogMel(fbank.shape[1], len(window), hop, n_fft, preemph=pre.get("preemph") or 0.0,
                  centred=True, log_guard=float(guard), window=window, fbank=fbank[0].T)


def load_nemo(path: str | Path) -> Transducer:
    files = _members(Path(path))
    if _CONFIG not in files or _WEIGHTS not in files:
        raise ValueError(f"{path} lacks {_CONFIG} or {_WEIGHTS}")
    cfg = yaml.safe_load(files[_CONFIG])
    vocabulary, separator = _vocabulary(cfg, files)
    model = Transducer(config_from_nemo(cfg, vocabulary, separator))
    weights = torch.load(io.BytesIO(files[_WEIGHTS]), map_location="cpu", weights_only=True)
    features = front_end(cfg.get("preprocessor", {}), weights)
    weights = {_JOINT_OUT.sub("joint.joint_net.2.", k): v for k, v in weights.items()
               if not k.startswith("preprocessor.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith(("feat_mean", "feat_std"))]
    if missing or unexpected:
        raise ValueError(f"checkpoint does not match: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.features = features
    return model.eval()
