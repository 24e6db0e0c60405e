"""A streaming Conformer transducer: encoder, prediction network and joint.

Module and parameter names follow NeMo's ``ConformerEncoder``/``RNNTDecoder``/``RNNTJoint`` so
NeMo checkpoints map onto it almost one to one (see ``nemo.py``). What makes it streamable:

* subsampling convolutions are causal in time (left padding only), each with a 2-frame cache;
* self-attention is chunked: a frame sees its own chunk (the look-ahead) and at most
  ``left_context`` frames before the chunk start, held as a K/V cache between chunks;
* relative positional encoding (Transformer-XL, as NeMo's ``rel_pos``), so cached keys need
  no absolute positions;
* the depthwise convolution is causal, with a ``kernel - 1`` frame cache.

Running the encoder chunk by chunk with caches gives the full-sequence output under the same
chunked attention mask (``tests/test_transducer_model.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .features import LogMel
from .whisper_front import WhisperFrames, WhisperHeadEncoder

_NEG = -1e9  # finite "minus infinity": a fully masked (padding) row stays NaN-free


@dataclass
class ModelConfig:
    vocabulary: list[str]
    n_mels: int = 80
    d_model: int = 96
    n_heads: int = 4
    n_layers: int = 4
    ff_expansion: int = 4
    conv_kernel: int = 9
    conv_norm: str = "layer_norm"  # or "batch_norm" (NeMo's default)
    subsampling_channels: int = 64
    subsampling_factor: int = 8
    # frequency padding (low, high) of the stride-2 convs: NeMo's causal_downsampling pads
    # (2, 1) like time, our own models (1, 1)
    subsampling_freq_pad: list[int] = field(default_factory=lambda: [1, 1])
    xscaling: bool = True
    chunk_frames: int = 2  # attention chunk in encoder frames (80 ms each): the look-ahead
    left_context: int = 32  # encoder frames before a chunk that attention sees
    pred_hidden: int = 128
    pred_layers: int = 1
    joint_hidden: int = 128
    durations: list[int] = field(default_factory=list)  # TDT durations; empty: plain RNN-T
    word_separator: str = " "  # "" with "▁"-marked word pieces (sentencepiece)
    # "log_mel" (the Conformer above) or "whisper" (Whisper tiny.en's frozen encoder with an
    # LSTM head of ``n_layers`` x ``d_model``; whisper_front.py)
    front_end: str = "log_mel"
    decoding: str = "tdt"  # the backend's default for this model: the best measured

    @property
    def blank(self) -> int:
        return len(self.vocabulary)

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- encoder


class ConvSubsampling(nn.Module):
    """NeMo's ``dw_striding``: stride-2 convs to ``factor`` x fewer frames, causal in time."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c, steps = cfg.subsampling_channels, int(math.log2(cfg.subsampling_factor))
        layers: list[nn.Module] = [nn.Conv2d(1, c, 3, stride=2), nn.ReLU()]
        for _ in range(steps - 1):
            layers += [nn.Conv2d(c, c, 3, stride=2, groups=c), nn.Conv2d(c, c, 1), nn.ReLU()]
        self.conv = nn.Sequential(*layers)
        self.freq_pad = tuple(cfg.subsampling_freq_pad)
        freq = cfg.n_mels
        for _ in range(steps):
            freq = (freq + sum(self.freq_pad) - 3) // 2 + 1
        self.out = nn.Linear(c * freq, cfg.d_model)
        self.strided = [m for m in self.conv if isinstance(m, nn.Conv2d) and m.stride[0] == 2]
        for m in self.conv:  # variance-preserving init: the default shrinks the signal ~3x
            if isinstance(m, nn.Conv2d):  # per conv, leaving the biases to dominate
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def init_cache(self, batch: int, n_mels: int) -> list[torch.Tensor]:
        caches, freq = [], n_mels
        for conv in self.strided:
            caches.append(conv.weight.new_zeros(batch, conv.in_channels, 2, freq))
            freq = (freq + sum(self.freq_pad) - 3) // 2 + 1
        return caches

    def forward(self, feats: torch.Tensor, cache: list[torch.Tensor]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(B, T, n_mels)``, T a multiple of the factor -> ``(B, T / factor, d_model)``."""
        x, new_cache, i = feats.unsqueeze(1), [], 0
        for layer in self.conv:
            if isinstance(layer, nn.Conv2d) and layer.stride[0] == 2:
                x = torch.cat([cache[i], x], dim=2)  # the time padding is the previous frames
                new_cache.append(x[:, :, -2:])
                x = F.conv2d(F.pad(x, (*self.freq_pad, 0, 0)), layer.weight, layer.bias, stride=2,
                             groups=layer.groups)
                i += 1
            else:
                x = layer(x)
        b, c, t, f = x.shape
        return self.out(x.transpose(1, 2).reshape(b, t, c * f)), new_cache


def rel_positions(d_model: int, distances: torch.Tensor) -> torch.Tensor:
    """Sinusoidal embeddings of relative distances (NeMo's ``RelPositionalEncoding``)."""
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32)
                    * -(math.log(10000.0) / d_model))
    angles = distances.float().unsqueeze(-1) * div
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class RelPositionMultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.h, self.dk = n_heads, d_model // n_heads
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.dk))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.dk))

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.h, self.dk).transpose(1, 2)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                distance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x``: queries (B, Tq, D); ``k``/``v``: (B, H, Tk, dk) already projected;
        ``distance``: (Tq, Tk) query minus key position; ``mask``: (B|1, Tq, Tk), True = see."""
        q = self.heads(self.linear_q(x)).transpose(1, 2)  # (B, Tq, H, dk)
        low = int(distance.min())
        table = rel_positions(x.shape[-1], torch.arange(low, int(distance.max()) + 1,
                                                          device=x.device))
        p = self.linear_pos(table.to(x.dtype)).view(-1, self.h, self.dk).permute(1, 2, 0)
        ac = (q + self.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)
        bd_all = (q + self.pos_bias_v).transpose(1, 2) @ p  # (B, H, Tq, R)
        index = (distance - low).expand(*bd_all.shape[:2], *distance.shape)
        scores = (ac + bd_all.gather(-1, index)) / math.sqrt(self.dk)
        scores = scores.masked_fill(~mask.unsqueeze(1), _NEG)
        out = torch.softmax(scores, dim=-1) @ v
        return self.linear_out(out.transpose(1, 2).reshape(x.shape))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, expansion: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_model * expansion)
        self.linear2 = nn.Linear(d_model * expansion, d_model)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.silu(self.linear1(x))))


class CausalConvModule(nn.Module):
    def __init__(self, d_model: int, kernel: int, norm: str) -> None:
        super().__init__()
        self.pointwise_conv1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise_conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model)
        self.batch_norm = nn.BatchNorm1d(d_model) if norm == "batch_norm" else nn.LayerNorm(d_model)
        self.pointwise_conv2 = nn.Conv1d(d_model, d_model, 1)

    def forward(self, x: torch.Tensor, cache: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (B, T, D); ``cache`` (B, D, kernel - 1): the GLU outputs before this chunk."""
        y = torch.cat([cache, F.glu(self.pointwise_conv1(x.transpose(1, 2)), dim=1)], dim=2)
        new_cache = y[:, :, y.shape[2] - cache.shape[2]:]
        y = self.depthwise_conv(y)
        if isinstance(self.batch_norm, nn.LayerNorm):
            y = self.batch_norm(y.transpose(1, 2)).transpose(1, 2)
        else:
            y = self.batch_norm(y)
        return self.pointwise_conv2(F.silu(y)).transpose(1, 2), new_cache


class ConformerLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.feed_forward1 = FeedForward(d, cfg.ff_expansion)
        self.norm_self_att = nn.LayerNorm(d)
        self.self_attn = RelPositionMultiHeadAttention(d, cfg.n_heads)
        self.norm_conv = nn.LayerNorm(d)
        self.conv = CausalConvModule(d, cfg.conv_kernel, cfg.conv_norm)
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.feed_forward2 = FeedForward(d, cfg.ff_expansion)
        self.norm_out = nn.LayerNorm(d)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                conv_cache: torch.Tensor, distance: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """One chunk. ``kv``: cached keys/values (B, H, L, dk), prepended to this chunk's."""
        x = x + 0.5 * self.dropout(self.feed_forward1(self.norm_feed_forward1(x)))
        a = self.norm_self_att(x)
        att = self.self_attn
        k = torch.cat([kv[0], att.heads(att.linear_k(a))], dim=2)
        v = torch.cat([kv[1], att.heads(att.linear_v(a))], dim=2)
        x = x + self.dropout(att(a, k, v, distance, mask))
        c, conv_cache = self.conv(self.norm_conv(x), conv_cache)
        x = x + self.dropout(c)
        x = x + 0.5 * self.dropout(self.feed_forward2(self.norm_feed_forward2(x)))
        keep = kv[0].shape[2]
        return self.norm_out(x), (k[:, :, k.shape[2] - keep:], v[:, :, v.shape[2] - keep:]), \
            conv_cache


