"""The tutorials' image classifiers, layer for layer, with the flatten size computed from the data.

The tutorials hard-code the size of the tensor that reaches the first linear layer (9216 for
28x28 MNIST, 256*4*4 for 32x32 CIFAR, 16*8*8 in the SimpleCNN recap, which matches no input
size at all). That number is the most common bug when the data changes, so here it is derived
from DataSpec.input_shape; at the tutorials' own input sizes the layers are exactly theirs.
"""

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.models import register_model
from ember.models.layers import flat_out_features, out_shape, spatial_input
from ember.ranges import AT_LEAST_1, FRACTION


def _image(spec: DataSpec, model: str, min_size: int) -> tuple[int, int, int]:
    channels, (h, w) = spatial_input(spec, model, (2,), "use an image source (digits, mnist, cifar10) or model=mlp")
    if min(h, w) < min_size:
        raise ConfigError(
            f"model {model} needs images of at least {min_size}x{min_size}, but the data is {h}x{w}; "
            "use model=resnet or model=mlp"
        )
    return channels, h, w


class MnistNet(nn.Module):
    """PyTorch's MNIST example `Net`: two convolutions, max pooling, dropout, two linear layers."""

    # The tutorial ends in log_softmax and trains with F.nll_loss; the trainer reads this.
    default_loss = "nll"

    def __init__(self, in_channels: int, h: int, w: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout2d(0.25)
        # The tutorial applies Dropout2d to the (N, 128) activations too; PyTorch deprecates
        # channel dropout on 2-D input and treats it as element dropout, which nn.Dropout is.
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128)  # 9216 for 28x28
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


@register_model("mnist_net", example="digits")
def mnist_net(spec: DataSpec) -> nn.Module:
    """The MNIST tutorial's Net: conv 32/64, dropout, fc 9216-128-10, log_softmax."""
    if spec.task != "classification":
        raise ConfigError("model mnist_net is a classifier (it ends in log_softmax); use it with classification data")
    c, h, w = _image(spec, "mnist_net", 6)
    return MnistNet(c, h, w, spec.num_classes)


class SimpleCNN(nn.Module):
    """The CIFAR-10 recap's SimpleCNN: one 3x3 convolution with 16 channels, ReLU, one linear layer."""

    def __init__(self, in_channels: int, h: int, w: int, out_features: int, out_shape: tuple):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3)
        # The recap's x.view(-1, 16*8*8) silently regroups a 32x32 batch into the wrong number of
        # rows; the real size after the unpadded 3x3 convolution is 16 * (h-2) * (w-2).
        self.fc = nn.Linear(16 * (h - 2) * (w - 2), out_features)
        self.out_shape = out_shape

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = x.flatten(1)
        return self.fc(x).reshape(x.shape[0], *self.out_shape)


@register_model("simple_cnn", example="image")
def simple_cnn(spec: DataSpec) -> nn.Module:
    """The CIFAR-10 recap's SimpleCNN: Conv2d(3, 16, 3), ReLU, Linear."""
    c, h, w = _image(spec, "simple_cnn", 3)
    return SimpleCNN(c, h, w, flat_out_features(spec), out_shape(spec))


class VGG3Layer(nn.Module):
    """The guide's VGG3Layer: three conv-BN-ReLU-maxpool blocks (64, 128, 256), then 4096-4096-classes."""

    def __init__(
        self,
        in_channels: int,
        h: int,
        w: int,
        out_features: int,
        out_shape: tuple,
        width: int,
        hidden: int,
        dropout: float,
    ):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(c3 * (h // 8) * (w // 8), hidden),  # 256 * 4 * 4 for 32x32
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
        )
        self.out_shape = out_shape

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x).reshape(x.shape[0], *self.out_shape)


@register_model("vgg3", example="image")
def vgg3(
    spec: DataSpec,
    *,
    width: Annotated[int, AT_LEAST_1] = 64,
    hidden: Annotated[int, AT_LEAST_1] = 4096,
    dropout: Annotated[float, FRACTION] = 0.5,
) -> nn.Module:
    """The guide's VGG3Layer: 3 conv-BN-ReLU-pool blocks, 4096-4096 classifier."""
    c, h, w = _image(spec, "vgg3", 8)
    return VGG3Layer(c, h, w, flat_out_features(spec), out_shape(spec), width, hidden, dropout)
