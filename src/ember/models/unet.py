"""U-Net (Ronneberger et al. 2015) for dense prediction on 2-D grids: fields to fields, or
segmentation maps.

`depth` halvings of the resolution, each doubling the channels, then as many upsamplings that
concatenate the skip connection of the same resolution. Grids whose sides are not a multiple of
2**depth (a 181x360 climate field) are zero-padded for the network and cropped back after.

Upsampling is a bilinear resize and a 1x1 convolution, not a transposed convolution: a stride-2
transposed convolution gives the four pixels of each 2x2 block their own kernel weights, and the
difference shows as a grid-scale checkerboard in fields (Odena et al. 2016, "Deconvolution and
checkerboard artifacts"). The 1x1 convolution runs before the resize (the two commute), on a
quarter of the pixels; the 3x3 convolutions after the skip connection do the spatial mixing.

The default depth follows the grid: as many halvings (at most 4) as leave the smaller side at least
4 points. A fixed 4 pads an 18-point latitude axis to 32 and spends most of its work on padding.
"""

from typing import Annotated

import torch
from torch import nn
from torch.nn import functional as F

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import (
    activation,
    crop,
    dense_out_channels,
    dense_out_shape,
    norm,
    pad,
    pad_amounts,
    spatial_input,
)
from ember.ranges import AT_LEAST_1, FRACTION


class DoubleConv(nn.Module):
    """(3x3 conv, norm, activation) twice: one U-Net level."""

    def __init__(self, c_in: int, c_out: int, norm_kind: str, act: str, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm_kind == "none"),
            norm(norm_kind, c_out, 2),
            activation(act),
            nn.Dropout2d(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm_kind == "none"),
            norm(norm_kind, c_out, 2),
            activation(act),
        )

    def forward(self, x):
        return self.net(x)


class Down(nn.Module):
    def __init__(self, c_in: int, c_out: int, norm_kind: str, act: str, dropout: float):
        super().__init__()
        self.pool = nn.MaxPool2d(2)
        self.conv = DoubleConv(c_in, c_out, norm_kind, act, dropout)

    def forward(self, x):
        return self.conv(self.pool(x))


class Up(nn.Module):
    """Resize (bilinear, x2) and a 1x1 convolution, then the skip connection and a DoubleConv."""

    def __init__(self, c_in: int, c_out: int, norm_kind: str, act: str, dropout: float):
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_out, 1)
        self.conv = DoubleConv(2 * c_out, c_out, norm_kind, act, dropout)

    def forward(self, x, skip):
        up = F.interpolate(self.reduce(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, up], dim=1))


class UNet(nn.Module):
    def __init__(
        self,
        in_channels: int,
        size: tuple,
        out_channels: int,
        out_shape: tuple,
        width: int,
        depth: int,
        norm_kind: str,
        act: str,
        dropout: float,
    ):
        super().__init__()
        self.size = list(size)
        self.pads = pad_amounts(size, 2**depth)
        self.inc = DoubleConv(in_channels, width, norm_kind, act, dropout)
        self.downs = nn.ModuleList(
            [Down(width * 2**i, width * 2 ** (i + 1), norm_kind, act, dropout) for i in range(depth)]
        )
        self.ups = nn.ModuleList(
            [Up(width * 2 ** (i + 1), width * 2**i, norm_kind, act, dropout) for i in reversed(range(depth))]
        )
        self.out = nn.Conv2d(width, out_channels, 1)
        self.out_shape = out_shape

    def forward(self, x):
        n = x.shape[0]
        # Channels last: oneDNN's CPU convolutions run about 1.8x faster on it (an 18 x 432 grid,
        # width 16), and GPUs prefer it too; the weights stay contiguous (safetensors needs that).
        x = self.inc(pad(x, self.pads).contiguous(memory_format=torch.channels_last))
        skips: list[torch.Tensor] = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        for i, up in enumerate(self.ups):
            x = up(x, skips[len(skips) - 1 - i])
        return crop(self.out(x), self.size).reshape(n, *self.out_shape)


def auto_depth(size, coarsest: int = 4, most: int = 4) -> int:
    """Halvings that keep the smaller side at `coarsest` points or more (at least 1, at most `most`)."""
    depth = 1
    while depth < most and min(size) / 2 ** (depth + 1) >= coarsest:
        depth += 1
    return depth


@register_model("unet", example="field2d")
def unet(
    spec: DataSpec,
    *,
    width: Annotated[int, AT_LEAST_1] = 16,
    depth: Annotated[int | None, AT_LEAST_1] = None,  # None: as deep as the grid allows, at most 4
    norm: str = "batch",
    activation: str = "relu",
    dropout: Annotated[float, FRACTION] = 0.0,
) -> nn.Module:
    """2-D U-Net: fields to fields, or per-pixel classes; any grid size."""
    channels, size = spatial_input(spec, "unet", (2,), "use model=resnet1d or model=fno for 1-D fields")
    if depth is None:
        depth = auto_depth(size)
    elif depth < 1:
        raise ConfigError(f"model.depth={depth} must be at least 1")
    out_channels = dense_out_channels(spec, "unet", size)
    return UNet(channels, size, out_channels, dense_out_shape(spec, size), width, depth, norm, activation, dropout)
