"""The data a user hands to `ember.fit`: a Dataset or an (X, y) pair of tensors or arrays, and
the DataSpec inferred from its first sample."""

from typing import Any

import torch
from torch.utils.data import Dataset

from ember.data.loaders import TensorData
from ember.data.spec import DataSpec
from ember.errors import DataError


def as_data(data: Any, split: str) -> Dataset | TensorData | None:
    """`data` as ember trains on it: a Dataset as it is, an (X, y) pair as TensorData (float64 as
    float32); None stays None. `split` names it in errors."""
    if data is None or isinstance(data, (Dataset, TensorData)):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (torch.as_tensor(a) for a in data)
        if x.is_floating_point() and x.dtype == torch.float64:
            x = x.float()
        if y.dtype == torch.float64:
            y = y.float()
        try:
            return TensorData(x, y)
        except ValueError as e:
            raise DataError(f"{split} data: {e}") from None
    raise DataError(f"{split} data must be a Dataset or an (X, y) pair of tensors or arrays, got {type(data).__name__}")


def infer_spec(train: Any) -> DataSpec:
    """The task and shapes of `train`: classification where a sample's target is one integer."""
    data = as_data(train, "train")
    if len(data) == 0:
        raise DataError("the train data is empty")
    x, y = data[0]
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    if x.numel() == 0:  # a model would train on nothing and report the mean as its skill
        raise DataError(
            f"the train inputs hold no value (shape {tuple(x.shape)} per sample); give X at least one feature"
        )
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and y.ndim == 0:
        labels = data.y if isinstance(data, TensorData) else torch.tensor([int(data[i][1]) for i in range(len(data))])
        return DataSpec(input_shape=tuple(x.shape), task="classification", num_classes=int(labels.max()) + 1)
    return DataSpec(input_shape=tuple(x.shape), task="regression", target_shape=tuple(y.shape))
