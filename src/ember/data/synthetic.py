"""Sources generated on this machine: MNIST-1D and the tutorials' toy regressions. No downloads."""

import math
from typing import Annotated

import torch

from ember.data import Splits, register_data
from ember.data.cache import cached_npz
from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.errors import ConfigError
from ember.ranges import AT_LEAST_1, NON_NEGATIVE, OPEN_UNIT, POSITIVE, SEED


@register_data("mnist1d")
def mnist1d(
    cfg,
    *,
    num_samples: Annotated[int, AT_LEAST_1] = 5000,
    train_split: Annotated[float, OPEN_UNIT] = 0.8,
    seed: Annotated[int, SEED] = 42,
) -> Splits:
    """MNIST-1D (Greydanus 2020): 10 classes of 1-D signals, length 40, generated locally."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args(as_dict=True)
    args.update(num_samples=num_samples, train_split=train_split, seed=seed)
    keys = ("x", "y", "x_test", "y_test")

    def make():
        raw = make_dataset(_ObjectView(args))
        return {k: raw[k] for k in keys}

    # Generation takes seconds and is deterministic in its arguments, so it is cached; a damaged
    # cache file is made again, and only then does the run output mention the cache.
    d, note = cached_npz("mnist1d", args, make, keys)

    def split(x, y):
        return TensorData(torch.as_tensor(x, dtype=torch.float32).unsqueeze(1), torch.as_tensor(y, dtype=torch.long))

    spec = DataSpec(input_shape=(1, 40), task="classification", num_classes=10, class_names=[str(i) for i in range(10)])
    return Splits(
        train=split(d["x"], d["y"]),
        test=split(d["x_test"], d["y_test"]),
        spec=spec,
        notes=[note] if note.startswith("warning") else [],
    )


class _ObjectView:
    def __init__(self, d: dict):
        self.__dict__ = d


@register_data("linear", normalize=False, normalize_target=False, val_fraction=0.0)
def linear(
    cfg,
    *,
    num_samples: Annotated[int, AT_LEAST_1] = 100,
    slope: float = 3.0,
    intercept: float = 2.0,
    noise: Annotated[float, NON_NEGATIVE] = 0.1,
    seed: Annotated[int, SEED] = 0,
) -> Splits:
    """y = slope * x + intercept + noise * N(0, 1), x ~ N(0, 1): the tutorial's linear regression."""
    g = torch.Generator().manual_seed(seed)

    def draw(n):
        x = torch.randn(n, 1, generator=g)
        return TensorData(x, slope * x + intercept + torch.randn(n, 1, generator=g) * noise)

    spec = DataSpec(input_shape=(1,), task="regression", target_shape=(1,))
    return Splits(train=draw(num_samples), test=draw(num_samples), spec=spec)


@register_data("sine", normalize=False, normalize_target=False, val_fraction=0.0)
def sine(cfg, *, num_samples: Annotated[int, AT_LEAST_1] = 2000, seed: Annotated[int, SEED] = 0) -> Splits:
    """y = sin(x) on [-pi, pi]: the tutorial's polynomial fit. Train on a grid, test on random points."""
    x = torch.linspace(-math.pi, math.pi, num_samples).unsqueeze(1)
    g = torch.Generator().manual_seed(seed)
    x_test = (torch.rand(num_samples // 4, 1, generator=g) * 2 - 1) * math.pi
    spec = DataSpec(input_shape=(1,), task="regression", target_shape=(1,))
    return Splits(train=TensorData(x, torch.sin(x)), test=TensorData(x_test, torch.sin(x_test)), spec=spec)


@register_data("spirals")
def spirals(
    cfg,
    *,
    num_samples: Annotated[int, AT_LEAST_1] = 1500,
    classes: Annotated[int, AT_LEAST_1] = 3,
    noise: Annotated[float, NON_NEGATIVE] = 0.2,
    turns: Annotated[float, POSITIVE] = 0.65,
    seed: Annotated[int, SEED] = 0,
) -> Splits:
    """Interleaved 2-D spirals, one arm per class (CS231n's toy set): not linearly separable."""
    if classes < 2 or num_samples < classes:
        raise ConfigError(
            "data=spirals needs data.classes >= 2 and data.num_samples >= data.classes, "
            f"got {classes} and {num_samples}"
        )
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_samples) % classes
    r = torch.rand(num_samples, generator=g)
    # Each arm winds `turns` times around the origin, rotated by 2*pi/classes from the last.
    theta = 2 * math.pi * (turns * r + y / classes) + noise * torch.randn(num_samples, generator=g)
    x = torch.stack([r * torch.sin(theta), r * torch.cos(theta)], dim=1)
    spec = DataSpec(
        input_shape=(2,), task="classification", num_classes=classes, class_names=[str(i) for i in range(classes)]
    )
    return Splits(train=TensorData(x, y), spec=spec)