@dataclass
class EncoderState:
    """Per-stream streaming state, batched along dim 0 of every tensor."""

    sub: list[torch.Tensor]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    conv: list[torch.Tensor]
    seen: torch.Tensor  # (B,) encoder frames already produced (caps at left_context)

    @staticmethod
    def stack(states: list[EncoderState]) -> EncoderState:
        return EncoderState(
            sub=[torch.cat(parts) for parts in zip(*(s.sub for s in states))],
            kv=[(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
                for parts in zip(*(s.kv for s in states))],
            conv=[torch.cat(parts) for parts in zip(*(s.conv for s in states))],
            seen=torch.cat([s.seen for s in states]))

    def split(self) -> list[EncoderState]:
        return [EncoderState(sub=[t[i:i + 1] for t in self.sub],
                             kv=[(k[i:i + 1], v[i:i + 1]) for k, v in self.kv],
                             conv=[t[i:i + 1] for t in self.conv], seen=self.seen[i:i + 1])
                for i in range(self.seen.shape[0])]


def chunk_mask(length: int, chunk: int, left: int) -> torch.Tensor:
    """(T, T) True where frame i may attend frame j: j in i's chunk or <= ``left`` before it."""
    i = torch.arange(length)
    start = i // chunk * chunk
    j = i.unsqueeze(0)
    return (j < (start + chunk).unsqueeze(1)) & (j >= (start - left).unsqueeze(1))


class ConformerEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pre_encode = ConvSubsampling(cfg)
        self.layers = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_layers))
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.n_mels))

    def init_state(self, batch: int = 1) -> EncoderState:
        cfg, w = self.cfg, self.feat_mean  # (quantised Linears have no weight tensor)
        dk = cfg.d_model // cfg.n_heads
        kv = w.new_zeros(batch, cfg.n_heads, cfg.left_context, dk)
        return EncoderState(
            sub=self.pre_encode.init_cache(batch, cfg.n_mels),
            kv=[(kv, kv) for _ in self.layers],
            conv=[w.new_zeros(batch, cfg.d_model, cfg.conv_kernel - 1) for _ in self.layers],
            seen=torch.zeros(batch, dtype=torch.long, device=w.device))

    def _embed(self, feats: torch.Tensor, sub: list[torch.Tensor]):
        x, sub = self.pre_encode((feats - self.feat_mean) / self.feat_std, sub)
        return (x * math.sqrt(self.cfg.d_model) if self.cfg.xscaling else x), sub

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None,
                chunk: int | None = None, left: int | None = None) -> torch.Tensor:
        """Whole sequences ``(B, T, n_mels)`` under the chunked mask (training, reference)."""
        cfg = self.cfg
        chunk, left = chunk or cfg.chunk_frames, cfg.left_context if left is None else left
        state = self.init_state(feats.shape[0])
        x, _ = self._embed(feats, state.sub)
        t = x.shape[1]
        pos = torch.arange(t, device=x.device)
        mask = chunk_mask(t, chunk, left).to(x.device).unsqueeze(0)
        if lengths is not None:
            mask = mask & (pos < lengths.to(x.device).unsqueeze(1)).unsqueeze(1)
        distance = pos.unsqueeze(1) - pos.unsqueeze(0)
        empty = x.new_zeros(x.shape[0], cfg.n_heads, 0, cfg.d_model // cfg.n_heads)
        for layer, conv in zip(self.layers, state.conv):
            x, _, _ = layer(x, (empty, empty), conv, distance, mask)
        return x

    def stream(self, feats: torch.Tensor, state: EncoderState
               ) -> tuple[torch.Tensor, EncoderState]:
        """One chunk ``(B, chunk * factor, n_mels)`` per stream -> ``(B, chunk, d_model)``."""
        cfg = self.cfg
        x, sub = self._embed(feats, state.sub)
        t, cache = x.shape[1], cfg.left_context
        keys = torch.arange(cache + t, device=x.device)
        valid_cache = keys.unsqueeze(0) >= cache - state.seen.clamp(max=cache).unsqueeze(1)
        mask = valid_cache.unsqueeze(1).expand(-1, t, -1)
        distance = (torch.arange(t, device=x.device) + cache).unsqueeze(1) - keys.unsqueeze(0)
        kvs, convs = [], []
        for layer, kv, conv in zip(self.layers, state.kv, state.conv):
            x, kv, conv = layer(x, kv, conv, distance, mask)
            kvs.append(kv)
            convs.append(conv)
        return x, EncoderState(sub, kvs, convs, state.seen + t)


# ---------------------------------------------------------------- decoder and joint


class Prediction(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        # blank doubles as start-of-sequence; padding_idx keeps its embedding at zero (NeMo)
        self.embed = nn.Embedding(cfg.blank + 1, cfg.pred_hidden, padding_idx=cfg.blank)
        self.dec_rnn = nn.Module()
        self.dec_rnn.lstm = nn.LSTM(cfg.pred_hidden, cfg.pred_hidden, cfg.pred_layers,
                                    batch_first=True)


class RNNTDecoder(nn.Module):
    """LSTM prediction network: previous tokens -> ``(B, U, pred_hidden)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.prediction = Prediction(cfg)

    def forward(self, tokens: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        out, state = self.prediction.dec_rnn.lstm(self.prediction.embed(tokens), state)
        return out, state


class RNNTJoint(nn.Module):
    """``relu(enc(f) + pred(g))`` -> token logits (blank last), then TDT duration logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_tokens = cfg.blank + 1
        self.enc = nn.Linear(cfg.d_model, cfg.joint_hidden)
        self.pred = nn.Linear(cfg.pred_hidden, cfg.joint_hidden)
        outputs = self.n_tokens + len(cfg.durations)
        self.joint_net = nn.Sequential(nn.ReLU(), nn.Dropout(0.1),
                                       nn.Linear(cfg.joint_hidden, outputs))

    def forward(self, f: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected ``f`` and ``g`` (broadcastable) -> (token log-probs, duration log-probs)."""
        logits = self.joint_net(f + g)
        return (logits[..., :self.n_tokens].log_softmax(-1),
                logits[..., self.n_tokens:].log_softmax(-1))


class Transducer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.features: LogMel | WhisperFrames
        self.encoder: ConformerEncoder | WhisperHeadEncoder
        if cfg.front_end == "whisper":
            self.features = WhisperFrames()  # not a module: its weights are Whisper's own
            self.encoder = WhisperHeadEncoder(cfg.d_model, cfg.n_layers)
        elif cfg.front_end == "log_mel":
            self.features = LogMel(cfg.n_mels)
            self.encoder = ConformerEncoder(cfg)
        else:
            raise ValueError(f"unknown front end {cfg.front_end!r}")
        self.decoder = RNNTDecoder(cfg)
        self.joint = RNNTJoint(cfg)

    def text(self, tokens: list[int]) -> str:
        words = self.cfg.word_separator.join(self.cfg.vocabulary[t] for t in tokens)
        return " ".join(words.replace("\u2581", " ").split())
