"""Residual learning: the network predicts the correction to its input, not the field itself.

Where targets are the inputs' own variables on the same grid (bias correction, same-grid
downscaling, forecasting with `data.lead`), the target is mostly the input: a network that
must reproduce 280 K from scratch wastes its capacity on what the identity already knows. The
wrapper adds the input back, moved from the inputs' standardized units to the targets' (their
statistics differ: model and observations have different means), and scales the network's
increment by a learned gate that starts at 0, so training starts exactly at the identity
baseline (ReZero, Bachlechner et al. 2020) and can only learn from there.

`model.residual=auto` (default) wraps exactly where the DataSpec names the input channel of each
target (`identity_channels`); `true` insists, `false` never wraps. It lives inside the model, so
checkpoints, `ember eval`, `ember predict` and every export add the input back too.
"""

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError

CHOICES = ("auto", "true", "false")


class Residual(nn.Module):
    def __init__(self, net: nn.Module, spec: DataSpec):
        super().__init__()
        self.net = net
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
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x.index_select(1, self.index) * self.scale + self.shift
        return base + self.gate * self.net(x).reshape(base.shape)


def wants_residual(setting, spec: DataSpec, name: str, generative: bool) -> bool:
    """Whether model `name` trains residually under `model.residual=setting` on this data."""
    setting = str(setting).lower()
    if setting not in CHOICES:
        raise ConfigError(f"model.residual={setting!r} must be one of {', '.join(CHOICES)}")
    fits = spec.task == "regression" and spec.identity_channels is not None and not generative
    if setting == "true" and not fits:
        raise ConfigError(f"model.residual=true needs targets that are the inputs' own variables on the same grid, but the inputs are {_describe(spec.input_names, spec.input_shape)} and the targets {_describe(spec.target_names, spec.target_shape)}; set model.residual=false or auto")
    return fits and setting != "false"


def _describe(names, shape) -> str:
    return f"{', '.join(names)} on {tuple(shape[1:])}" if names else f"of shape {tuple(shape)}"
