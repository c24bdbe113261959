"""ResNets (He et al. 2015) for images (`resnet`) and for signals and sequences (`resnet1d`).

One implementation serves both: `dims` picks Conv1d or Conv2d. The stages, blocks and widths are
the paper's (18/34 with basic blocks, 50 with bottlenecks). Two stems: the standard ImageNet one
(7x7 stride 2 convolution and max pooling, a 4x reduction for 224x224 inputs) and the small-image
one used for CIFAR (a 3x3 stride 1 convolution), which keeps the resolution a 32x32 image needs.
"""

from typing import Annotated

from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import activation, conv, flat_out_features, norm, out_shape, spatial_input
from ember.ranges import AT_LEAST_1, FRACTION, check_choice

# depth -> (block type, blocks per stage)
LAYOUTS = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, dims: int, c_in: int, c: int, stride: int, kernel: int, norm_kind: str, act: str):
        super().__init__()
        Conv = conv(dims)
        self.conv1 = Conv(c_in, c, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm1 = norm(norm_kind, c, dims)
        self.act1 = activation(act)
        self.conv2 = Conv(c, c, kernel, padding=kernel // 2, bias=False)
        self.norm2 = norm(norm_kind, c, dims)
        self.act2 = activation(act)
        self.shortcut = _shortcut(dims, c_in, c, stride, norm_kind)
        # Zero-initialized last norm: every block starts as the identity, which trains deep nets
        # faster (Goyal et al. 2017).
        if isinstance(self.norm2, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.zeros_(self.norm2.weight)

    def forward(self, x):
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, dims: int, c_in: int, c: int, stride: int, kernel: int, norm_kind: str, act: str):
        super().__init__()
        Conv = conv(dims)
        c_out = c * self.expansion
        self.conv1 = Conv(c_in, c, 1, bias=False)
        self.norm1 = norm(norm_kind, c, dims)
        self.act1 = activation(act)
        # The stride sits on the 3x3 convolution (ResNet v1.5, torchvision's choice).
        self.conv2 = Conv(c, c, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.norm2 = norm(norm_kind, c, dims)
        self.act2 = activation(act)
        self.conv3 = Conv(c, c_out, 1, bias=False)
        self.norm3 = norm(norm_kind, c_out, dims)
        self.act3 = activation(act)
        self.shortcut = _shortcut(dims, c_in, c_out, stride, norm_kind)
        if isinstance(self.norm3, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.zeros_(self.norm3.weight)

    def forward(self, x):
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


def _shortcut(dims: int, c_in: int, c_out: int, stride: int, norm_kind: str) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    return nn.Sequential(conv(dims)(c_in, c_out, 1, stride=stride, bias=False), norm(norm_kind, c_out, dims))


class ResNet(nn.Module):
    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_features: int,
        out_shape: tuple,
        depth: int,
        width: int,
        stem: str,
        kernel: int,
        stem_kernel: int,
        stages: int,
        norm_kind: str,
        act: str,
        dropout: float,
    ):
        super().__init__()
        Conv = conv(dims)
        kind, blocks = LAYOUTS[depth]
        Block = BasicBlock if kind == "basic" else Bottleneck
        if stem == "imagenet":
            pool = nn.MaxPool1d(3, 2, 1) if dims == 1 else nn.MaxPool2d(3, 2, 1)
            self.stem = nn.Sequential(
                Conv(in_channels, width, 7, stride=2, padding=3, bias=False),
                norm(norm_kind, width, dims),
                activation(act),
                pool,
            )
        else:
            self.stem = nn.Sequential(
                Conv(in_channels, width, stem_kernel, padding=stem_kernel // 2, bias=False),
                norm(norm_kind, width, dims),
                activation(act),
            )
        layers: list[nn.Module] = []
        c_in = width
        for i, n in enumerate(blocks[:stages]):
            c = width * 2**i
            # The first stage keeps the stem's resolution; each later one halves it.
            for j in range(n):
                layers.append(Block(dims, c_in, c, 2 if (i > 0 and j == 0) else 1, kernel, norm_kind, act))
                c_in = c * Block.expansion
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_in, out_features)
        self.out_shape = out_shape

    def forward(self, x):
        x = self.stages(self.stem(x))
        x = self.dropout(self.pool(x).flatten(1))
        return self.head(x).reshape(x.shape[0], *self.out_shape)


def _check(depth: int, stem: str, stages: int, norm_kind: str) -> None:
    if depth not in LAYOUTS:
        raise ConfigError(f"model.depth={depth} is not a ResNet depth; choose one of: {', '.join(map(str, LAYOUTS))}")
    check_choice("model.stem", stem, ("auto", "small", "imagenet"))
    check_choice("model.norm", norm_kind, ("batch", "group", "layer", "none"))
    if not 1 <= stages <= 4:
        raise ConfigError(f"model.stages={stages} must be between 1 and 4")


@register_model("resnet", example="image")
def resnet(
    spec: DataSpec,
    *,
    depth: Annotated[int, AT_LEAST_1] = 18,  # the builder names the depths it has
    width: Annotated[int, AT_LEAST_1] = 64,
    stem: str = "auto",
    norm: str = "batch",
    activation: str = "relu",
    dropout: Annotated[float, FRACTION] = 0.0,
) -> nn.Module:
    """ResNet-18/34/50; CIFAR stem below 128 px, ImageNet stem above."""
    _check(depth, stem, 4, norm)
    channels, (h, w) = spatial_input(spec, "resnet", (2,), "use model=resnet1d for signals or model=mlp for tables")
    if stem == "auto":
        stem = "imagenet" if min(h, w) >= 128 else "small"
    return ResNet(
        2, channels, flat_out_features(spec), out_shape(spec), depth, width, stem, 3, 3, 4, norm, activation, dropout
    )


@register_model("resnet1d")
def resnet1d(
    spec: DataSpec,
    *,
    depth: Annotated[int, AT_LEAST_1] = 18,  # the builder names the depths it has
    width: Annotated[int, AT_LEAST_1] = 32,
    stages: Annotated[int, AT_LEAST_1] = 3,
    kernel_size: Annotated[int, AT_LEAST_1] = 5,
    norm: str = "batch",
    activation: str = "relu",
    dropout: Annotated[float, FRACTION] = 0.1,
) -> nn.Module:
    """1-D ResNet for signals and sequences, global average pooling."""
    _check(depth, "small", stages, norm)
    channels, _ = spatial_input(spec, "resnet1d", (1,), "use model=resnet for images or model=mlp for tables")
    return ResNet(
        1,
        channels,
        flat_out_features(spec),
        out_shape(spec),
        depth,
        width,
        "small",
        kernel_size,
        kernel_size,
        stages,
        norm,
        activation,
        dropout,
    )
