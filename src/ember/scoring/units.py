"""Units in, units out: a model trains on standardized data, and everything a user sees or ships
is in the data's own units. `Normalized` puts a trained model between the run's standardizations
(what export ships, what rollout and bench run); `raw_inputs` and `physical_targets` map a
standardized batch back. The trainer's baselines, the report, rollout and export all use these.
"""

import torch
from torch import nn

from ember.data.spec import DataSpec


class Normalized(nn.Module):
    """The trained model between the run's standardizations, so it takes raw inputs and returns
    targets in physical units.

    `(x - mean) / std` per input channel (dimension 1 of a batch), exactly what `build_data`
    applied to the training data, and `out * target_std + target_mean` per target channel where
    the targets were standardized (data.normalize_target); with no statistics, the identity.
    """

    def __init__(self, model: nn.Module, spec: DataSpec):
        super().__init__()
        self.model = model
        self.register_buffer("mean", _per_channel(spec.mean, 0.0, len(spec.input_shape)))
        self.register_buffer("std", _per_channel(spec.std, 1.0, len(spec.input_shape)))
        # Outputs keep the model's own shape: a scalar target's (N, 1) stays (N, 1).
        self.scaled = spec.task == "regression" and spec.target_mean is not None
        self.register_buffer("target_mean", _per_channel(spec.target_mean, 0.0, len(spec.target_shape)))
        self.register_buffer("target_std", _per_channel(spec.target_std, 1.0, len(spec.target_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model((x - self.mean) / self.std)
        if self.scaled:
            out = out * self.target_std + self.target_mean
        return out


def _per_channel(values: list[float] | None, default: float, sample_ndim: int) -> torch.Tensor:
    """Per-channel statistics shaped to broadcast over one sample (channels first); a sample of
    scalars or a flat vector broadcasts over its last dimension."""
    t = torch.tensor(values if values is not None else [default], dtype=torch.float32)
    return t.reshape((-1,) + (1,) * (max(1, sample_ndim) - 1))


def raw_inputs(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Standardized inputs back in the units of the data files (what an exported model takes)."""
    if spec.mean is None or spec.std is None:
        return x
    shape = (-1,) + (1,) * (x.ndim - 2)
    std, mean = (torch.tensor(v, dtype=x.dtype, device=x.device).reshape(shape) for v in (spec.std, spec.mean))
    return x * std + mean


def physical_targets(y: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Standardized regression targets (or outputs) of a batch back in the data's units
    (data.normalize_target): what `Normalized` does inside an exported graph."""
    if spec.target_mean is None or spec.target_std is None:
        return y
    shape = (1, -1) + (1,) * (y.ndim - 2) if y.ndim > 1 else (-1,)
    std, mean = (
        torch.tensor(v, dtype=y.dtype, device=y.device).reshape(shape) for v in (spec.target_std, spec.target_mean)
    )
    return y * std + mean
