"""A 1-D convolutional network for signals: the default model for MNIST-1D."""

from typing import Annotated

from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import activation, out_shape
from ember.ranges import AT_LEAST_1, FRACTION


class CNN1d(nn.Module):
    def __init__(
        self,
        in_channels: int,
        length: int,
        out_features: int,
        channels: int,
        depth: int,
        kernel_size: int,
        act: str,
        dropout: float,
        out_shape: tuple | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(depth):
            # The first layer keeps full resolution; later ones halve it (stride 2).
            stride = 1 if i == 0 else 2
            layers += [
                nn.Conv1d(c_in, channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
                nn.BatchNorm1d(channels),
                activation(act),
            ]
            c_in = channels
            length = (length + 2 * (kernel_size // 2) - kernel_size) // stride + 1
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels * length, out_features))
        self.out_shape = out_shape if out_shape is not None else (out_features,)

    def forward(self, x):
        return self.head(self.features(x)).reshape(x.shape[0], *self.out_shape)


@register_model("cnn1d")
def cnn1d(
    spec: DataSpec,
    *,
    channels: Annotated[int, AT_LEAST_1] = 64,
    depth: Annotated[int, AT_LEAST_1] = 3,
    kernel_size: Annotated[int, AT_LEAST_1] = 5,
    activation: str = "gelu",
    dropout: Annotated[float, FRACTION] = 0.1,
) -> nn.Module:
    """1-D CNN: conv-BN-activation blocks, later ones strided, a linear head."""
    if len(spec.input_shape) != 2:
        # ember's default model meets gridded data first: name the model for 2-D fields there.
        hint = (
            "model=unet (or model=fno) for 2-D fields"
            if len(spec.input_shape) == 3 and len(spec.target_shape or ()) >= 2
            else "model=mlp"
        )
        raise ConfigError(
            f"model cnn1d takes (channels, length) inputs, but the data has shape {spec.input_shape}; use {hint}"
        )
    in_channels, length = spec.input_shape
    return CNN1d(
        in_channels, length, spec.out_features, channels, depth, kernel_size, activation, dropout, out_shape(spec)
    )
