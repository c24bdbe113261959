"""Small pieces the model families share: activations, normalizations, and the DataSpec arithmetic
that sizes a model's input and output so users never compute a flatten size by hand."""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.ranges import check_choice

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "leaky_relu": nn.LeakyReLU}
NORMS = ("batch", "group", "layer", "none")


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; choose one of: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def running_batch_norm(modules: list[nn.Module]):
    """Batch-norm layers normalize with their running statistics inside: a batch of one sample
    has no batch statistics (torch raises on it), and the last batch of an epoch can be one."""
    training = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, was in zip(modules, training):
            m.train(was)


def norm(kind: str, channels: int, dims: int) -> nn.Module:
    """A normalization over (N, C, *spatial) with `dims` spatial dimensions (0 for (N, C))."""
    check_choice("model.norm", kind, NORMS)
    if kind == "batch":
        return (nn.BatchNorm1d, nn.BatchNorm1d, nn.BatchNorm2d)[dims](channels)
    if kind == "group":
        # 8 groups where the channels divide, the usual choice for small batches (U-Nets, diffusion).
        groups = math.gcd(8, channels)
        return nn.GroupNorm(groups, channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # normalizes over channels and space, per sample
    return nn.Identity()


class PointwiseConv(nn.Module):
    """A 1x1 convolution (the FNO's lifting, skips and projection) done as one batched matrix
    product over the grid's points: the same numbers, but oneDNN's 1x1 convolutions are slow on
    CPU (twice as long forward and backward on Darcy's 85x85 grid), and a training step of the
    paper's FNO took 0.79x the time on Darcy (s=85) and 0.73x on Burgers (s=1024), batch 20, two
    threads (benchmarks/fno_step.py). Parameters, their names and initialization are nn.Conv's,
    so checkpoints made with convolutions load, and ember.models.residual finds the output layer."""

    def __init__(self, c_in: int, c_out: int, dims: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty([c_out, c_in] + [1] * dims))
        self.bias = nn.Parameter(torch.empty(c_out))
        # nn.Conv's initialization (Kaiming uniform with a=sqrt(5), the bias within +-1/sqrt(fan_in)).
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        bound = 1 / c_in**0.5
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        w = self.weight.flatten(1).expand(n, -1, -1)
        y = torch.baddbmm(self.bias.reshape(1, -1, 1), w, x.flatten(2))
        return y.reshape([n, self.bias.shape[0]] + list(x.shape[2:]))


def conv(dims: int) -> type:
    return {1: nn.Conv1d, 2: nn.Conv2d}[dims]


def out_shape(spec: DataSpec) -> tuple[int, ...]:
    """One sample's output: (num_classes,) for classification, the target's shape for regression."""
    return (int(spec.num_classes),) if spec.task == "classification" else tuple(spec.target_shape)


def flat_out_features(spec: DataSpec) -> int:
    return math.prod(out_shape(spec))


def spatial_input(spec: DataSpec, model: str, dims: tuple[int, ...], hint: str) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial size) of a (C, *spatial) input with len(spatial) in `dims`, or a ConfigError."""
    shape = spec.input_shape
    if len(shape) - 1 not in dims:
        want = " or ".join({1: "(channels, length)", 2: "(channels, height, width)"}[d] for d in dims)
        raise ConfigError(f"model {model} takes {want} inputs, but the data has shape {shape}; {hint}")
    return shape[0], tuple(shape[1:])


def dense_out_channels(spec: DataSpec, model: str, spatial: tuple[int, ...]) -> int:
    """Output channels of a model that predicts a field on its input's grid.

    Regression targets (*spatial) or (k, *spatial); classification targets (*spatial) are
    segmentation maps, predicted as (num_classes, *spatial) logits.
    """
    target = tuple(spec.target_shape)
    if spec.task == "classification":
        if target == spatial:
            return int(spec.num_classes)
    elif target == spatial:
        return 1
    elif len(target) == len(spatial) + 1 and target[1:] == spatial:
        return target[0]
    raise ConfigError(
        f"model {model} predicts a field on the input grid {spatial}, but the data's target has shape "
        f"{target or '()'} ({spec.task}); use a model with a pooled head (resnet, vit, cnn1d, mlp) "
        "for per-sample targets"
    )


def dense_out_shape(spec: DataSpec, spatial: tuple[int, ...]) -> tuple[int, ...]:
    if spec.task == "classification":
        return (int(spec.num_classes), *spatial)
    return tuple(spec.target_shape)


def pad_amounts(size: tuple[int, ...], multiple: int) -> list[int]:
    """F.pad amounts (last dimension first) that round every spatial size up to `multiple`."""
    pads: list[int] = []
    for s in reversed(size):
        pads += [0, (-s) % multiple]
    return pads


def pad(x: torch.Tensor, amounts: list[int]) -> torch.Tensor:
    # Shapes are fixed when the model is built, so the pad amounts are plain ints (export-friendly).
    return F.pad(x, amounts) if any(amounts) else x


def crop(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    # List[int], not tuple: TorchScript compiles this function too.
    if len(size) == 1:
        return x[..., : size[0]]
    return x[..., : size[0], : size[1]]
