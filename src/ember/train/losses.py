"""Loss functions by name; `auto` picks by task (and by model, for neural operators).

Every regression loss leaves out non-finite target elements (contract C1: a NaN target is a
missing value, land in a sea-surface field or a gap in observations): sums and counts over the
finite elements only, with no host sync (a mask multiplies, nothing branches on it). Where every
target is finite each equals torch's own loss.
"""

import math

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError

LOSSES = ("auto", "cross_entropy", "nll", "mse", "l1", "mae", "huber", "rel_l2", "h1")


def has_vector_target(spec: DataSpec) -> bool:
    """A regression whose sample's target has several values: a field or a vector."""
    return spec.task == "regression" and math.prod(spec.target_shape) > 1


def resolve_loss(name: str, spec: DataSpec, model: nn.Module) -> str:
    """The loss `trainer.loss=name` means for this data and model."""
    if name != "auto":
        return name
    if spec.task == "classification":
        # Models that end in log_softmax (the tutorials' MNIST Net) declare it.
        return getattr(model, "default_loss", "cross_entropy")
    # Neural operators (fno, afno) declare `operator = True`; modules() also finds them inside
    # the residual wrapper. Their papers train and report the relative L2 error on fields of one
    # quantity. With several variables the norm would add kelvin to mm/day, so MSE on the
    # standardized variables stays (FourCastNet's loss).
    field = len(spec.target_shape) >= 2 and spec.target_channels == 1
    if field and any(getattr(m, "operator", False) for m in model.modules()):
        return "rel_l2"
    return "mse"


class RelativeL2Loss(nn.Module):
    """Mean over samples of ||pred - true|| / ||true||, each sample's norm over all its values.

    The norms are taken in physical units: the model's outputs and the targets are standardized
    per channel (data.normalize_target), and the relative error of standardized values weighs a
    sample by its distance from the train mean rather than from 0 (a Burgers solution of mean
    0.5 and small swing would count as large). The FNO papers' loss is on the data as it is, so
    the values are multiplied back with the spec's target statistics first, as the relative_l2
    metric does; the loss then equals that metric on a batch. With several target channels the
    norm pools them in their own units, meant for components of one quantity (a velocity).
    """

    def __init__(self, spec: DataSpec):
        super().__init__()
        c = spec.target_channels
        shape = (1, c) + (1,) * (len(spec.target_shape) - 1)
        mean = torch.tensor(spec.target_mean or [0.0] * c).reshape(shape)
        std = torch.tensor(spec.target_std or [1.0] * c).reshape(shape)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def norms(self, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Each sample's norm: the square root of the sum of its squared values (0 where missing)."""
        return values.flatten(1).norm(dim=1)

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = output.reshape(target.shape)
        valid = torch.isfinite(target)
        # Missing elements count as 0 in both norms, so they add nothing to either.
        target = torch.where(valid, target, 0.0)
        diff = self.norms(torch.where(valid, (output - target) * self.std, 0.0), valid)
        # A target that is all 0 in physical units has no relative error; the floor keeps it finite.
        norm = self.norms(torch.where(valid, target * self.std + self.mean, 0.0), valid).clamp_min(1e-12)
        return (diff / norm).mean()


class RelativeH1Loss(RelativeL2Loss):
    """The relative error in the H1 (Sobolev) norm, the neuraloperator library's H1Loss:
    ||e||_H1 = sqrt(||e||^2 + sum over axes of ||de/dx_i||^2) on the unit domain (grid spacing 1
    / size per axis), the same for the target, their ratio averaged over samples.

    Weighing the derivatives makes errors at sharp features (Burgers' shocks, Darcy's jumps of
    permeability) count more than RelativeL2Loss lets them. Derivatives are central differences
    (one-sided at the two ends of an axis, so periodic and bounded fields both work); a
    difference of the values needs no mean, so the target's mean only enters the denominator.
    """

    def norms(self, values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        squares = values.flatten(1).square().sum(dim=1)
        # A batch is (N, channels, *grid): the grid's axes start at 2.
        for axis in range(2, values.dim()):
            derivative = torch.gradient(values, spacing=1 / values.shape[axis], dim=axis)[0]
            # A difference reaching into a missing element (a coast) is no derivative of the field.
            derivative = torch.where(_stencil_valid(valid, axis), derivative, 0.0)
            squares = squares + derivative.flatten(1).square().sum(dim=1)
        return squares.sqrt()


def _stencil_valid(valid: torch.Tensor, axis: int) -> torch.Tensor:
    """Where torch.gradient's difference along `axis` uses valid elements only: the element and
    its two neighbours (one-sided at the ends, where the element itself is one of the two)."""
    n = valid.shape[axis]
    if n < 2:
        return valid
    before = torch.cat([valid.narrow(axis, 0, 1), valid.narrow(axis, 0, n - 1)], dim=axis)
    after = torch.cat([valid.narrow(axis, 1, n - 1), valid.narrow(axis, n - 1, 1)], dim=axis)
    return valid & before & after


def masked_mean(output: torch.Tensor, target: torch.Tensor, kind: str, delta: float = 1.0) -> torch.Tensor:
    """The mean of an elementwise loss (mse, l1, huber) over the finite target elements only."""
    if output.shape != target.shape and output.numel() == target.numel():
        output = output.reshape(target.shape)
    valid = torch.isfinite(target)
    diff = torch.where(valid, output - torch.where(valid, target, 0.0), 0.0)
    if kind == "mse":
        each = diff.square()
    elif kind == "huber":  # torch's HuberLoss
        each = torch.where(diff.abs() < delta, 0.5 * diff.square(), delta * (diff.abs() - 0.5 * delta))
    else:
        each = diff.abs()
    # Summed and divided by the count: the mean over the elements that have a value.
    return each.sum() / valid.sum().clamp_min(1).to(each.dtype)


# torch's losses, subclassed so that code asking for an MSELoss still finds one.
class MaskedMSELoss(nn.MSELoss):
    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_mean(output, target, "mse")


class MaskedL1Loss(nn.L1Loss):
    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_mean(output, target, "l1")


class MaskedHuberLoss(nn.HuberLoss):
    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_mean(output, target, "huber", self.delta)


def build_loss(name: str, spec: DataSpec, model: nn.Module, label_smoothing: float = 0.0) -> nn.Module:
    name = resolve_loss(name, spec, model)
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "rel_l2":
        if not has_vector_target(spec):
            what = "classification" if spec.task == "classification" else "a scalar target"
            raise ConfigError(
                f"trainer.loss=rel_l2 needs a field or vector regression target, not {what}; use trainer.loss=auto"
            )
        return RelativeL2Loss(spec)
    if name == "h1":
        if spec.task != "regression" or len(spec.target_shape) < 2:
            if spec.task == "classification":
                what, fix = "classification", "trainer.loss=auto"
            else:
                what, fix = f"a target of shape {tuple(spec.target_shape)}", "trainer.loss=rel_l2 or mse"
            raise ConfigError(
                "trainer.loss=h1 needs a field target (channels, *grid) to take derivatives along, "
                f"not {what}; use {fix}"
            )
        return RelativeH1Loss(spec)
    return {"nll": nn.NLLLoss, "mse": MaskedMSELoss, "l1": MaskedL1Loss, "mae": MaskedL1Loss, "huber": MaskedHuberLoss}[
        name
    ]()
