"""Vision Transformer (Dosovitskiy et al. 2020) with the DeiT tiny/small presets.

Images are cut into patch_size x patch_size patches (a strided convolution), each a token with a
learned position embedding, then pre-norm transformer blocks and a mean-pooled linear head (mean
pooling trains as well as a class token and needs no special token). Image sizes that the patch
size does not divide are zero-padded on the right and bottom.
"""


from typing import Annotated

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import flat_out_features, out_shape, pad, pad_amounts, spatial_input
from ember.models.sequence import Block, check_heads
from ember.ranges import AT_LEAST_1, FRACTION, POSITIVE, check_choice

PRESETS = {"tiny": {"dim": 192, "depth": 12, "heads": 3}, "small": {"dim": 384, "depth": 12, "heads": 6}}


class ViT(nn.Module):
    def __init__(
        self,
        in_channels: int,
        size: tuple,
        out_features: int,
        out_shape: tuple,
        patch: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
    ):
        super().__init__()
        self.pads = pad_amounts(size, patch)
        grid = [(s + patch - 1) // patch for s in size]
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, out_features)
        self.out_shape = out_shape
        self.apply(_init)

    def forward(self, x):
        x = self.embed(pad(x, self.pads)).flatten(2).transpose(1, 2)  # (N, patches, dim)
        x = self.blocks(self.drop(x + self.pos))
        x = self.norm(x).mean(dim=1)
        return self.head(x).reshape(x.shape[0], *self.out_shape)


def _init(m: nn.Module) -> None:
    # timm's ViT initialization: truncated-normal linear weights, zero biases.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


@register_model("vit", example="image")
def vit(
    spec: DataSpec,
    *,
    size: str = "tiny",
    dim: Annotated[int | None, AT_LEAST_1] = None,
    depth: Annotated[int | None, AT_LEAST_1] = None,
    heads: Annotated[int | None, AT_LEAST_1] = None,
    patch_size: Annotated[int | None, AT_LEAST_1] = None,
    mlp_ratio: Annotated[float, POSITIVE] = 4.0,
    dropout: Annotated[float, FRACTION] = 0.0,
) -> nn.Module:
    """Vision Transformer with DeiT tiny/small presets."""
    check_choice("model.size", size, tuple(PRESETS))
    channels, (h, w) = spatial_input(spec, "vit", (2,), "use model=transformer for sequences or model=mlp for tables")
    preset = PRESETS[size]
    dim, depth, heads = dim or preset["dim"], depth or preset["depth"], heads or preset["heads"]
    check_heads(dim, heads)
    if patch_size is None:
        # 16 px patches for ImageNet-sized images, about 8x8 patches for small ones (4 px on CIFAR).
        patch_size = 16 if min(h, w) >= 128 else max(1, round(min(h, w) / 8))
    if not 1 <= patch_size <= max(h, w):
        raise ConfigError(f"model.patch_size={patch_size} must be between 1 and the image size {h}x{w}")
    return ViT(
        channels, (h, w), flat_out_features(spec), out_shape(spec), patch_size, dim, depth, heads, mlp_ratio, dropout
    )
