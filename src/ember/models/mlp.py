"""Fully connected models: a linear baseline, a configurable MLP and the tutorials' exact small
networks (the ANN and the cubic polynomial)."""

import math
from typing import Annotated

import torch
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import ACTIVATIONS, activation, out_shape  # noqa: F401 (activation: re-exported)
from ember.ranges import AT_LEAST_1, FRACTION, NON_NEGATIVE, check_choice


class Linear(nn.Module):
    """One linear layer on the flattened input: logistic regression under the cross-entropy loss."""

    def __init__(self, in_features: int, out_shape: tuple):
        super().__init__()
        self.linear = nn.Linear(in_features, math.prod(out_shape))
        self.out_shape = out_shape

    def forward(self, x):
        return self.linear(x.flatten(1)).reshape(x.shape[0], *self.out_shape)


@register_model("linear")
def linear(spec: DataSpec) -> nn.Module:
    """Linear model on the flattened input (logistic regression for classes)."""
    return Linear(spec.in_features, out_shape(spec))


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int,
        depth: int,
        act: str,
        dropout: float,
        out_shape: tuple,
        norm: str = "none",
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers.append(nn.Linear(in_features if i == 0 else width, width))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(width))
            elif norm == "layer":
                layers.append(nn.LayerNorm(width))
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(width if depth else in_features, out_features))
        self.net = nn.Sequential(*layers)
        self.out_shape = out_shape

    def forward(self, x):
        return self.net(x).reshape(x.shape[0], *self.out_shape)


@register_model("mlp")
def mlp(
    spec: DataSpec,
    *,
    width: Annotated[int, AT_LEAST_1] = 256,
    depth: Annotated[int, NON_NEGATIVE] = 2,
    activation: str = "relu",
    dropout: Annotated[float, FRACTION] = 0.0,
    norm: str = "none",
) -> nn.Module:
    """Multi-layer perceptron on the flattened input."""
    check_choice("model.norm", norm, ("none", "batch", "layer"))
    return MLP(spec.in_features, spec.out_features, width, depth, activation, dropout, out_shape(spec), norm)


class ANN(nn.Module):
    """The tutorial's network: Linear(1, 3), ReLU, Linear(3, 1)."""

    def __init__(self, in_features: int, hidden: int, out_shape: tuple):
        super().__init__()
        self.hidden_layer = nn.Linear(in_features, hidden)
        self.output_layer = nn.Linear(hidden, math.prod(out_shape))
        self.out_shape = out_shape

    def forward(self, x):
        x = torch.relu(self.hidden_layer(x.flatten(1)))
        return self.output_layer(x).reshape(x.shape[0], *self.out_shape)


@register_model("ann", example="scalar")
def ann(spec: DataSpec, *, hidden: Annotated[int, AT_LEAST_1] = 3) -> nn.Module:
    """The tutorials' ANN: Linear(in, 3) -> ReLU -> Linear(3, out)."""
    return ANN(spec.in_features, hidden, out_shape(spec))


class Poly3(nn.Module):
    """y = a + b x + c x^2 + d x^3: a linear layer on (x, x^2, x^3), as in the tutorial."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.register_buffer("powers", torch.tensor([1.0, 2.0, 3.0]), persistent=False)

    def forward(self, x):
        return self.linear(x.reshape(-1, 1).pow(self.powers))

    def describe(self) -> str:
        a = self.linear.bias.item()
        b, c, d = self.linear.weight[0].tolist()
        terms = "".join(f" {'-' if v < 0 else '+'} {abs(v):.6g} {p}" for v, p in ((b, "x"), (c, "x^2"), (d, "x^3")))
        return f"Result: y = {a:.6g}{terms}"


@register_model("poly3", example="scalar")
def poly3(spec: DataSpec) -> nn.Module:
    """The tutorial's cubic polynomial fit of sin(x), as one linear layer."""
    if spec.input_shape != (1,):
        raise ConfigError(
            f"model poly3 takes one scalar input per sample, but the data has shape {spec.input_shape}; "
            "use data=sine or model=mlp"
        )
    return Poly3()
