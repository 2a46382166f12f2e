"""The two transformer pooling heads (audio, image) and the logit scale: the paper's learner.

Each head is the authors' `TransformerPooling`: linear D→W (with bias), a learnable CLS token prepended,
no positional embeddings, one pre-norm `nn.TransformerEncoderLayer`, LayerNorm, linear W→E (no bias),
L2 normalisation. Only the CLS output is ever used, so `cls_block` computes the block for the CLS position
alone (its query, attention, output projection and MLP) while every token still serves as a key and a
value: the same function as the full layer's CLS output (`tests/train/test_model.py` checks it against
`nn.TransformerEncoderLayer`), a fraction of its cost. The block's weights live in a real
`nn.TransformerEncoderLayer`, so checkpoints keep the standard layer's parameter names and shapes.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

LOGIT_MODES = ("cap", "fixed100")
LOGIT_SCALE_MAX = 100.0
LOGIT_SCALE_INIT = 1 / 0.07


def cls_block(layer: nn.TransformerEncoderLayer, h: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
    """The pre-norm encoder layer's output at position 0 of `h` (B, L, W), computed for that position only.

    Keys and values are never materialised: for head k, q·(Wk y + bk) = (Wkᵀ q)·y + q·bk, and q·bk is the
    same for every token so it cancels in the softmax; Σ α (Wv y + bv) = Wv (Σ α y) + bv Σ α. Both are
    exact rewrites that cost O(L·W) per head instead of O(L·W²). `pad` (B, L) is True at padding.
    """
    attn = layer.self_attn
    batch, _, width = h.shape
    heads = attn.num_heads
    head_dim = width // heads
    w_q, w_k, w_v = attn.in_proj_weight.split(width)
    b_q, _, b_v = attn.in_proj_bias.split(width)

    y = layer.norm1(h)
    q = F.linear(y[:, 0], w_q, b_q).view(batch, heads, head_dim)
    q_k = torch.einsum("bhd,hdw->bhw", q, w_k.view(heads, head_dim, width)) * head_dim**-0.5
    scores = torch.einsum("bhw,blw->bhl", q_k, y.to(q_k.dtype)).float()
    if pad is not None:
        scores = scores.masked_fill(pad[:, None, :], float("-inf"))
    weights = F.dropout(scores.softmax(-1), attn.dropout, layer.training)
    mixed = torch.einsum("bhl,blw->bhw", weights.to(y.dtype), y)
    values = torch.einsum("bhw,hdw->bhd", mixed, w_v.view(heads, head_dim, width))
    values = values + b_v.view(heads, head_dim) * weights.sum(-1, keepdim=True).to(values.dtype)
    c = h[:, 0] + layer.dropout1(attn.out_proj(values.reshape(batch, width)))
    return c + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(c))))))


class PoolingHead(nn.Module):
    """Frozen features (B, T, D) → unit embeddings (B, E) through one transformer block read at a CLS token."""

    def __init__(self, input_dim: int, width: int, embed_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        if width % 64:
            raise ValueError(f"width {width} is not a multiple of 64 (the heads are width/64, as in the paper)")
        self.proj = nn.Linear(input_dim, width)
        self.cls = nn.Parameter(torch.randn(width) * input_dim**-0.5)
        self.layer = nn.TransformerEncoderLayer(
            width, nhead=width // 64, dim_feedforward=4 * width, dropout=dropout,
            activation="gelu", layer_norm_eps=1e-5, batch_first=True, norm_first=True,
        )
        self.norm = nn.LayerNorm(width, eps=1e-5)
        self.out = nn.Linear(width, embed_dim or width, bias=False)

    def tokens(self, x: torch.Tensor, pad: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[CLS; proj(x)] and its padding mask (the CLS position is never padding)."""
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.proj.weight.dtype)
        h = self.proj(x)
        h = torch.cat([self.cls.to(h.dtype).expand(len(h), 1, -1), h], dim=1)
        if pad is not None:
            pad = torch.cat([pad.new_zeros(len(pad), 1), pad], dim=1)
        return h, pad

    def forward(self, x: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        h, pad = self.tokens(x, pad)
        return F.normalize(self.out(self.norm(cls_block(self.layer, h, pad))).float(), dim=-1)


class LayerWeights(nn.Module):
    """A learned softmax-weighted sum over the layer axis: (B, T, L, D) → (B, T, D).

    The SUPERB / s3prl convention for frozen speech encoders: one learnable logit per stored layer,
    initialised to zero (a uniform average at the start), mixed by their softmax before the pooling head.
    The logits are part of the model's state dict, so they are saved in every checkpoint.
    """

    def __init__(self, layers: int):
        super().__init__()
        if layers < 2:
            raise ValueError(f"a weighted sum of layers needs two layers or more, not {layers}")
        self.logits = nn.Parameter(torch.zeros(layers))

    def weights(self) -> torch.Tensor:
        """The mixing weights (L,), summing to 1."""
        return self.logits.float().softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[2] != len(self.logits):
            raise ValueError(f"layer weights for {len(self.logits)} layers got features of shape {tuple(x.shape)}, "
                             f"expected (B, T, {len(self.logits)}, D)")
        if not torch.is_autocast_enabled(x.device.type):  # float16 features read from disk: mix in fp32
            x = x.to(self.logits.dtype)
        return torch.einsum("btld,l->btd", x, self.weights().to(x.dtype))


class TwoTower(nn.Module):
    """Audio head, image head and the logit scale; score(a, i) = logit_scale() · ⟨a, i⟩.

    `logit_mode="cap"`: exp(s), s learnable from log(1/0.07), capped at 100 (the paper's words).
    `logit_mode="fixed100"`: exactly 100, what the authors' code computed in every published run (its
    `max(exp(s), 100)` is a floor that s never reaches); s is kept, frozen, so checkpoints match.
    """

    def __init__(self, audio_dim: int, image_dim: int, width: int = 256, logit_mode: str = "fixed100",
                 embed_dim: int | None = None, dropout: float = 0.1, audio_layers: int = 0):
        super().__init__()
        if logit_mode not in LOGIT_MODES:
            raise ValueError(f"logit mode {logit_mode!r} is not one of {LOGIT_MODES}")
        self.logit_mode = logit_mode
        self.audio = PoolingHead(audio_dim, width, embed_dim, dropout)
        self.image = PoolingHead(image_dim, width, embed_dim, dropout)
        self.log_scale = nn.Parameter(torch.tensor(math.log(LOGIT_SCALE_INIT)), requires_grad=logit_mode == "cap")
        # made last, and only for `--audio-layer weighted` (audio_layers = L): every other parameter starts as
        # it does in a model of one layer, and such a model's state dict is unchanged
        self.audio_layer_weights = LayerWeights(audio_layers) if audio_layers else None

    def embed_audio(self, x: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        """x (B, T, D), or (B, T, L, D) for a model with layer weights."""
        if self.audio_layer_weights is not None:
            x = self.audio_layer_weights(x)
        return self.audio(x, pad)

    def embed_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.image(x)

    def logit_scale(self) -> torch.Tensor:
        if self.logit_mode == "fixed100":
            return self.log_scale.new_tensor(LOGIT_SCALE_MAX)
        return self.log_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Keep s ≤ log 100 after an optimiser step (as CLIP does), so the cap never strands s above it."""
        self.log_scale.clamp_(max=math.log(LOGIT_SCALE_MAX))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_config(cls, config: dict) -> "TwoTower":
        weighted = config.get("audio_layer") == "weighted"
        return cls(config["audio_dim"], config["image_dim"], config["width"], config["logit_mode"],
                   config.get("embed_dim"), audio_layers=len(config.get("audio_store_layers") or ()) if weighted else 0)

    @classmethod
    def from_run(cls, path: str | Path, checkpoint: str = "best") -> "TwoTower":
        """The model of a run folder with its `best` (lowest validation loss) or `last` weights, in eval mode.

        `train.runs.RunFolder` owns the run folder's files; this is its `load_model`."""
        from train.runs import RunFolder

        return RunFolder.open(path).load_model(checkpoint)


def expected_parameter_count(audio_dim: int, image_dim: int, width: int) -> int:
    """13W² + D·W + 17W per tower, plus s: the spec's formula (790,785 / 2,433,537 / 8,274,945 for the paper)."""
    return sum(13 * width**2 + d * width + 17 * width for d in (audio_dim, image_dim)) + 1
