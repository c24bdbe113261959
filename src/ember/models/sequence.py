"""Models for sequences given as (channels, length): a GRU and a transformer encoder.

The transformer's Block (pre-norm attention + MLP, as in GPT-2 and ViT) is also the ViT's.
Attention runs through F.scaled_dot_product_attention, which picks the fused kernel the device has.
"""

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import activation, flat_out_features, out_shape, spatial_input
from ember.ranges import AT_LEAST_1, FRACTION, POSITIVE


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], dropout_p=p)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """x + attention(norm(x)), then x + mlp(norm(x)): the pre-norm residual block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float, act: str = "gelu"):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), activation(act), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def check_heads(dim: int, heads: int) -> None:
    if heads < 1 or dim % heads:
        raise ConfigError(f"model.heads={heads} must divide the width model.dim={dim}")


class SequenceTransformer(nn.Module):
    def __init__(
        self,
        in_channels: int,
        length: int,
        out_features: int,
        out_shape: tuple,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        patch_size: int,
        dropout: float,
        act: str,
    ):
        super().__init__()
        # Tokens: non-overlapping windows of `patch_size` steps, projected to `dim` (a strided conv).
        self.embed = nn.Conv1d(in_channels, dim, patch_size, stride=patch_size)
        tokens = length // patch_size
        self.pos = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, dropout, act) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_features)
        self.out_shape = out_shape

    def forward(self, x):
        x = self.embed(x).transpose(1, 2)  # (N, tokens, dim)
        x = self.blocks(self.drop(x + self.pos))
        x = self.norm(x).mean(dim=1)  # mean over tokens: no class token needed
        return self.head(x).reshape(x.shape[0], *self.out_shape)


@register_model("transformer")
def transformer(
    spec: DataSpec,
    *,
    dim: Annotated[int, AT_LEAST_1] = 64,
    depth: Annotated[int, AT_LEAST_1] = 4,
    heads: Annotated[int, AT_LEAST_1] = 4,
    mlp_ratio: Annotated[float, POSITIVE] = 4.0,
    patch_size: Annotated[int, AT_LEAST_1] = 1,
    dropout: Annotated[float, FRACTION] = 0.1,
    activation: str = "gelu",
) -> nn.Module:
    """Transformer encoder for (channels, length) sequences, mean-pooled tokens."""
    channels, (length,) = spatial_input(spec, "transformer", (1,), "use model=vit for images or model=mlp for tables")
    check_heads(dim, heads)
    if not 1 <= patch_size <= length:
        raise ConfigError(f"model.patch_size={patch_size} must be between 1 and the sequence length {length}")
    return SequenceTransformer(
        channels,
        length,
        flat_out_features(spec),
        out_shape(spec),
        dim,
        depth,
        heads,
        mlp_ratio,
        patch_size,
        dropout,
        activation,
    )


class GRU(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_features: int,
        out_shape: tuple,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
    ):
        super().__init__()
        self.rnn = nn.GRU(
            in_channels,
            hidden,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), out_features)
        self.out_shape = out_shape
        self.bidirectional = bidirectional

    def forward(self, x):
        _, h = self.rnn(x.transpose(1, 2))  # h: (layers * directions, N, hidden)
        # The last layer's final state; both directions' when bidirectional.
        last = torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1]
        return self.head(self.dropout(last)).reshape(x.shape[0], *self.out_shape)


@register_model("gru")
def gru(
    spec: DataSpec,
    *,
    hidden: Annotated[int, AT_LEAST_1] = 128,
    layers: Annotated[int, AT_LEAST_1] = 1,
    bidirectional: bool = False,
    dropout: Annotated[float, FRACTION] = 0.0,
) -> nn.Module:
    """GRU over (channels, length) sequences, a linear head on the final state."""
    channels, _ = spatial_input(spec, "gru", (1,), "use model=mlp for tables")
    return GRU(channels, flat_out_features(spec), out_shape(spec), hidden, layers, bidirectional, dropout)
