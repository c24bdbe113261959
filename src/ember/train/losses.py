"""Loss functions by name; `auto` picks by task (and by model, for neural operators)."""

import math

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError

LOSSES = ("auto", "cross_entropy", "nll", "mse", "l1", "mae", "huber", "rel_l2")


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

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        output = output.reshape(target.shape)
        diff = ((output - target) * self.std).flatten(1).norm(dim=1)
        # A target that is all 0 in physical units has no relative error; the floor keeps it finite.
        norm = (target * self.std + self.mean).flatten(1).norm(dim=1).clamp_min(1e-12)
        return (diff / norm).mean()


def build_loss(name: str, spec: DataSpec, model: nn.Module, label_smoothing: float = 0.0) -> nn.Module:
    name = resolve_loss(name, spec, model)
    if name == "cross_entropy":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    if name == "rel_l2":
        if not has_vector_target(spec):
            what = "classification" if spec.task == "classification" else "a scalar target"
            raise ConfigError(f"trainer.loss=rel_l2 needs a field or vector regression target, not {what}; use trainer.loss=auto")
        return RelativeL2Loss(spec)
    return {"nll": nn.NLLLoss, "mse": nn.MSELoss, "l1": nn.L1Loss, "mae": nn.L1Loss, "huber": nn.HuberLoss}[name]()
