"""Residual learning: the network predicts the correction to its input, not the field itself.

Where targets are the inputs' own variables on the same grid (bias correction, same-grid
downscaling, forecasting with `data.lead`), the target is mostly the input: a network that
must reproduce 280 K from scratch wastes its capacity on what the identity already knows. The
wrapper adds the input back, moved from the inputs' standardized units to the targets' (their
statistics differ: model and observations have different means), and zeroes the network's output
layer, so training starts exactly at the identity baseline and learns the correction at the
full learning rate from the first step (as zero-initialized output layers do in diffusion U-Nets
and ControlNet). A learned scalar gate starting at 0 (ReZero) also starts at the identity, but
scales every update of the increment by its own small value: 40 steps moved a U-Net bias
corrector barely off the identity.

`model.residual=auto` (default) wraps exactly where the DataSpec names the input channel of each
target (`identity_channels`); `true` insists, `false` never wraps. It lives inside the model, so
checkpoints, `ember eval`, `ember predict` and every export add the input back too.
"""

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models.layers import PointwiseConv

CHOICES = ("auto", "true", "false")


class Residual(nn.Module):
    def __init__(self, net: nn.Module, spec: DataSpec, zero_init: bool = True):
        super().__init__()
        self.net = net
        if zero_init:
            zero_output_layer(net)
        idx = list(spec.identity_channels)
        ndim = len(spec.target_shape)
        in_mean = torch.tensor([spec.mean[i] for i in idx] if spec.mean else [0.0] * len(idx), dtype=torch.float64)
        in_std = torch.tensor([spec.std[i] for i in idx] if spec.std else [1.0] * len(idx), dtype=torch.float64)
        t_mean = torch.tensor(spec.target_mean or [0.0] * len(idx), dtype=torch.float64)
        t_std = torch.tensor(spec.target_std or [1.0] * len(idx), dtype=torch.float64)
        shape = (-1,) + (1,) * (ndim - 1)
        # target_standardized = input_standardized * scale + shift, per target channel.
        self.register_buffer("index", torch.tensor(idx, dtype=torch.long))
        self.register_buffer("scale", (in_std / t_std).float().reshape(shape))
        self.register_buffer("shift", ((in_mean - t_mean) / t_std).float().reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x.index_select(1, self.index) * self.scale + self.shift
        return base + self.net(x).reshape(base.shape)


def zero_output_layer(net: nn.Module) -> None:
    """Zero the weights and bias of the last Linear or convolution of `net`, its output layer in
    every model of the registry (tests/models/test_residual.py checks each one starts at 0)."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, PointwiseConv))]
    if not layers:
        raise ConfigError(
            "model.residual needs a model whose output layer is a Linear or a convolution; "
            f"{type(net).__name__} has none; set model.residual=false"
        )
    with torch.no_grad():
        layers[-1].weight.zero_()
        if layers[-1].bias is not None:
            layers[-1].bias.zero_()


def wants_residual(setting, spec: DataSpec, name: str, generative: bool) -> bool:
    """Whether model `name` trains residually under `model.residual=setting` on this data."""
    setting = str(setting).lower()
    if setting not in CHOICES:
        raise ConfigError(f"model.residual={setting!r} must be one of {', '.join(CHOICES)}")
    fits = spec.task == "regression" and spec.identity_channels is not None and not generative
    if setting == "true" and not fits:
        raise ConfigError(
            "model.residual=true needs targets that are the inputs' own variables on the same grid, "
            f"but the inputs are {_describe(spec.input_names, spec.input_shape)} and the targets "
            f"{_describe(spec.target_names, spec.target_shape)}; set model.residual=false or auto"
        )
    return fits and setting != "false"


def _describe(names, shape) -> str:
    return f"{', '.join(names)} on {tuple(shape[1:])}" if names else f"of shape {tuple(shape)}"
